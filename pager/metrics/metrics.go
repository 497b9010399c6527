// Package metrics exports pager statistics to Prometheus.
//
//	c := metrics.NewCollector("uffd")
//	c.Add("vm-1", p.Stats)
//	prometheus.MustRegister(c)
//
// Every series carries a "pager" label with the name given to Add. Counters
// of a pager removed with Remove disappear with it.
package metrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gouffd/uffd/pager"
)

// Collector is a prometheus.Collector for any number of pagers.
type Collector struct {
	mu      sync.Mutex
	sources map[string]func() pager.Stats

	pagers  *prometheus.Desc
	latency *prometheus.Desc
	counts  []counter
}

type counter struct {
	desc *prometheus.Desc
	get  func(*pager.Stats) uint64
}

// NewCollector returns a Collector whose metrics are named
// <namespace>_pager_*.
func NewCollector(namespace string) *Collector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "pager", n) }
	labels := []string{"pager"}
	c := &Collector{
		sources: map[string]func() pager.Stats{},
		pagers:  prometheus.NewDesc(name("pagers"), "Pagers being served.", nil, nil),
		latency: prometheus.NewDesc(name("fault_service_seconds"), "Time from reading a fault message to its resolving ioctl's return.", labels, nil),
	}
	for _, m := range []struct {
		n, help string
		get     func(*pager.Stats) uint64
	}{
		{"faults_total", "Page-fault messages read, repeats included.", func(s *pager.Stats) uint64 { return s.Faults }},
		{"pages_total", "Pages installed in the faulting process.", func(s *pager.Stats) uint64 { return s.Pages }},
		{"bytes_total", "Bytes installed in the faulting process.", func(s *pager.Stats) uint64 { return s.Bytes }},
		{"prefetched_pages_total", "Pages installed beyond a faulting page.", func(s *pager.Stats) uint64 { return s.Prefetched }},
		{"filled_pages_total", "Pages installed by the background fill or Resolve.", func(s *pager.Stats) uint64 { return s.Filled }},
		{"zeroed_pages_total", "Pages installed as zeroes.", func(s *pager.Stats) uint64 { return s.Zeroed }},
		{"exists_total", "Resolves that found the page already installed.", func(s *pager.Stats) uint64 { return s.Exists }},
		{"source_retries_total", "Source reads retried.", func(s *pager.Stats) uint64 { return s.Retries }},
		{"source_errors_total", "Source reads that failed every retry.", func(s *pager.Stats) uint64 { return s.SourceErrors }},
		{"poisoned_pages_total", "Pages answered with SIGBUS.", func(s *pager.Stats) uint64 { return s.Poisoned }},
		{"outside_faults_total", "Faults in no region.", func(s *pager.Stats) uint64 { return s.Outside }},
		{"remove_events_total", "REMOVE events (the process dropped pages).", func(s *pager.Stats) uint64 { return s.Removes }},
		{"unmap_events_total", "UNMAP events.", func(s *pager.Stats) uint64 { return s.Unmaps }},
		{"remap_events_total", "REMAP events.", func(s *pager.Stats) uint64 { return s.Remaps }},
		{"fork_events_total", "FORK events.", func(s *pager.Stats) uint64 { return s.Forks }},
	} {
		c.counts = append(c.counts, counter{prometheus.NewDesc(name(m.n), m.help, labels, nil), m.get})
	}
	return c
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
	ch <- c.latency
	for _, m := range c.counts {
		ch <- m.desc
	}
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
		for _, m := range c.counts {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.get(&s)), name)
		}
		ch <- Histogram(c.latency, &s.Latency, name)
	}
}

// Histogram converts a pager latency histogram into a Prometheus histogram
// in seconds, with the log2 buckets' upper edges as bounds. The sum is an
// estimate: each duration counts as its bucket's midpoint.
func Histogram(desc *prometheus.Desc, h *pager.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, pager.HistogramBuckets)
	var cum uint64
	var sum float64
	for i, n := range h.Buckets {
		cum += n
		upper := float64(uint64(1)<<uint(i+1)) / 1e9
		buckets[upper] = cum
		sum += float64(n) * upper * 0.75
	}
	return prometheus.MustNewConstHistogram(desc, cum, sum, buckets, labels...)
}
