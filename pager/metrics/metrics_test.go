package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/pager/metrics"
)

func TestCollector(t *testing.T) {
	c := metrics.NewCollector("uffd")
	st := pager.Stats{Faults: 7, Pages: 9, Bytes: 9 * 4096, Removes: 1}
	st.Latency.Buckets[14] = 3 // [16.4, 32.8) us
	st.Latency.Buckets[20] = 1 // [1.05, 2.1) ms
	c.Add("vm-1", func() pager.Stats { return st })
	c.Add("vm-2", func() pager.Stats { return pager.Stats{Faults: 1} })

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP uffd_pager_faults_total Page-fault messages read, repeats included.
# TYPE uffd_pager_faults_total counter
uffd_pager_faults_total{pager="vm-1"} 7
uffd_pager_faults_total{pager="vm-2"} 1
# HELP uffd_pager_pagers Pagers being served.
# TYPE uffd_pager_pagers gauge
uffd_pager_pagers 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "uffd_pager_faults_total", "uffd_pager_pagers"); err != nil {
		t.Fatal(err)
	}
	// The histogram: 3 at or below 32.768 us, all 4 at or below 2.097 ms.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mf := range mfs {
		if mf.GetName() != "uffd_pager_fault_service_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() != "vm-1" {
				continue
			}
			found = true
			h := m.GetHistogram()
			if h.GetSampleCount() != 4 {
				t.Errorf("count %d, want 4", h.GetSampleCount())
			}
			for _, b := range h.GetBucket() {
				ub := b.GetUpperBound()
				switch {
				case ub < 16e-6 && b.GetCumulativeCount() != 0,
					ub > 32e-6 && ub < 33e-6 && b.GetCumulativeCount() != 3,
					ub > 2e-3 && b.GetCumulativeCount() != 4:
					t.Errorf("bucket le=%g holds %d", ub, b.GetCumulativeCount())
				}
			}
		}
	}
	if !found {
		t.Fatal("no latency histogram for vm-1")
	}
	c.Remove("vm-2")
	if n := testutil.CollectAndCount(c, "uffd_pager_faults_total"); n != 1 {
		t.Errorf("%d fault series after Remove, want 1", n)
	}
}
