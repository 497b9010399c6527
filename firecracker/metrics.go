//go:build linux

package firecracker

import (
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gouffd/uffd/pager"
)

// serverMetrics are the server's own counters (the pagers keep theirs).
type serverMetrics struct {
	accepted atomic.Uint64
	started  atomic.Uint64

	mu       sync.Mutex
	rejected map[string]uint64
	endedBy  map[string]uint64

	// overload logging: one line a second at most, with the count
	overMu      sync.Mutex
	overLast    time.Time
	overDropped int
}

func (m *serverMetrics) init() {
	m.rejected = map[string]uint64{}
	m.endedBy = map[string]uint64{}
}

func (m *serverMetrics) reject(reason string) {
	m.mu.Lock()
	m.rejected[reason]++
	m.mu.Unlock()
}

func (m *serverMetrics) ended(reason string) {
	m.mu.Lock()
	m.endedBy[reason]++
	m.mu.Unlock()
}

func (m *serverMetrics) overloadLog(log *slog.Logger, err error) {
	m.overMu.Lock()
	defer m.overMu.Unlock()
	if now := time.Now(); now.Sub(m.overLast) >= time.Second {
		log.Warn("connection rejected", "reason", ReasonOverloaded, "err", err, "also_rejected_since_last_line", m.overDropped)
		m.overLast, m.overDropped = now, 0
		return
	}
	m.overDropped++
}

// Rejections returns how many connections were refused, by reason (see
// the Reason constants).
func (s *Server) Rejections() map[string]uint64 {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	out := make(map[string]uint64, len(s.m.rejected))
	for k, v := range s.m.rejected {
		out[k] = v
	}
	return out
}

// Collector returns a Prometheus collector of the server's metrics, all
// prefixed uffd_firecracker_: VMs served, connections accepted and
// rejected (by reason), VMs ended (by reason), and the pagers' counters
// summed over every VM served (faults, pages and bytes installed,
// prefetched, filled, zeroed, lost races, source errors, events) with the
// fault service latency as a histogram.
func (s *Server) Collector() prometheus.Collector { return &collector{s: s} }

const ns = "uffd_firecracker_"

var (
	descVMs        = prometheus.NewDesc(ns+"vms", "VMs being served.", nil, nil)
	descAccepted   = prometheus.NewDesc(ns+"connections_total", "Connections accepted on the handler's socket.", nil, nil)
	descRejected   = prometheus.NewDesc(ns+"connections_rejected_total", "Connections refused, by reason.", []string{"reason"}, nil)
	descStarted    = prometheus.NewDesc(ns+"vms_started_total", "VMs whose handshake was accepted (or that were taken over).", nil, nil)
	descEnded      = prometheus.NewDesc(ns+"vms_ended_total", "VMs no longer served, by reason (exited, socket_closed, gone, handed_over, shutdown, error).", []string{"reason"}, nil)
	descFaults     = prometheus.NewDesc(ns+"faults_total", "Page-fault messages read.", nil, nil)
	descPages      = prometheus.NewDesc(ns+"pages_total", "Pages installed in VMs (faults, prefetch, fill, replay).", nil, nil)
	descBytes      = prometheus.NewDesc(ns+"bytes_total", "Bytes installed in VMs.", nil, nil)
	descPrefetched = prometheus.NewDesc(ns+"prefetched_pages_total", "Pages installed beyond a faulting page.", nil, nil)
	descFilled     = prometheus.NewDesc(ns+"filled_pages_total", "Pages installed by the background fill or replay.", nil, nil)
	descZeroed     = prometheus.NewDesc(ns+"zeroed_pages_total", "Pages installed as zeroes (removed by the balloon).", nil, nil)
	descExists     = prometheus.NewDesc(ns+"page_exists_total", "Resolves that found the page already present.", nil, nil)
	descSrcErrors  = prometheus.NewDesc(ns+"source_errors_total", "Pages the memory file could not deliver after every retry.", nil, nil)
	descOutside    = prometheus.NewDesc(ns+"faults_outside_total", "Faults outside every region.", nil, nil)
	descEvents     = prometheus.NewDesc(ns+"events_total", "Non-fault events, by kind.", []string{"event"}, nil)
	descLatency    = prometheus.NewDesc(ns+"fault_latency_seconds", "Fault service time, from reading the fault to the resolving ioctl's return. Buckets are powers of two of nanoseconds; the sum is estimated from the buckets.", nil, nil)
)

type collector struct{ s *Server }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVMs, descAccepted, descRejected, descStarted, descEnded, descFaults, descPages, descBytes, descPrefetched, descFilled, descZeroed, descExists, descSrcErrors, descOutside, descEvents, descLatency} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	vms := len(s.vms)
	s.mu.Unlock()
	st := s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(descVMs, prometheus.GaugeValue, float64(vms))
	counter(descAccepted, s.m.accepted.Load())
	counter(descStarted, s.m.started.Load())
	s.m.mu.Lock()
	for r, n := range s.m.rejected {
		counter(descRejected, n, r)
	}
	for r, n := range s.m.endedBy {
		counter(descEnded, n, r)
	}
	s.m.mu.Unlock()
	counter(descFaults, st.Faults)
	counter(descPages, st.Pages)
	counter(descBytes, st.Bytes)
	counter(descPrefetched, st.Prefetched)
	counter(descFilled, st.Filled)
	counter(descZeroed, st.Zeroed)
	counter(descExists, st.Exists)
	counter(descSrcErrors, st.SourceErrors)
	counter(descOutside, st.Outside)
	counter(descEvents, st.Removes, "remove")
	counter(descEvents, st.Unmaps, "unmap")
	counter(descEvents, st.Remaps, "remap")
	counter(descEvents, st.Forks, "fork")
	ch <- latencyHistogram(&st.Latency)
}

// latencyHistogram turns the pager's log2 histogram into a Prometheus
// one: bucket i of the pager, [2^i, 2^(i+1)) ns, is counted under the
// upper bound 2^(i+1) ns. The sum is estimated at 1.5 * 2^i ns a fault.
func latencyHistogram(h *pager.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, pager.HistogramBuckets)
	var cum uint64
	var sum float64
	for i, n := range h.Buckets {
		cum += n
		upper := math.Ldexp(1, i+1) / 1e9
		if i >= 9 && i <= 33 { // about 1 us to 17 s
			buckets[upper] = cum
		}
		sum += float64(n) * math.Ldexp(1.5, i) / 1e9
	}
	return prometheus.MustNewConstHistogram(descLatency, cum, sum, buckets)
}
