package pager

import "time"

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

// The counters are updated right after each ioctl returns, so a faulting
// thread can see its page an instant before Stats counts it; once Serve
// has returned they are exact.

// Add adds o's counts to s (to sum the Stats of several pagers).
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
	for i := range s.Latency.Buckets {
		s.Latency.Buckets[i] += o.Latency.Buckets[i]
	}
}
