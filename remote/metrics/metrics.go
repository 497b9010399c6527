// Package metrics exports remote image statistics to Prometheus, in the
// vocabulary of pager/metrics.
//
//	c := metrics.NewCollector("uffd")
//	c.Add("vm1.mem", im.Stats)
//	prometheus.MustRegister(c)
//
// Every series carries an "image" label with the name given to Add.
package metrics

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	pagermetrics "github.com/gouffd/uffd/pager/metrics"
	"github.com/gouffd/uffd/remote"
)

// Collector is a prometheus.Collector for any number of images.
type Collector struct {
	mu      sync.Mutex
	sources map[string]func() remote.Stats

	images, inFlight, errors, latency, faultWait *prometheus.Desc
	counts                                       []counter
}

type counter struct {
	desc *prometheus.Desc
	get  func(*remote.Stats) uint64
}

// NewCollector returns a Collector whose metrics are named
// <namespace>_remote_*.
func NewCollector(namespace string) *Collector {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "remote", n) }
	labels := []string{"image"}
	c := &Collector{
		sources:   map[string]func() remote.Stats{},
		images:    prometheus.NewDesc(name("images"), "Remote images open.", nil, nil),
		inFlight:  prometheus.NewDesc(name("requests_in_flight"), "Range requests in progress.", labels, nil),
		errors:    prometheus.NewDesc(name("errors_total"), "Range requests given up on (transient ones after retries), by kind.", []string{"image", "kind"}, nil),
		latency:   prometheus.NewDesc(name("request_seconds"), "Duration of range requests, from the request to the last byte.", labels, nil),
		faultWait: prometheus.NewDesc(name("fault_wait_seconds"), "How long urgent requests (faults) waited for their first page.", labels, nil),
	}
	for _, m := range []struct {
		n, help string
		get     func(*remote.Stats) uint64
	}{
		{"requests_total", "Range requests sent, retries included.", func(s *remote.Stats) uint64 { return s.Requests }},
		{"fetched_bytes_total", "Bytes brought by range requests.", func(s *remote.Stats) uint64 { return s.Bytes }},
		{"cache_hits_total", "Chunks asked for that were already in the cache.", func(s *remote.Stats) uint64 { return s.Hits }},
		{"cache_misses_total", "Chunks fetched by this process.", func(s *remote.Stats) uint64 { return s.Misses }},
		{"cache_peer_waits_total", "Chunks another process was fetching, waited for.", func(s *remote.Stats) uint64 { return s.PeerWaits }},
		{"cache_evictions_total", "Chunks evicted from the cache directory by this process.", func(s *remote.Stats) uint64 { return s.Evictions }},
		{"retries_total", "Range request attempts retried after a transient failure.", func(s *remote.Stats) uint64 { return s.Retries }},
	} {
		c.counts = append(c.counts, counter{prometheus.NewDesc(name(m.n), m.help, labels, nil), m.get})
	}
	return c
}

// Add starts exporting the statistics that stats returns (an Image's
// Stats method) under the label value name, replacing any of that name.
func (c *Collector) Add(name string, stats func() remote.Stats) {
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
	for _, d := range []*prometheus.Desc{c.images, c.inFlight, c.errors, c.latency, c.faultWait} {
		ch <- d
	}
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
	fns := make([]func() remote.Stats, len(names))
	for i, n := range names {
		fns[i] = c.sources[n]
	}
	c.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(c.images, prometheus.GaugeValue, float64(len(names)))
	for i, name := range names {
		s := fns[i]()
		for _, m := range c.counts {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.get(&s)), name)
		}
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(s.InFlight), name)
		for k := remote.KindTransient; k <= remote.KindOther; k++ {
			ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(s.Errors[k]), name, k.String())
		}
		ch <- pagermetrics.Histogram(c.latency, &s.Latency, name)
		ch <- pagermetrics.Histogram(c.faultWait, &s.FaultWait, name)
	}
}
