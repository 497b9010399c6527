package pager

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// HistogramBuckets is the number of buckets of a latency Histogram.
const HistogramBuckets = 40

// Histogram counts durations in log2 buckets: bucket i holds those in
// [2^i, 2^(i+1)) nanoseconds (bucket 0 also holds 0), as QEMU's postcopy
// blocktime does. The last bucket holds everything from about 9 minutes
// up.
type Histogram struct {
	Buckets [HistogramBuckets]uint64
}

// Count returns the number of durations recorded.
func (h *Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Buckets {
		n += c
	}
	return n
}

// Quantile returns an upper bound of the q-quantile (0 < q <= 1): the
// upper edge of the bucket that holds it. It returns 0 when h is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	total := h.Count()
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	if want == 0 {
		want = 1
	}
	var seen uint64
	for i, c := range h.Buckets {
		seen += c
		if seen >= want {
			return time.Duration(uint64(1) << uint(i+1))
		}
	}
	return time.Duration(uint64(1) << HistogramBuckets)
}

// Stats are a Pager's counters since New. All counts are cumulative.
type Stats struct {
	// Faults counts page-fault messages read, duplicates included.
	Faults uint64
	// Pages and Bytes count what was installed in the faulting process
	// (by faults, prefetch, fill and Resolve).
	Pages, Bytes uint64
	// Prefetched counts pages installed beyond a faulting page; Filled,
	// pages installed by the background fill or Resolve.
	Prefetched, Filled uint64
	// Zeroed counts pages installed as zeroes because the process removed
	// them (REMOVE) or the source is Zero.
	Zeroed uint64
	// Exists counts resolves that found the page already there (a race
	// lost to another resolver or a repeated message); their threads were
	// woken.
	Exists uint64
	// Retries counts source reads retried; SourceErrors, reads that failed
	// every retry; Poisoned, pages answered with SIGBUS.
	Retries, SourceErrors, Poisoned uint64
	// Outside counts faults in no region (reported to OnError).
	Outside uint64
	// Events seen.
	Removes, Unmaps, Remaps, Forks uint64
	// Latency is the distribution of fault service times: from reading a
	// fault message to the resolving ioctl's return.
	Latency Histogram
}

// Add adds o's counters and latency histogram to s: the sum of several
// pagers' Stats (every VM a handler served, say).
func (s *Stats) Add(o Stats) {
	s.Faults += o.Faults
	s.Pages += o.Pages
	s.Bytes += o.Bytes
	s.Prefetched += o.Prefetched
	s.Filled += o.Filled
	s.Zeroed += o.Zeroed
	s.Exists += o.Exists
	s.Retries += o.Retries
	s.SourceErrors += o.SourceErrors
	s.Poisoned += o.Poisoned
	s.Outside += o.Outside
	s.Removes += o.Removes
	s.Unmaps += o.Unmaps
	s.Remaps += o.Remaps
	s.Forks += o.Forks
	for i, n := range o.Latency.Buckets {
		s.Latency.Buckets[i] += n
	}
}

// counters are the live Stats, updated atomically.
type counters struct {
	faults, pages, bytes, prefetched, filled, zeroed, exists atomic.Uint64
	retries, sourceErrors, poisoned, outside                 atomic.Uint64
	removes, unmaps, remaps, forks                           atomic.Uint64
	latency                                                  [HistogramBuckets]atomic.Uint64
}

func (c *counters) observe(d time.Duration) {
	i := 0
	if d > 0 {
		i = bits.Len64(uint64(d)) - 1
	}
	if i >= HistogramBuckets {
		i = HistogramBuckets - 1
	}
	c.latency[i].Add(1)
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Faults: c.faults.Load(), Pages: c.pages.Load(), Bytes: c.bytes.Load(),
		Prefetched: c.prefetched.Load(), Filled: c.filled.Load(), Zeroed: c.zeroed.Load(),
		Exists: c.exists.Load(), Retries: c.retries.Load(), SourceErrors: c.sourceErrors.Load(),
		Poisoned: c.poisoned.Load(), Outside: c.outside.Load(),
		Removes: c.removes.Load(), Unmaps: c.unmaps.Load(), Remaps: c.remaps.Load(), Forks: c.forks.Load(),
	}
	for i := range c.latency {
		s.Latency.Buckets[i] = c.latency[i].Load()
	}
	return s
}
