package remote

import (
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/gouffd/uffd/pager"
)

// Stats are an Image's counters since Open. All counts are cumulative
// except InFlight.
type Stats struct {
	// Requests counts range requests sent (retries included); Bytes, the
	// bytes they brought.
	Requests, Bytes uint64
	// Hits counts chunks asked for (Fetch, ReadAt) that were already in
	// the cache; Misses, chunks this process fetched; PeerWaits, chunks
	// another process was fetching and this one waited for; Evictions,
	// chunks this process evicted from the cache directory (of any image).
	Hits, Misses, PeerWaits, Evictions uint64
	// Retries counts attempts retried after a transient failure; Errors,
	// failures given up on (after retries for transient ones), by Kind.
	Retries uint64
	Errors  [numKinds]uint64
	// InFlight is the number of range requests in progress.
	InFlight int64
	// Latency is the distribution of range requests' durations, from the
	// request to its last byte.
	Latency pager.Histogram
	// FaultWait is the distribution of the times urgent requests waited
	// for their first page: how long faults waited on the network.
	FaultWait pager.Histogram
}

const numKinds = int(KindOther) + 1

type counters struct {
	requests, bytes, hits, misses, peerWaits, evictions, retries atomic.Uint64
	errors                                                       [numKinds]atomic.Uint64
	inFlight                                                     atomic.Int64
	latency, faultWait                                           [pager.HistogramBuckets]atomic.Uint64
}

func observe(h *[pager.HistogramBuckets]atomic.Uint64, d time.Duration) {
	i := 0
	if d > 0 {
		i = bits.Len64(uint64(d)) - 1
	}
	h[min(i, pager.HistogramBuckets-1)].Add(1)
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Requests: c.requests.Load(), Bytes: c.bytes.Load(), Hits: c.hits.Load(), Misses: c.misses.Load(),
		PeerWaits: c.peerWaits.Load(), Evictions: c.evictions.Load(), Retries: c.retries.Load(),
		InFlight: c.inFlight.Load(),
	}
	for i := range s.Errors {
		s.Errors[i] = c.errors[i].Load()
	}
	for i := range s.Latency.Buckets {
		s.Latency.Buckets[i] = c.latency[i].Load()
		s.FaultWait.Buckets[i] = c.faultWait[i].Load()
	}
	return s
}
