package stress

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gouffd/uffd/mem"
)

// Mode is the set of modes of one bounce, chosen from the number of
// bounces left as uffd-stress.c does (bit 0: random, 1: racing, 2: verify,
// 3: poll).
type Mode uint8

const (
	// Random: the lockers pick pages at random; otherwise each walks the
	// pages in order from its own starting point.
	Random Mode = 1 << iota
	// Racing: the sequential walks of all lockers start at the same page,
	// so that their faults race on the same pages.
	Racing
	// Verify: the locker checks every counter at the end of the bounce.
	Verify
	// Poll: the fault path waits in poll(2) on a thread of its own;
	// otherwise it reads through the Go runtime's poller.
	Poll
)

// ModeOf returns the modes of the bounce run when left bounces remain
// after it.
func ModeOf(left int) Mode { return Mode(left) & (Random | Racing | Verify | Poll) }

func (m Mode) String() string {
	var parts []string
	if m&Random != 0 {
		parts = append(parts, "rnd")
	} else {
		parts = append(parts, "seq")
	}
	if m&Racing != 0 {
		parts = append(parts, "racing")
	}
	if m&Verify != 0 {
		parts = append(parts, "ver")
	}
	if m&Poll != 0 {
		parts = append(parts, "poll")
	} else {
		parts = append(parts, "read")
	}
	return strings.Join(parts, " ")
}

// Server is the fault-serving path.
type Server int

const (
	// ServeDirect is this package's port of the kernel test's handler:
	// UFFDIO_COPY of the faulting page (write-protected when the kernel
	// supports write-protection of the memory kind), unprotect on
	// write-protect faults, wake on EEXIST.
	ServeDirect Server = iota
	// ServePager serves faults with package pager and copies in the
	// background with Pager.Resolve. It does not write-protect.
	ServePager
)

func (s Server) String() string {
	switch s {
	case ServeDirect:
		return "direct"
	case ServePager:
		return "pager"
	}
	return fmt.Sprintf("Server(%d)", int(s))
}

// Config describes a run.
type Config struct {
	// Kind is the memory kind of the two areas.
	Kind mem.Kind
	// Size is the size of each area in bytes; it is rounded down to a
	// whole number of pages per CPU, which must be at least one.
	Size int
	// Bounces is the number of bounces (at least 1).
	Bounces int
	// CPUs is the number of lockers, fault-serving readers and
	// background copiers (default: the number of CPUs).
	CPUs int
	// Server chooses the fault-serving path.
	Server Server
	// NoWP turns write-protection off even where the kernel supports it.
	NoWP bool
	// Exe is the program to start as the locker (default: this one). It
	// must call LockerMain first thing.
	Exe string
	// Progress, if set, is called after each bounce.
	Progress func(Bounce)
	// Stderr receives the locker's standard error (default: discarded).
	Stderr io.Writer

	modes []Mode // tests: the modes of the bounces, in place of ModeOf
}

// modeOf returns the modes of bounce b, with left bounces after it.
func (c *Config) modeOf(b, left int) Mode {
	if len(c.modes) > 0 {
		return c.modes[b%len(c.modes)]
	}
	return ModeOf(left)
}

// Bounce is what one bounce did.
type Bounce struct {
	Index    int // 0 for the first
	Mode     Mode
	Duration time.Duration
	// Faults counts missing faults the fault path resolved with a copy;
	// WPFaults, write-protect faults it resolved; Exists, copies that met
	// a page already there (a lost race, then woken).
	Faults, WPFaults, Exists uint64
	// Background counts pages the background copiers installed.
	Background uint64
	// Increments counts the lockers' counter increments.
	Increments uint64
	// Served counts every page installed, by faults and in the
	// background.
	Served uint64
}

// PagesPerSecond returns the pages installed per second of the bounce.
func (b Bounce) PagesPerSecond() float64 { return perSecond(b.Served, b.Duration) }

// Result is what a run did.
type Result struct {
	Kind     mem.Kind
	Server   Server
	Pages    int // pages of each area
	PageSize int
	CPUs     int
	WP       bool // the run write-protected pages
	Bounces  []Bounce
}

// Served returns the pages installed over all bounces.
func (r Result) Served() uint64 {
	var n uint64
	for _, b := range r.Bounces {
		n += b.Served
	}
	return n
}

// Duration returns the time spent in bounces.
func (r Result) Duration() time.Duration {
	var d time.Duration
	for _, b := range r.Bounces {
		d += b.Duration
	}
	return d
}

// PagesPerSecond returns the pages installed per second over all bounces.
func (r Result) PagesPerSecond() float64 { return perSecond(r.Served(), r.Duration()) }

// needs returns what a run of kind with areas of size bytes (whole pages)
// takes at most: bytes of memory (the source, and the destination being
// filled; the other area is empty between its bounces) and, for the
// hugetlb kinds, huge pages (two areas, each as mem.HugePagesFor says).
func needs(kind mem.Kind, size int) (bytes, hugePages int, err error) {
	if !kind.Huge() {
		return 2 * size, 0, nil
	}
	per, err := mem.HugePagesFor(kind, size)
	return size, 2 * per, err
}

func perSecond(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
