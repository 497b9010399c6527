package pager_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// pattern returns n bytes where each page holds its index and offset.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/4096*7 + i%251 + 1)
	}
	return b
}

// setup maps pages of kind, opens a userfaultfd with features and
// registers the mapping in MISSING mode.
func setup(t *testing.T, kind mem.Kind, size int, features uffd.Feature) (*uffd.UFFD, *mem.Mapping) {
	t.Helper()
	if kind.Huge() {
		testutil.ReserveHugePagesFor(t, kind, size)
	}
	m, err := mem.Map(kind, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	u, err := uffd.Open(uffd.Config{Features: features})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	return u, m
}

// serving runs p.Serve until the test ends, and fails the test if Serve
// returns an error.
func serving(t *testing.T, p *pager.Pager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Serve(ctx); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return 10 s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// touch reads one byte of every page of data with plain loads, from
// goroutines, and returns the bytes read (never copy() on registered
// memory: see the package documentation).
//
//go:noinline
func load(b []byte, i int) byte { return b[i] }

// checkAll compares every byte of data with want, loading byte by byte.
func checkAll(t *testing.T, data, want []byte) {
	t.Helper()
	bad := 0
	for i := range data {
		if got := load(data, i); got != want[i] {
			if bad < 5 {
				t.Errorf("byte %d (page %d) = %#x, want %#x", i, i/4096, got, want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d bytes differ", bad)
	}
}
