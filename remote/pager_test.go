//go:build cgo && linux

package remote_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/remote"
)

// TestPagerServesImage: a remote image served through the pager's
// engine, faulting from inside system calls in a random order from two
// goroutines: every byte arrives, pages known to be zero (from the index)
// are never fetched, and each chunk is fetched once.
func TestPagerServesImage(t *testing.T) {
	const size = 16 << 20
	img := makeImage(size, 7)
	e := newHTTP(t, true, false)
	url := e.put(t, "mem", img)
	if _, err := remote.WriteIndexFile(context.Background(), filepath.Join(e.dir, "mem"), 1<<20); err != nil {
		t.Fatal(err)
	}
	cache, err := remote.OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	im, err := remote.Open(context.Background(), url, remote.Config{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.Index() == nil {
		t.Fatal("the image's index was not read")
	}

	m, err := mem.Map(mem.Anonymous, size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventRemove})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	p, err := pager.New(u, pager.Config{Prefetch: pager.Adaptive(), OnError: func(err error) { t.Errorf("pager: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: im, OnError: pager.WaitOnError}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	<-p.Serving()

	pages := rand.New(rand.NewPCG(1, 2)).Perm(size / 4096)
	var wg sync.WaitGroup
	errs := make(chan string, 2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var pp [2]int
			if err := unix.Pipe2(pp[:], unix.O_CLOEXEC); err != nil {
				errs <- err.Error()
				return
			}
			defer unix.Close(pp[0])
			defer unix.Close(pp[1])
			var b [8]byte
			for k := g; k < len(pages); k += 2 {
				off := pages[k] * 4096
				// write(2) copies from the page: a fault inside the
				// system call, as a VM's device emulation takes it.
				if _, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(pp[1]), uintptr(unsafe.Pointer(&m.Data[off])), 8); e != 0 {
					errs <- e.Error()
					return
				}
				unix.Read(pp[0], b[:])
				for i := range 8 {
					if b[i] != img[off+i] {
						errs <- "wrong bytes"
						return
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the faults were not all served")
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < size; i += 4096 {
		if m.Data[i+9] != img[i+9] {
			t.Fatalf("page %d differs from the image", i/4096)
		}
	}
	// Bytes fetched: each non-zero chunk once.
	var nonzero int64
	for c := 0; c < size; c += 1 << 20 {
		for _, v := range img[c : c+1<<20] {
			if v != 0 {
				nonzero += 1 << 20
				break
			}
		}
	}
	var got int64
	for _, r := range e.proxy.Requests() {
		var a, b int64
		if r.Method == "GET" && r.Path == "/mem" {
			if n, _ := fmt.Sscanf(r.Range, "bytes=%d-%d", &a, &b); n == 2 {
				got += b - a + 1
			}
		}
	}
	if got > nonzero*105/100 || got < nonzero {
		t.Errorf("fetched %d bytes for %d bytes of non-zero chunks", got, nonzero)
	}
	if st := p.Stats(); st.Zeroed == 0 {
		t.Error("no page was zero-filled: the index's zero pages were fetched")
	}
}
