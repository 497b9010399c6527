//go:build linux && cgo

package snapshot_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pagemap"
	"github.com/gouffd/uffd/snapshot"
)

// The cost of tracking writes between snapshots, both ways: the first
// write to each page after a snapshot (a) with the Snapshotter's tracking,
// a synchronous write-protect fault answered in C by the engine, and (b)
// with UFFD_FEATURE_WP_ASYNC, where the kernel answers the fault itself
// and PAGEMAP_SCAN collects the written pages. Reported per page written;
// "collect" is the time to gather the dirty set and protect it again
// (a: part of the next snapshot's arming; b: one PAGEMAP_SCAN with
// WPMatching).

const trackPages = 4096

type discard struct{}

func (discard) WriteAt(b []byte, off int64) (int, error) { return len(b), nil }

func touchAll(m *mem.Mapping) {
	p := words(m.Data)
	for i := 0; i < len(p); i += m.PageSize / 8 {
		atomic.AddUint64(&p[i], 1)
	}
}

func BenchmarkTrackSync(b *testing.B) {
	m, err := mem.Map(mem.Anonymous, trackPages*mem.PageSize())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	fill(m.Data)
	u, err := uffd.Open(uffd.Config{Features: snapshot.Features(false)})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	s, err := snapshot.New(u, snapshot.Config{Track: true, Regions: []snapshot.Region{{Start: m.Addr(), Len: m.Len()}}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Take(context.Background(), discard{}); err != nil {
		b.Fatal(err)
	}
	var write, collect time.Duration
	for b.Loop() {
		t0 := time.Now()
		touchAll(m)
		t1 := time.Now()
		res, err := s.Take(context.Background(), discard{})
		if err != nil {
			b.Fatal(err)
		}
		if res.Pages != trackPages {
			b.Fatalf("the diff has %d pages, want %d", res.Pages, trackPages)
		}
		write += t1.Sub(t0)
		collect += res.Arm
	}
	b.ReportMetric(float64(write.Nanoseconds())/float64(b.N*trackPages), "ns/page-write")
	b.ReportMetric(float64(collect.Nanoseconds())/float64(b.N*trackPages), "ns/page-collect")
}

func BenchmarkTrackAsync(b *testing.B) {
	m, err := mem.Map(mem.Anonymous, trackPages*mem.PageSize())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	fill(m.Data)
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureWPAsync | uffd.FeatureWPFaults | uffd.FeatureWPUnpopulated})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeWriteProtect); err != nil {
		b.Fatal(err)
	}
	if err := u.WriteProtect(m.Addr(), m.Len(), true, 0); err != nil {
		b.Fatal(err)
	}
	pm, err := pagemap.OpenSelf()
	if err != nil {
		b.Fatal(err)
	}
	defer pm.Close()
	regions := make([]pagemap.Region, 64)
	opts := &pagemap.ScanOptions{Mask: pagemap.Written, Return: pagemap.Written, WPMatching: true}
	var write, collect time.Duration
	for b.Loop() {
		t0 := time.Now()
		touchAll(m)
		t1 := time.Now()
		n, _, err := pm.ScanInto(regions, m.Addr(), m.Addr()+m.Len(), opts)
		t2 := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		var got uintptr
		for _, r := range regions[:n] {
			got += r.Len()
		}
		if got != m.Len() {
			b.Fatalf("PAGEMAP_SCAN found %d bytes written, want %d", got, m.Len())
		}
		write += t1.Sub(t0)
		collect += t2.Sub(t1)
	}
	b.ReportMetric(float64(write.Nanoseconds())/float64(b.N*trackPages), "ns/page-write")
	b.ReportMetric(float64(collect.Nanoseconds())/float64(b.N*trackPages), "ns/page-collect")
}
