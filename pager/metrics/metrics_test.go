package metrics_test

import (
	"reflect"
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

// distinctStats returns Stats whose counters are 1000+i for field i and
// whose histogram holds one duration in bucket 12.
func distinctStats(t *testing.T) (pager.Stats, map[uint64]string) {
	t.Helper()
	var st pager.Stats
	v := reflect.ValueOf(&st).Elem()
	fields := map[uint64]string{}
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Uint64 {
			f.SetUint(uint64(1000 + i))
			fields[uint64(1000+i)] = v.Type().Field(i).Name
		}
	}
	st.Latency.Buckets[12] = 1
	return st, fields
}

// TestVocabulary: every counter of pager.Stats is exported exactly once,
// under one name, by Stats, and the histogram holds Latency.
func TestVocabulary(t *testing.T) {
	st, fields := distinctStats(t)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(statsCollector{metrics.NewStats("x", "y"), st}); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	var hist bool
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				hist = mf.GetName() == "x_y_fault_service_seconds" && h.GetSampleCount() == 1
				continue
			}
			v := uint64(m.GetCounter().GetValue())
			field, ok := fields[v]
			if !ok {
				t.Errorf("%s %v: value %d is no field's", mf.GetName(), m.GetLabel(), v)
				continue
			}
			if prev, dup := seen[field]; dup {
				t.Errorf("Stats.%s exported twice: %s and %s", field, prev, mf.GetName())
			}
			seen[field] = mf.GetName()
		}
	}
	for _, f := range fields {
		if _, ok := seen[f]; !ok {
			t.Errorf("Stats.%s is not exported", f)
		}
	}
	if !hist {
		t.Error("no histogram x_y_fault_service_seconds holding Stats.Latency")
	}
}

type statsCollector struct {
	m  *metrics.Stats
	st pager.Stats
}

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) { c.m.Describe(ch) }
func (c statsCollector) Collect(ch chan<- prometheus.Metric) { c.m.Collect(ch, &c.st) }

// TestStatsAdd: Add sums every counter and every histogram bucket.
func TestStatsAdd(t *testing.T) {
	a, _ := distinctStats(t)
	b, _ := distinctStats(t)
	b.Latency.Buckets[39] = 5
	sum := a
	sum.Add(b)
	va, vs := reflect.ValueOf(a), reflect.ValueOf(sum)
	for i := range va.NumField() {
		if va.Field(i).Kind() == reflect.Uint64 && vs.Field(i).Uint() != 2*va.Field(i).Uint() {
			t.Errorf("Add: %s = %d, want %d", va.Type().Field(i).Name, vs.Field(i).Uint(), 2*va.Field(i).Uint())
		}
	}
	if sum.Latency.Buckets[12] != 2 || sum.Latency.Buckets[39] != 5 || sum.Latency.Count() != 7 {
		t.Errorf("Add: histogram %v", sum.Latency.Buckets)
	}
}
