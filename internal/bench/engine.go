//go:build linux

package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/pager"
)

// Engine is how the pager under test is set up: the one place where the
// benchmark reaches the pager's engine options.
type Engine struct {
	// Shared serves the run's userfaultfd on an engine that also serves
	// another (idle) one, as a daemon serving many VMs does: its readers
	// then wait in epoll. Otherwise the pager starts an engine of its own
	// for each run, whose readers block in read(2) on the one
	// userfaultfd (unless Events).
	Shared bool
	// Events opens the userfaultfd with FeatureEventRemove, as Firecracker
	// does: readers then order their reads against installs and wait in
	// epoll.
	Events bool
	// CPUs the engine runs on, a reader and a worker pinned to each (nil:
	// every CPU the process may run on).
	CPUs []int
	// Spin is the engine's pager.EngineConfig.Spin (0: pager.DefaultSpin;
	// negative: readers never spin).
	Spin time.Duration
}

// ParseEngine parses the name String gives an engine's kind: own or
// shared.
func ParseEngine(s string) (shared bool, err error) {
	switch s {
	case "own":
		return false, nil
	case "shared":
		return true, nil
	}
	return false, fmt.Errorf("--engine %q: want own or shared", s)
}

// String names the engine as the report shows it.
func (e Engine) String() string {
	var parts []string
	if e.Shared {
		parts = append(parts, "shared engine")
	} else {
		parts = append(parts, "own engine")
	}
	if e.Events {
		parts = append(parts, "events")
	}
	if e.CPUs != nil {
		parts = append(parts, fmt.Sprintf("CPUs %v", e.CPUs))
	}
	switch {
	case e.Spin < 0:
		parts = append(parts, "no spin")
	case e.Spin > 0:
		parts = append(parts, "spin "+e.Spin.String())
	}
	return strings.Join(parts, ", ")
}

// validate reports an option out of range, named as `uffd bench` flags
// name it.
func (e Engine) validate() error {
	if e.CPUs == nil {
		return nil
	}
	eng, err := pager.NewEngine(e.config())
	if err != nil {
		return fmt.Errorf("--cpus: %w", err)
	}
	return eng.Close()
}

// config is the engine's configuration.
func (e Engine) config() pager.EngineConfig {
	return pager.EngineConfig{CPUs: e.CPUs, Spin: e.Spin}
}

// handlers is the number of fault-serving threads the report counts: the
// engine's readers.
func (e Engine) handlers() int {
	if e.CPUs != nil {
		return len(e.CPUs)
	}
	return AllowedCPUs()
}

// features are the userfaultfd features a run's faulting side enables.
func (e Engine) features() uffd.Feature {
	if e.Events {
		return uffd.FeatureEventRemove
	}
	return 0
}

// engineRun is what a run's pager shares with others: the shared engine
// and the idle pager that keeps it in epoll, or nothing.
type engineRun struct {
	eng  *pager.Engine
	stop func()
}

// start makes the engine state for a benchmark's runs.
func (e Engine) start() (*engineRun, error) {
	if !e.Shared {
		if e.CPUs == nil && e.Spin == 0 {
			return &engineRun{}, nil
		}
		eng, err := pager.NewEngine(e.config())
		if err != nil {
			return nil, err
		}
		return &engineRun{eng: eng, stop: func() { eng.Close() }}, nil
	}
	eng, err := pager.NewEngine(e.config())
	if err != nil {
		return nil, err
	}
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		eng.Close()
		return nil, err
	}
	p, err := pager.New(u, pager.Config{Engine: eng})
	if err != nil {
		u.Close()
		eng.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	<-p.Serving()
	return &engineRun{eng: eng, stop: func() {
		cancel()
		<-done
		u.Close()
		eng.Close()
	}}, nil
}

func (r *engineRun) close() {
	if r != nil && r.stop != nil {
		r.stop()
	}
}

// pagerConfig is the pager's configuration for a run with prefetch pf.
func (r *engineRun) pagerConfig(pf pager.Prefetch) pager.Config {
	return pager.Config{Prefetch: pf, Engine: r.eng}
}
