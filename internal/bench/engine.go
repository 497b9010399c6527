//go:build linux

package bench

import (
	"fmt"

	"github.com/gouffd/uffd/pager"
)

// Engine is how the pager under test is set up: the one place where the
// benchmark reaches the pager's engine options. Everything else in the
// package is the workload and the references, and stays as it is when the
// pager's engine options change.
type Engine struct {
	// Workers is the pager's Config.Workers (0: its default).
	Workers int
	// Reader is the pager's Config.Reader.
	Reader pager.Reader
	// SpinReads is the pager's Config.SpinReads (0: its default;
	// negative: never spin).
	SpinReads int
	// Isolated is the pager's Config.Isolated.
	Isolated bool
}

// String names the engine as the report shows it.
func (e Engine) String() string {
	if e.Isolated {
		return "isolated"
	}
	s := fmt.Sprintf("%v reader", e.Reader)
	if e.Workers > 1 {
		s += fmt.Sprintf(", %d workers", e.Workers)
	}
	return s
}

// validate reports an option out of range, named as `uffd bench` flags
// name it.
func (e Engine) validate() error {
	switch {
	case e.Workers < 0 || e.Workers > MaxThreads:
		return fmt.Errorf("--workers %d: want 1 to %d", e.Workers, MaxThreads)
	case e.Reader != pager.ReaderPoller && e.Reader != pager.ReaderThread:
		return fmt.Errorf("reader %v: want %v or %v", e.Reader, pager.ReaderPoller, pager.ReaderThread)
	}
	return nil
}

// handlers is the number of fault-serving threads the report counts.
func (e Engine) handlers() int {
	if e.Isolated {
		return 1
	}
	return max(1, e.Workers)
}

// pagerConfig is the pager's configuration for a run with prefetch pf.
func (e Engine) pagerConfig(pf pager.Prefetch) pager.Config {
	return pager.Config{Prefetch: pf, Workers: e.Workers, Reader: e.Reader, SpinReads: e.SpinReads, Isolated: e.Isolated}
}

// ParseReader parses the name of a pager.Reader as its String method
// prints it.
func ParseReader(s string) (pager.Reader, error) {
	for _, r := range []pager.Reader{pager.ReaderPoller, pager.ReaderThread} {
		if r.String() == s {
			return r, nil
		}
	}
	return 0, fmt.Errorf("reader %q: want %v or %v", s, pager.ReaderPoller, pager.ReaderThread)
}
