// Package metrics exports pager statistics to Prometheus, in one
// vocabulary: each field of pager.Stats has one metric name, whoever
// exports it. A Collector exports any number of pagers, each under a
// "pager" label:
//
//	c := metrics.NewCollector("uffd")
//	c.Add("vm-1", p.Stats)
//	prometheus.MustRegister(c)
//
// A program with a collector of its own exports its Stats (one pager's,
// or a sum of many with pager.Stats.Add) under the same names through
// Stats, as the Firecracker handler does with the prefix
// uffd_firecracker:
//
//	<prefix>_faults_total              Stats.Faults
//	<prefix>_pages_total               Stats.Pages
//	<prefix>_bytes_total               Stats.Bytes
//	<prefix>_prefetched_pages_total    Stats.Prefetched
//	<prefix>_filled_pages_total        Stats.Filled
//	<prefix>_zeroed_pages_total        Stats.Zeroed
//	<prefix>_exists_total              Stats.Exists
//	<prefix>_source_retries_total      Stats.Retries
//	<prefix>_source_errors_total       Stats.SourceErrors
//	<prefix>_poisoned_pages_total      Stats.Poisoned
//	<prefix>_outside_faults_total      Stats.Outside
//	<prefix>_events_total{event}       Stats.Removes, Unmaps, Remaps, Forks (event="remove", ...)
//	<prefix>_fault_service_seconds     Stats.Latency, a histogram (see Histogram)
package metrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gouffd/uffd/pager"
)

// Stats describes the metrics of a pager.Stats under one prefix and one set
// of variable labels, for a collector to emit.
type Stats struct {
	counts  []counter
	events  *prometheus.Desc
	latency *prometheus.Desc
}

type counter struct {
	desc *prometheus.Desc
	get  func(*pager.Stats) uint64
}

var counters = []struct {
	name, help string
	get        func(*pager.Stats) uint64
}{
	{"faults_total", "Page-fault messages read, repeats included.", func(s *pager.Stats) uint64 { return s.Faults }},
	{"pages_total", "Pages installed in the faulting process (faults, prefetch, fill, Resolve).", func(s *pager.Stats) uint64 { return s.Pages }},
	{"bytes_total", "Bytes installed in the faulting process.", func(s *pager.Stats) uint64 { return s.Bytes }},
	{"prefetched_pages_total", "Pages installed beyond a faulting page.", func(s *pager.Stats) uint64 { return s.Prefetched }},
	{"filled_pages_total", "Pages installed by the background fill or Resolve (prefault, replay).", func(s *pager.Stats) uint64 { return s.Filled }},
	{"zeroed_pages_total", "Pages installed as zeroes (removed by the process, or a Zero source).", func(s *pager.Stats) uint64 { return s.Zeroed }},
	{"exists_total", "Resolves that found the page already installed (a race lost, a repeated message).", func(s *pager.Stats) uint64 { return s.Exists }},
	{"source_retries_total", "Source reads retried.", func(s *pager.Stats) uint64 { return s.Retries }},
	{"source_errors_total", "Source reads that failed every retry.", func(s *pager.Stats) uint64 { return s.SourceErrors }},
	{"poisoned_pages_total", "Pages answered with SIGBUS.", func(s *pager.Stats) uint64 { return s.Poisoned }},
	{"outside_faults_total", "Faults in no region.", func(s *pager.Stats) uint64 { return s.Outside }},
}

var events = []struct {
	label string
	get   func(*pager.Stats) uint64
}{
	{"remove", func(s *pager.Stats) uint64 { return s.Removes }},
	{"unmap", func(s *pager.Stats) uint64 { return s.Unmaps }},
	{"remap", func(s *pager.Stats) uint64 { return s.Remaps }},
	{"fork", func(s *pager.Stats) uint64 { return s.Forks }},
}

