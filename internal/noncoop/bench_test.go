//go:build linux

package noncoop

import (
	"slices"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// BenchmarkEventResume measures how long a process that raises a
// non-cooperative event waits in the system call until the monitor, a
// pager in this process, has read the event: madvise(MADV_DONTNEED) of a
// page (REMOVE) and mremap of 4 pages (REMAP, then the UNMAP of the old
// range). The helper times each call itself; ns/op is the mean wait, with
// the median and the 99th percentile alongside. The "unregistered"
// variants are the same calls on memory no userfaultfd watches.
func BenchmarkEventResume(b *testing.B) {
	requireFeatures(b, layoutEvents)
	for _, which := range []string{"remove", "remap"} {
		for _, registered := range []bool{true, false} {
			name := which
			if !registered {
				name += "-unregistered"
			}
			b.Run(name, func(b *testing.B) { benchEventResume(b, which, registered) })
		}
	}
}

func benchEventResume(b *testing.B, which string, registered bool) {
	h := startHelper(b)
	mode := uffd.ModeMissing
	if !registered {
		mode = 0
	}
	u, l := h.setup(mem.Anonymous, 4, layoutEvents, mode)
	p := newPager(b, u, pager.Config{})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: pager.Zero(int64(l.Len))}); err != nil {
		b.Fatal(err)
	}
	servePager(b, p)
	// Warm up both sides.
	h.do(command{Op: "latency", Rounds: 10, Which: which})
	b.ResetTimer()
	r := h.do(command{Op: "latency", Rounds: b.N, Which: which})
	b.StopTimer()
	ns := r.Remove
	if which == "remap" {
		ns = r.Remap
	}
	if len(ns) != b.N {
		b.Fatalf("%d timings, want %d", len(ns), b.N)
	}
	slices.Sort(ns)
	var sum int64
	for _, v := range ns {
		sum += v
	}
	b.ReportMetric(float64(sum)/float64(len(ns)), "ns/op")
	b.ReportMetric(float64(ns[len(ns)/2]), "p50-ns")
	b.ReportMetric(float64(ns[len(ns)*99/100]), "p99-ns")
	if registered {
		s := p.Stats()
		if which == "remove" && s.Removes == 0 || which == "remap" && s.Remaps == 0 {
			b.Errorf("the pager saw no %s event: %+v", which, s)
		}
	}
}
