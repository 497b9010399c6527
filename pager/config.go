package pager

import (
	"errors"
	"fmt"
	"time"

	"github.com/gouffd/uffd"
)

// ErrorPolicy says how a fault is answered when its page cannot be had
// from the source, after every retry.
type ErrorPolicy int

const (
	// PoisonOnError wakes the faulting thread with SIGBUS (UFFDIO_POISON),
	// as for a hardware memory error, and reports the error. It needs
	// FeaturePoison on the userfaultfd; without it the pager behaves as
	// WaitOnError.
	PoisonOnError ErrorPolicy = iota
	// WaitOnError leaves the faulting thread waiting and keeps retrying the
	// source with capped backoff until it answers or Serve ends. Each
	// failure is reported.
	WaitOnError
)

func (e ErrorPolicy) String() string {
	switch e {
	case PoisonOnError:
		return "poison"
	case WaitOnError:
		return "wait"
	}
	return fmt.Sprintf("ErrorPolicy(%d)", int(e))
}

// Range is the address range [Start, End).
type Range struct {
	Start, End uintptr
}

// Len returns End-Start.
func (r Range) Len() uintptr { return r.End - r.Start }

func (r Range) String() string { return fmt.Sprintf("[%#x, %#x)", r.Start, r.End) }

// Region is a range of registered memory and where its contents come from.
type Region struct {
	// Start and Len delimit the range in the faulting process, aligned to
	// PageSize.
	Start, Len uintptr
	// PageSize is the range's page size: the base page size (the default
	// when 0) or a huge page size for hugetlbfs.
	PageSize int
	// Source holds the contents; page i of the region is at
	// Offset+i*PageSize. The range must lie within Source.Size().
	Source Source
	Offset int64
	// OnError is the policy for pages the source cannot deliver.
	OnError ErrorPolicy
	// Name labels the region in errors and logs.
	Name string
}

func (r Region) String() string {
	name := r.Name
	if name == "" {
		name = "region"
	}
	return fmt.Sprintf("%s %#x+%#x (offset %#x, page %d, %s)", name, r.Start, r.Len, r.Offset, r.PageSize, sourceKind(r.Source))
}

func (r *Region) label() string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("region %#x+%#x", r.Start, r.Len)
}

// Prefetch is how much the pager resolves per fault beyond the faulting
// page. The zero value resolves the faulting page only.
type Prefetch struct {
	// Min and Max bound the bytes resolved per fault (rounded up to whole
	// pages; the faulting page is always resolved).
	Min, Max int
	// Adaptive follows up to four ascending streams of faults: a fault
	// where a stream's last resolve ended doubles its window (starting at
	// Min, up to Max) and resolves the next window too, on another CPU,
	// ahead of the thread; any other fault starts a stream over at Min.
	// Without Adaptive every fault resolves the Min-sized aligned block
	// that holds it.
	Adaptive bool
}

// Fixed resolves the aligned block of the given size that holds each
// fault.
func Fixed(bytes int) Prefetch { return Prefetch{Min: bytes, Max: bytes} }

// Adaptive starts each stream at one page and doubles its window up to
// 4 MiB on sequential access (CRIU's lazy pages reach the same 4 MiB).
func Adaptive() Prefetch { return Prefetch{Min: 0, Max: 4 << 20, Adaptive: true} }

func (pf Prefetch) validate() error {
	switch {
	case pf.Min < 0 || pf.Max < 0:
		return fmt.Errorf("pager: prefetch of %d..%d bytes: sizes cannot be negative", pf.Min, pf.Max)
	case pf.Max < pf.Min:
		return fmt.Errorf("pager: prefetch of %d..%d bytes: Max is below Min", pf.Min, pf.Max)
	case pf.Max > MaxPrefetch:
		return fmt.Errorf("pager: prefetch of up to %d bytes: at most %d", pf.Max, MaxPrefetch)
	}
	return nil
}

func (pf Prefetch) String() string {
	switch {
	case pf.Adaptive:
		return fmt.Sprintf("adaptive %d..%d", pf.Min, pf.Max)
	case pf.Min == 0:
		return "none"
	}
	return fmt.Sprintf("fixed %d", pf.Min)
}

// MaxPrefetch bounds Prefetch.Max.
const MaxPrefetch = 1 << 30

// Retry bounds how a failing source read is retried.
type Retry struct {
	// Attempts is the number of reads before the OnError policy applies
	// (default DefaultAttempts).
	Attempts int
	// Backoff is the pause after the first failure, doubled after each
	// further one up to MaxBackoff (defaults DefaultBackoff and
	// DefaultMaxBackoff).
	Backoff, MaxBackoff time.Duration
}

// Defaults of Retry.
const (
	DefaultAttempts   = 5
	DefaultBackoff    = time.Millisecond
	DefaultMaxBackoff = time.Second
)

