package pager

import (
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
	return "ErrorPolicy(?)"
}

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

// Prefetch is how much the pager resolves per fault beyond the faulting
// page. The zero value resolves the faulting page only.
type Prefetch struct {
	// Min and Max bound the bytes resolved per fault (rounded to whole
	// pages; the faulting page is always resolved).
	Min, Max int
	// Adaptive grows the window (doubling, up to Max) while faults come in
	// ascending runs, reading one window ahead of the faulting thread, and
	// shrinks it (halving, down to Min) on random access. Without it every
	// fault resolves the Min-sized aligned block that holds it, as a fixed
	// chunk.
	Adaptive bool
}

// Fixed resolves the aligned block of the given size that holds each
// fault.
func Fixed(bytes int) Prefetch { return Prefetch{Min: bytes, Max: bytes} }

// Adaptive grows from 64 KiB up to 4 MiB per fault on sequential access,
// shrinking to a single page on random access (CRIU's lazy-pages grows from
// 64 KiB to 4 MiB).
func Adaptive() Prefetch { return Prefetch{Min: 0, Max: 4 << 20, Adaptive: true} }

// Retry bounds how a failing source read is retried.
type Retry struct {
	// Attempts is the number of reads before the OnError policy applies
	// (default 5).
	Attempts int
	// Backoff is the pause after the first failure, doubled after each
	// further one up to MaxBackoff (defaults 1ms and 1s).
	Backoff, MaxBackoff time.Duration
}

// Reader is how the pager waits for fault messages.
type Reader int

const (
	// ReaderPoller parks the reading goroutine in the Go runtime's poller
	// between messages. It is the default.
	ReaderPoller Reader = iota
	// ReaderThread locks each reader to an OS thread that waits in poll(2)
	// on the userfaultfd and a shutdown eventfd, saving the poller's
	// goroutine wake-up on every fault.
	ReaderThread
)

func (r Reader) String() string {
	switch r {
	case ReaderPoller:
		return "poller"
	case ReaderThread:
		return "thread"
	}
	return "Reader(?)"
}

// Config holds a Pager's options. The zero value serves each fault's page
// alone, with one reader in the poller.
type Config struct {
	// Prefetch sets how much is resolved per fault.
	Prefetch Prefetch
	// Fill populates every region in the background, in ascending order,
	// while faults keep priority: the fill yields to any pending fault.
	Fill bool
	// FillChunk is the size of each background resolve (default 256 KiB).
	FillChunk int
	// Workers is the number of goroutines that read messages and resolve
	// them (default 1: on a 2-CPU machine one beats two, since every reader
	// wakes on every fault).
	Workers int
	// Reader chooses how readers wait for messages.
	Reader Reader
	// SpinReads is how many times a ReaderPoller reader reads again
	// without parking after serving a fault: the next fault of a thread
	// that scans memory comes a few microseconds later, and finding it
	// without a trip through the poller saves a wake-up (default
	// DefaultSpinReads; negative: never).
	SpinReads int
	// Retry bounds the retries of failing source reads.
	Retry Retry
	// OnFork receives a Pager for the child's userfaultfd of each FORK
	// event, with the parent's regions and their resolved state (the child
	// inherited the pages already served). The callee owns it and should
	// Serve it. When nil, Serve serves the child itself until it ends.
	OnFork func(child *Pager)
	// OnFault, when set, is called with the page address of each distinct
	// fault after it was resolved, from the fault path: keep it short.
	OnFault func(addr uintptr)
	// OnError receives errors the pager recovers from: source failures,
	// faults outside every region. Nil discards them (the counters in
	// Stats still count them).
	OnError func(error)
	// Isolated serves faults from a loop written in C inside one cgo call,
	// which a garbage collection's stop-the-world does not stop, so that
	// the Go process's own faults inside runtime assembly cannot deadlock
	// with it. Only Mapped and Zero sources are allowed; Fill, OnFault and
	// OnFork make Serve fail; Workers and Reader are ignored. It needs cgo
	// (ErrNoIsolation otherwise). See the package documentation.
	Isolated bool
}

// DefaultSpinReads is the default of Config.SpinReads.
const DefaultSpinReads = 10

// DefaultFillChunk is the size of a background fill's resolves.
const DefaultFillChunk = 256 << 10

// uffdFeatures are the features a Pager uses when the userfaultfd has them.
const uffdFeatures = uffd.FeatureEventRemove | uffd.FeatureEventUnmap | uffd.FeatureEventRemap | uffd.FeatureEventFork | uffd.FeaturePoison
