package pager_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// benchServe measures the fault path: one goroutine touches one byte of
// each page (a plain store) and the pager serves it. b.N pages.
func benchServe(b *testing.B, cfg pager.Config, features uffd.Feature) {
	size := max(b.N, 1) * 4096
	m, err := mem.Map(mem.Anonymous, size)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	u, err := uffd.Open(uffd.Config{Features: features})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		b.Fatal(err)
	}
	p, err := pager.New(u, cfg)
	if err != nil {
		b.Fatal(err)
	}
	// A source in memory, as the C reference's (memory never touched
	// would make each copy fault on its source page first).
	img := pattern(size)
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(img)}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	<-p.Serving()
	b.SetBytes(4096)
	b.ResetTimer()
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := 0; i < b.N; i++ {
			m.Data[i*4096] = 1
		}
		close(done)
	}()
	<-done
	b.StopTimer()
	cancel()
	if err := <-served; err != nil {
		b.Fatal(err)
	}
	st := p.Stats()
	b.ReportMetric(float64(st.Latency.Quantile(0.5).Nanoseconds()), "p50-ns")
}

// Readers blocking in read(2) (no events), and in epoll (events ordered).
func BenchmarkServe(b *testing.B)       { benchServe(b, pager.Config{}, 0) }
func BenchmarkServeEvents(b *testing.B) { benchServe(b, pager.Config{}, uffd.FeatureEventRemove) }
func BenchmarkServe64K(b *testing.B)    { benchServe(b, pager.Config{Prefetch: pager.Fixed(64 << 10)}, 0) }
func BenchmarkServeAdaptive(b *testing.B) {
	benchServe(b, pager.Config{Prefetch: pager.Adaptive()}, 0)
}
