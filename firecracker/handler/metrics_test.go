//go:build linux

package handler_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/pager/metrics"
)

// gather collects c and returns its series' values by family and first
// label's value ("" for none; histograms count their samples).
func gather(t *testing.T, c prometheus.Collector) map[string]map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, mf := range mfs {
		series := map[string]float64{}
		for _, m := range mf.GetMetric() {
			label := ""
			if l := m.GetLabel(); len(l) > 0 {
				label = l[0].GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				series[label] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				series[label] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				series[label] = float64(m.GetHistogram().GetSampleCount())
			}
		}
		out[mf.GetName()] = series
	}
	return out
}

// TestMetricNames: the daemon's pager metrics have the names package
// pager/metrics gives every pager.Stats (one vocabulary), and every
// rejection and end reason has its series from the start, at 0.
func TestMetricNames(t *testing.T) {
	s, err := handler.New(handler.Config{Memory: pager.Image(make([]byte, 1<<20))})
	if err != nil {
		t.Fatal(err)
	}
	got := gather(t, s.Collector())
	pagerNames := gather(t, statsOnly{metrics.NewStats("uffd", "pager")})
	for name := range pagerNames {
		want := "uffd_firecracker_" + strings.TrimPrefix(name, "uffd_pager_")
		if got[want] == nil {
			t.Errorf("pager metric %s has no daemon twin %s", name, want)
		}
	}
	for _, old := range []string{"uffd_firecracker_page_exists_total", "uffd_firecracker_fault_latency_seconds", "uffd_firecracker_faults_outside_total"} {
		if got[old] != nil {
			t.Errorf("%s: a second name for a pager counter", old)
		}
	}
	for family, reasons := range map[string][]string{
		"uffd_firecracker_connections_rejected_total": handler.Reasons,
		"uffd_firecracker_vms_ended_total":            handler.EndReasons,
	} {
		series := got[family]
		for _, r := range reasons {
			if v, ok := series[r]; !ok || v != 0 {
				t.Errorf("%s{reason=%q}: %v, %v; want the series at 0 from the start", family, r, v, ok)
			}
		}
	}
}

type statsOnly struct{ m *metrics.Stats }

func (s statsOnly) Describe(ch chan<- *prometheus.Desc) { s.m.Describe(ch) }
func (s statsOnly) Collect(ch chan<- prometheus.Metric) { var st pager.Stats; s.m.Collect(ch, &st) }
