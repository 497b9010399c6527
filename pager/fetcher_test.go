//go:build cgo && linux

package pager_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// slowFetcher is a Fetcher whose bytes arrive from a goroutine a page at a
// time, in the order asked, when the test lets them (step). It counts the
// pages it was asked for.
type slowFetcher struct {
	img   []byte
	st    pager.CacheState
	step  chan struct{} // one receive per page delivered; nil: no waiting
	asked atomic.Int64
	fail  atomic.Int32 // fail this many fetches first

	mu  sync.Mutex
	log []int64 // offsets asked, in order
}

func newSlowFetcher(img []byte, zero []int) *slowFetcher {
	pages := (len(img) + 4095) / 4096
	f := &slowFetcher{img: img}
	f.st = pager.CacheState{
		Data:       make([]byte, len(img)),
		Present:    make([]uint64, (pages+63)/64),
		Zero:       make([]uint64, (pages+63)/64),
		Pins:       make([]int32, (len(img)>>16)+1),
		ChunkShift: 16,
	}
	for _, z := range zero {
		f.st.Zero[z/64] |= 1 << (z % 64)
	}
	return f
}

func (f *slowFetcher) Size() int64                       { return int64(len(f.img)) }
func (f *slowFetcher) ReadAt([]byte, int64) (int, error) { return 0, errors.New("not read") }
func (f *slowFetcher) State() pager.CacheState           { return f.st }

func (f *slowFetcher) Fetch(off, n int64, urgent bool, arrived func(off, n int64, err error)) {
	f.asked.Add(n / 4096)
	f.mu.Lock()
	f.log = append(f.log, off)
	f.mu.Unlock()
	go func() {
		if f.fail.Add(-1) >= 0 {
			arrived(off, n, errors.New("the server is down"))
			return
		}
		for o := off; o < off+n; o += 4096 {
			if f.step != nil {
				<-f.step
			}
			copy(f.st.Data[o:o+4096], f.img[o:o+4096])
			i := o / 4096
			atomicOr(&f.st.Present[i/64], 1<<(i%64))
			arrived(o, 4096, nil)
		}
	}()
}

func atomicOr(w *uint64, m uint64) {
	for {
		old := atomic.LoadUint64(w)
		if atomic.CompareAndSwapUint64(w, old, old|m) {
			return
		}
	}
}

// TestFetcherEarlyPage: a fault is served as soon as its own page has
// arrived, before the rest of what was asked; pages marked zero are never
// fetched.
func TestFetcherEarlyPage(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const pages = 32
		img := pattern(pages * 4096)
		for i := 20; i < 24; i++ {
			clear(img[i*4096 : (i+1)*4096])
		}
		f := newSlowFetcher(img, []int{20, 21, 22, 23})
		f.step = make(chan struct{})
		u, m := setup(t, mem.Anonymous, pages*4096, 0)
		p := newPager(t, u, e.with(t, pager.Config{Prefetch: pager.Fixed(16 * 4096)}))
		add(t, p, m, f, pager.WaitOnError)
		serving(t, p)
		k := newKernelTouch(t)
		got := make(chan byte, 1)
		go func() { b, _ := k.read(m.Data, 100); got <- b }()
		// The fault asks for its 16-page block; let one page arrive.
		eventually(t, "the fetch was asked", func() bool { return f.asked.Load() > 0 })
		f.step <- struct{}{}
		select {
		case b := <-got:
			if b != img[100] {
				t.Fatalf("byte = %#x, want %#x", b, img[100])
			}
		case <-time.After(hangLimit):
			t.Fatal("the faulting page was not installed when its bytes arrived")
		}
		close(f.step)
		checkAll(t, m.Data, img)
		if st := p.Stats(); st.Zeroed != 4 {
			t.Errorf("Zeroed = %d, want the 4 pages known to be zero", st.Zeroed)
		}
		if n := f.asked.Load(); n != pages-4 {
			t.Errorf("%d pages were fetched, want %d (zero pages never)", n, pages-4)
		}
	})
}

// TestFetcherRetry: a fetch that fails is retried; the thread waits, and
// is never served zeroes.
func TestFetcherRetry(t *testing.T) {
	const pages = 4
	img := pattern(pages * 4096)
	f := newSlowFetcher(img, nil)
	f.fail.Store(3)
	u, m := setup(t, mem.Anonymous, pages*4096, 0)
	var reported atomic.Int64
	p := newPager(t, u, pager.Config{Retry: pager.Retry{Backoff: time.Millisecond}, OnError: func(err error) {
		if errors.Is(err, pager.ErrSource) {
			reported.Add(1)
		}
	}})
	add(t, p, m, f, pager.WaitOnError)
	serving(t, p)
	k := newKernelTouch(t)
	within(t, "reading a page fetched after failures", func() {
		if b, err := k.read(m.Data, 4097); err != nil || b != img[4097] {
			t.Errorf("byte = %#x (%v), want %#x", b, err, img[4097])
		}
	})
	if reported.Load() < 3 || p.Stats().Retries < 3 {
		t.Errorf("%d failures reported, %d retries; want 3 each at least", reported.Load(), p.Stats().Retries)
	}
}
