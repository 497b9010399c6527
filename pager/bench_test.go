package pager_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// benchServe measures the fault path: one locked goroutine touches one
// byte of each page (a plain store) and the pager serves it. b.N pages.
func benchServe(b *testing.B, cfg pager.Config) {
	size := max(b.N, 1) * 4096
	m, err := mem.Map(mem.Anonymous, size)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		b.Fatal(err)
	}
	p := pager.New(u, cfg)
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(make([]byte, size))}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
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

func BenchmarkServePoller(b *testing.B) { benchServe(b, pager.Config{}) }
func BenchmarkServeThread(b *testing.B) { benchServe(b, pager.Config{Reader: pager.ReaderThread}) }
func BenchmarkServe64K(b *testing.B)    { benchServe(b, pager.Config{Prefetch: pager.Fixed(64 << 10)}) }
func BenchmarkServeAdaptive(b *testing.B) {
	benchServe(b, pager.Config{Prefetch: pager.Adaptive()})
}
