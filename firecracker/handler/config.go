package handler

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gouffd/uffd/pager"
)

// Mode is how a VM's memory is brought in.
type Mode int

const (
	// OnDemand serves each fault when it comes (with Config.Prefetch).
	OnDemand Mode = iota
	// Prefault populates all of the VM's accessible memory in the
	// background, in address order, while its faults are served as they
	// come; memory the VMM maps PROT_NONE (unplugged hotplug memory) is
	// skipped, and served on demand once plugged.
	Prefault
	// RecordReplay prefetches the pages a VM restored from this snapshot
	// touched before, in the order it touched them, when a trace of the
	// snapshot exists (Config.Trace); otherwise it serves on demand and
	// records the order of the VM's faults into the trace.
	RecordReplay
)

var modeNames = []string{"on-demand", "prefault", "record-replay"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses a Mode's name as String prints it.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("handler: unknown mode %q (want one of %s)", s, strings.Join(modeNames, ", "))
}

// Config holds a Server's options. Memory is required; for every other
// field the zero value means the default, and a negative value is an
// error.
type Config struct {
	// Memory is the snapshot's memory, shared by every VM: the memory file
	// mapped once (pager.OpenFile), or any pager.Source of its contents.
	// It must not change while the server runs.
	Memory pager.Source
	// Mode is how memory is brought in.
	Mode Mode
	// Trace is the trace file of RecordReplay: required with that mode,
	// an error with any other. New checks that its directory is writable.
	Trace string
	// RecordFor bounds how long after a restore its faults are recorded;
	// 0 means DefaultRecordFor. The VM's exit ends the recording sooner.
	// RecordReplay only.
	RecordFor time.Duration
	// Prefetch configures each VM's pager.
	Prefetch pager.Prefetch
	// Engine serves every VM's faults: one engine, with a reader and a
	// worker pinned to each of its CPUs, however many VMs. Nil: New starts
	// one on every CPU the process may use, stopped by Shutdown.
	Engine *pager.Engine
	// Logger receives the server's structured logs (slog.Default() when
	// nil). Durations are logged as time.Duration values: NewLogger's
	// JSON handler writes them as seconds.
	Logger *slog.Logger
	// HandshakeTimeout bounds the wait for a connection's message; 0
	// means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxMessage bounds a handshake message in bytes; 0 means
	// firecracker.DefaultMaxMessage.
	MaxMessage int
	// MaxVMs bounds the VMs served at once (more are refused); 0 means
	// DefaultMaxVMs.
	MaxVMs int
	// MaxHandshakes bounds the connections waiting for their message
	// (more are refused at once); 0 means DefaultMaxHandshakes.
	MaxHandshakes int
	// SkipMemoryMapCheck skips comparing the regions with the peer's
	// /proc/PID/smaps.
	SkipMemoryMapCheck bool
}

// Defaults of Config.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxVMs           = 1024
	DefaultMaxHandshakes    = 64
	DefaultRecordFor        = 60 * time.Second
)

// Validate reports the first option that means nothing: no Memory, an
// empty one, an unknown Mode, a negative limit or duration, a Trace or
// RecordFor without RecordReplay, RecordReplay without a Trace.
func (c *Config) Validate() error {
	switch {
	case c.Memory == nil:
		return errors.New("handler: Config.Memory is required")
	case c.Memory.Size() <= 0:
		return fmt.Errorf("handler: the memory file%s is empty", memName(c.Memory))
	case c.Mode < OnDemand || c.Mode > RecordReplay:
		return fmt.Errorf("handler: unknown mode %v", c.Mode)
	case c.Mode != RecordReplay && c.Trace != "":
		return fmt.Errorf("handler: a trace (%s) is for mode record-replay, not %v", c.Trace, c.Mode)
	case c.Mode != RecordReplay && c.RecordFor != 0:
		return fmt.Errorf("handler: RecordFor (%v) is for mode record-replay, not %v", c.RecordFor, c.Mode)
	case c.Mode == RecordReplay && c.Trace == "":
		return errors.New("handler: mode record-replay needs a trace file (Config.Trace)")
	case c.RecordFor < 0:
		return fmt.Errorf("handler: RecordFor %v: want a positive duration (0: %v)", c.RecordFor, DefaultRecordFor)
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("handler: HandshakeTimeout %v: want a positive duration (0: %v)", c.HandshakeTimeout, DefaultHandshakeTimeout)
	case c.MaxMessage < 0:
		return fmt.Errorf("handler: MaxMessage %d: want at least 1 (0: the default)", c.MaxMessage)
	case c.MaxVMs < 0:
		return fmt.Errorf("handler: MaxVMs %d: want at least 1 (0: %d)", c.MaxVMs, DefaultMaxVMs)
	case c.MaxHandshakes < 0:
		return fmt.Errorf("handler: MaxHandshakes %d: want at least 1 (0: %d)", c.MaxHandshakes, DefaultMaxHandshakes)
	}
	return nil
}

// memName returns " NAME" for a source with a name (a pager.File).
func memName(s pager.Source) string {
	if n, ok := s.(interface{ Name() string }); ok {
		return " " + n.Name()
	}
	return ""
}

// describePrefetch names a prefetch setting for the logs.
func describePrefetch(p pager.Prefetch) string {
	switch {
	case p.Max == 0 && p.Min == 0:
		return "none"
	case p.Adaptive:
		lo := "1page"
		if p.Min > os.Getpagesize() {
			lo = bytesString(p.Min)
		}
		return fmt.Sprintf("adaptive %s..%s", lo, bytesString(p.Max))
	}
	return "fixed " + bytesString(p.Min)
}

func bytesString(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