// NewStats returns the metrics of pager.Stats named
// <namespace>_<subsystem>_<name> (prometheus.BuildFQName), with the
// variable labels given.
func NewStats(namespace, subsystem string, labels ...string) *Stats {
	name := func(n string) string { return prometheus.BuildFQName(namespace, subsystem, n) }
	m := &Stats{
		events: prometheus.NewDesc(name("events_total"), "Non-fault events read (REMOVE, UNMAP, REMAP, FORK), by kind.",
			append(append([]string(nil), labels...), "event"), nil),
		latency: prometheus.NewDesc(name("fault_service_seconds"),
			"Fault service time, from reading the fault message to the resolving ioctl's return. Buckets are powers of two of nanoseconds; the sum is estimated from the buckets.",
			labels, nil),
	}
	for _, c := range counters {
		m.counts = append(m.counts, counter{prometheus.NewDesc(name(c.name), c.help, labels, nil), c.get})
	}
	return m
}

// Describe sends the descriptors of the metrics.
func (m *Stats) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.counts {
		ch <- c.desc
	}
	ch <- m.events
	ch <- m.latency
}

// Collect sends the metrics of s, with the values of the variable labels.
func (m *Stats) Collect(ch chan<- prometheus.Metric, s *pager.Stats, labelValues ...string) {
	for _, c := range m.counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.get(s)), labelValues...)
	}
	for _, e := range events {
		ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(e.get(s)), append(append([]string(nil), labelValues...), e.label)...)
	}
	ch <- Histogram(m.latency, &s.Latency, labelValues...)
}

// Collector is a prometheus.Collector for any number of pagers.
type Collector struct {
	mu      sync.Mutex
	sources map[string]func() pager.Stats

	pagers *prometheus.Desc
	stats  *Stats
}

// NewCollector returns a Collector whose metrics are named
// <namespace>_pager_*, each with the label "pager".
func NewCollector(namespace string) *Collector {
	return &Collector{
		sources: map[string]func() pager.Stats{},
		pagers:  prometheus.NewDesc(prometheus.BuildFQName(namespace, "pager", "pagers"), "Pagers being served.", nil, nil),
		stats:   NewStats(namespace, "pager", "pager"),
	}
}

// Add starts exporting the statistics that stats returns (a Pager's Stats
// method) under the label value name, replacing any source of that name.
func (c *Collector) Add(name string, stats func() pager.Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources[name] = stats
}

// Remove stops exporting name.
func (c *Collector) Remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sources, name)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pagers
	c.stats.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	names := make([]string, 0, len(c.sources))
	for n := range c.sources {
		names = append(names, n)
	}
	sort.Strings(names)
	fns := make([]func() pager.Stats, len(names))
	for i, n := range names {
		fns[i] = c.sources[n]
	}
	c.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(c.pagers, prometheus.GaugeValue, float64(len(names)))
	for i, name := range names {
		s := fns[i]()
		c.stats.Collect(ch, &s, name)
	}
}

// Histogram bucket bounds: 2^minBucket+1 to 2^maxBucket+1 nanoseconds,
// about 0.5 us to 34 s. Below, no fault is served; above, +Inf counts.
const minBucket, maxBucket = 8, 34

// Histogram converts a pager latency histogram into a Prometheus histogram
// in seconds: bucket i of the pager, [2^i, 2^(i+1)) ns, counts under the
// upper bound 2^(i+1) ns; bounds run from 512 ns to about 34 s (the
// +Inf bucket holds the rest). The sum is an estimate: each duration
// counts as its bucket's midpoint, 1.5 * 2^i ns.
func Histogram(desc *prometheus.Desc, h *pager.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, maxBucket-minBucket+1)
	var cum uint64
	var sum float64
	for i, n := range h.Buckets {
		cum += n
		upper := float64(uint64(1)<<uint(i+1)) / 1e9
		if i >= minBucket && i <= maxBucket {
			buckets[upper] = cum
		}
		sum += float64(n) * upper * 0.75
	}
	return prometheus.MustNewConstHistogram(desc, cum, sum, buckets, labels...)
}
