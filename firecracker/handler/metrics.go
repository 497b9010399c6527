//go:build linux

package handler

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gouffd/uffd/pager/metrics"
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

// init makes every reason's count exist from the start, at 0.
func (m *serverMetrics) init() {
	m.rejected = map[string]uint64{}
	for _, r := range Reasons {
		m.rejected[r] = 0
	}
	m.endedBy = map[string]uint64{}
	for _, r := range EndReasons {
		m.endedBy[r] = 0
	}
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

func (m *serverMetrics) endedCount(reason string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.endedBy[reason]
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

// Rejections returns how many connections were refused, by reason (every
// reason of Reasons, 0 for those that never happened).
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
// named uffd_firecracker_*: the VMs served, connections accepted and
// rejected (by reason, each reason from the start), VMs started and ended
// (by reason, likewise), and the pagers' counters summed over every VM
// served, under the names package pager/metrics gives them
// (uffd_firecracker_faults_total, _exists_total, _fault_service_seconds,
// ...).
func (s *Server) Collector() prometheus.Collector {
	return &collector{s: s, stats: metrics.NewStats("uffd", "firecracker")}
}

const ns = "uffd_firecracker_"

var (
	descVMs      = prometheus.NewDesc(ns+"vms", "VMs being served.", nil, nil)
	descAccepted = prometheus.NewDesc(ns+"connections_total", "Connections accepted on the handler's socket.", nil, nil)
	descRejected = prometheus.NewDesc(ns+"connections_rejected_total", "Connections refused, by reason.", []string{"reason"}, nil)
	descStarted  = prometheus.NewDesc(ns+"vms_started_total", "VMs whose handshake was accepted (or that were taken over).", nil, nil)
	descEnded    = prometheus.NewDesc(ns+"vms_ended_total", "VMs no longer served, by reason (exited, socket_closed, gone, handed_over, shutdown, error).", []string{"reason"}, nil)
)

type collector struct {
	s     *Server
	stats *metrics.Stats
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVMs, descAccepted, descRejected, descStarted, descEnded} {
		ch <- d
	}
	c.stats.Describe(ch)
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
	c.stats.Collect(ch, &st)
}