// Config holds a Pager's options. The zero value serves each fault's page
// alone, on an engine of its own.
type Config struct {
	// Engine serves the faults: reader threads pinned one per CPU (see
	// NewEngine). Pagers may share one. Nil: each Serve starts an engine
	// on every CPU the process may use, and stops it when it returns.
	Engine *Engine
	// Prefetch sets how much is resolved per fault.
	Prefetch Prefetch
	// Fill populates every region in the background, in ascending order,
	// while faults keep priority: the fill yields to any pending fault.
	Fill bool
	// FillChunk is the size of each background resolve (default
	// DefaultFillChunk).
	FillChunk int
	// Fetchers bounds the source reads in flight for sources that are
	// not in memory (default DefaultFetchers).
	Fetchers int
	// Retry bounds the retries of failing source reads.
	Retry Retry
	// OnFork receives a Pager for the child's userfaultfd of each FORK
	// event, with the parent's regions and their resolved state (the child
	// inherited the pages already served). The callee owns it and should
	// Serve it. When nil, Serve serves the child itself until it ends.
	OnFork func(child *Pager)
	// OnFault, when set, receives the page address of each distinct
	// fault, in the order the faults were read, from a goroutine of
	// Serve's soon after (within 10 ms): the fault path itself never calls
	// Go.
	OnFault func(addr uintptr)
	// OnError receives errors the pager recovers from: source failures,
	// faults outside every region, failed ioctls. Nil discards them (the
	// counters in Stats still count them).
	OnError func(error)
}

// Defaults of Config.
const (
	DefaultFillChunk = 256 << 10
	DefaultFetchers  = 4
)

// withDefaults returns cfg with its zero values replaced by defaults, or
// an error naming a value that makes no sense.
func (cfg Config) withDefaults() (Config, error) {
	if err := cfg.Prefetch.validate(); err != nil {
		return cfg, err
	}
	switch {
	case cfg.FillChunk < 0:
		return cfg, fmt.Errorf("pager: FillChunk %d: cannot be negative", cfg.FillChunk)
	case cfg.Fetchers < 0:
		return cfg, fmt.Errorf("pager: Fetchers %d: cannot be negative", cfg.Fetchers)
	case cfg.Retry.Attempts < 0:
		return cfg, fmt.Errorf("pager: Retry.Attempts %d: cannot be negative", cfg.Retry.Attempts)
	case cfg.Retry.Backoff < 0 || cfg.Retry.MaxBackoff < 0:
		return cfg, fmt.Errorf("pager: Retry backoff %v..%v: cannot be negative", cfg.Retry.Backoff, cfg.Retry.MaxBackoff)
	}
	if cfg.FillChunk == 0 {
		cfg.FillChunk = DefaultFillChunk
	}
	if cfg.Fetchers == 0 {
		cfg.Fetchers = DefaultFetchers
	}
	if cfg.Retry.Attempts == 0 {
		cfg.Retry.Attempts = DefaultAttempts
	}
	if cfg.Retry.Backoff == 0 {
		cfg.Retry.Backoff = DefaultBackoff
	}
	if cfg.Retry.MaxBackoff == 0 {
		cfg.Retry.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.Retry.MaxBackoff < cfg.Retry.Backoff {
		return cfg, fmt.Errorf("pager: Retry.MaxBackoff %v is below Backoff %v", cfg.Retry.MaxBackoff, cfg.Retry.Backoff)
	}
	return cfg, nil
}

// eventFeatures are the features whose events the pager follows.
const eventFeatures = uffd.FeatureEventRemove | uffd.FeatureEventUnmap | uffd.FeatureEventRemap | uffd.FeatureEventFork

// Errors.
var (
	// ErrServing is returned by Serve when the Pager is already serving.
	ErrServing = errors.New("pager: Serve is already running")
	// ErrNotServing is returned by Resolve when no Serve runs (or it
	// ended): nobody would read the events that an install may wait for.
	ErrNotServing = errors.New("pager: Serve is not running")
	// ErrOutside matches the errors reported for faults in no region.
	ErrOutside = errors.New("pager: fault in no region")
	// ErrSource matches every SourceError.
	ErrSource = errors.New("pager: source read failed")
)

// outsideError reports a fault in no region.
type outsideError struct{ addr uintptr }

func (e *outsideError) Error() string {
	return fmt.Sprintf("pager: fault at %#x is in no region; the thread waits for a region added there", e.addr)
}

func (e *outsideError) Is(target error) bool { return target == ErrOutside }

// SourceError is a source read that failed. It matches ErrSource and wraps
// the source's error. Final is set on the report after the last of
// Retry.Attempts, when the region's ErrorPolicy applies.
type SourceError struct {
	Region string
	Offset int64
	Len    int
	Err    error
	Final  bool
}

func (e *SourceError) Error() string {
	s := fmt.Sprintf("pager: %s: reading %d bytes at offset %d of the source: %v", e.Region, e.Len, e.Offset, e.Err)
	if e.Final {
		s += " (retries exhausted)"
	}
	return s
}

func (e *SourceError) Unwrap() []error { return []error{ErrSource, e.Err} }
