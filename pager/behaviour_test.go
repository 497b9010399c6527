package pager_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// add adds a region covering m served from src, failing the test on error.
func add(t *testing.T, p *pager.Pager, m *mem.Mapping, src pager.Source, policy pager.ErrorPolicy) {
	t.Helper()
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), PageSize: m.PageSize, Source: src, OnError: policy}); err != nil {
		t.Fatal(err)
	}
}

func TestServeKinds(t *testing.T) {
	for _, kind := range []mem.Kind{mem.Anonymous, mem.Shmem, mem.ShmemPrivate, mem.Hugetlb, mem.HugetlbPrivate} {
		t.Run(kind.String(), func(t *testing.T) {
			size := 4 << 20
			u, m := setup(t, kind, size, 0)
			img := pattern(size)
			p := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
			add(t, p, m, pager.Image(img), pager.PoisonOnError)
			stop := serving(t, p)
			checkAll(t, m.Data, img)
			stop()
			if st := p.Stats(); st.Pages != uint64(size/m.PageSize) {
				t.Errorf("Pages = %d, want %d", st.Pages, size/m.PageSize)
			}
		})
	}
}

// TestSamePageRace has several goroutines fault on the same pages at once:
// each page is resolved once, and every goroutine reads the right bytes.
func TestSamePageRace(t *testing.T) {
	// A goroutine blocked in a fault keeps its P: leave one for every
	// faulting goroutine and worker, or they wait for the scheduler's
	// preemption (see the package documentation).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprint("workers=", workers), func(t *testing.T) {
			const pages = 256
			u, m := setup(t, mem.Anonymous, pages*4096, uffd.FeatureEventRemove)
			img := pattern(pages * 4096)
			var reads atomic.Int64
			src := pager.Func(int64(len(img)), func(b []byte, off int64) error {
				reads.Add(int64(len(b) / 4096))
				copy(b, img[off:])
				return nil
			})
			p := pager.New(u, pager.Config{Workers: workers})
			add(t, p, m, src, pager.PoisonOnError)
			stop := serving(t, p)
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range pages {
						off := i*4096 + g*17
						if got := load(m.Data, off); got != img[off] {
							errs <- fmt.Errorf("goroutine %d: byte %d = %#x, want %#x", g, off, got, img[off])
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			stop()
			st := p.Stats()
			if st.Pages != pages {
				t.Errorf("Pages = %d, want %d: a page was installed twice", st.Pages, pages)
			}
			if n := reads.Load(); n != pages {
				t.Errorf("the source was read for %d pages, want %d (each once)", n, pages)
			}
			t.Logf("faults %d, exists %d", st.Faults, st.Exists)
		})
	}
}

// TestRemoveThenRefault: a range the process drops (MADV_DONTNEED, the
// balloon case) reads back as zeroes, not as the source's contents.
func TestRemoveThenRefault(t *testing.T) {
	for _, kind := range []mem.Kind{mem.Anonymous, mem.HugetlbPrivate} {
		t.Run(kind.String(), func(t *testing.T) {
			size := 8 << 20
			u, m := setup(t, kind, size, uffd.FeatureEventRemove)
			img := pattern(size)
			p := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
			add(t, p, m, pager.Image(img), pager.PoisonOnError)
			stop := serving(t, p)
			checkAll(t, m.Data, img)
			// Drop the middle quarter.
			lo, hi := size/4, size/2
			if err := unix.Madvise(m.Data[lo:hi], unix.MADV_DONTNEED); err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), img...)
			clear(want[lo:hi])
			checkAll(t, m.Data, want)
			stop()
			st := p.Stats()
			if st.Removes != 1 || st.Zeroed != uint64((hi-lo)/m.PageSize) {
				t.Errorf("Removes = %d, Zeroed = %d; want 1 and %d", st.Removes, st.Zeroed, (hi-lo)/m.PageSize)
			}
		})
	}
}

// TestRemoveWhileServing drops ranges while other goroutines fault: every
// byte read is either the source's (before the drop) or zero (after), and
// after the drops return, the dropped ranges read zero.
func TestRemoveWhileServing(t *testing.T) {
	const pages = 1024
	u, m := setup(t, mem.Anonymous, pages*4096, uffd.FeatureEventRemove)
	img := pattern(pages * 4096)
	p := pager.New(u, pager.Config{Prefetch: pager.Fixed(64 << 10), Workers: 2})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	stop := serving(t, p)
	var wg sync.WaitGroup
	var bad atomic.Int64
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 4 * pages {
				off := r.IntN(pages) * 4096
				if got := load(m.Data, off); got != img[off] && got != 0 {
					bad.Add(1)
				}
			}
		}()
	}
	dropped := make([]bool, pages)
	r := rand.New(rand.NewPCG(9, 9))
	for range 32 {
		i := r.IntN(pages - 8)
		if err := unix.Madvise(m.Data[i*4096:(i+8)*4096], unix.MADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		for k := i; k < i+8; k++ {
			dropped[k] = true
		}
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d reads returned neither the source's byte nor zero", n)
	}
	// The last drop of each page happened after any copy of it, and no
	// page was touched since by anyone but the random readers, whose
	// faults got zeroes: pages dropped must now read zero unless they
	// were refaulted... which also gives zero. So dropped pages are zero.
	for i, d := range dropped {
		if d {
			if got := load(m.Data, i*4096); got != 0 {
				t.Errorf("page %d was dropped but reads %#x", i, got)
			}
		}
	}
	stop()
}

// flaky fails its first n reads of each offset.
type flaky struct {
	img   []byte
	fails int
	mu    sync.Mutex
	seen  map[int64]int
	calls atomic.Int64
}

func (f *flaky) Size() int64 { return int64(len(f.img)) }
func (f *flaky) ReadAt(b []byte, off int64) (int, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.seen[off]++
	n := f.seen[off]
	f.mu.Unlock()
	if f.fails < 0 || n <= f.fails {
		return 0, errors.New("backend unavailable")
	}
	return copy(b, f.img[off:]), nil
}

func TestSourceFailureRetried(t *testing.T) {
	const pages = 4
	u, m := setup(t, mem.Anonymous, pages*4096, 0)
	img := pattern(pages * 4096)
	src := &flaky{img: img, fails: 2, seen: map[int64]int{}}
	var reported atomic.Int64
	p := pager.New(u, pager.Config{Retry: pager.Retry{Attempts: 5, Backoff: time.Millisecond}, OnError: func(err error) {
		if !errors.Is(err, pager.ErrSource) {
			t.Errorf("reported %v, want an error matching ErrSource", err)
		}
		reported.Add(1)
	}})
	add(t, p, m, src, pager.PoisonOnError)
	stop := serving(t, p)
	checkAll(t, m.Data, img)
	stop()
	st := p.Stats()
	if st.Retries == 0 || st.SourceErrors != 0 || st.Poisoned != 0 {
		t.Errorf("Retries %d, SourceErrors %d, Poisoned %d: want retries and no final failure", st.Retries, st.SourceErrors, st.Poisoned)
	}
	if reported.Load() == 0 {
		t.Error("the failures were not reported")
	}
}

// sigbusLoad loads b[i] and reports whether it raised SIGBUS.
func sigbusLoad(b []byte, i int) (sigbus bool) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			sigbus = true
		}
	}()
	load(b, i)
	return false
}

func TestSourceFailurePoisons(t *testing.T) {
	u, m := setup(t, mem.Anonymous, 2*4096, uffd.FeaturePoison)
	src := &flaky{img: pattern(2 * 4096), fails: -1, seen: map[int64]int{}}
	var final atomic.Int64
	p := pager.New(u, pager.Config{Retry: pager.Retry{Attempts: 3, Backoff: time.Millisecond}, OnError: func(error) { final.Add(1) }})
	add(t, p, m, src, pager.PoisonOnError)
	stop := serving(t, p)
	done := make(chan bool)
	go func() { done <- sigbusLoad(m.Data, 5) }()
	select {
	case sig := <-done:
		if !sig {
			t.Fatal("a page the source cannot deliver was served instead of raising SIGBUS")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the faulting thread was never answered")
	}
	stop()
	if st := p.Stats(); st.Poisoned != 1 || st.SourceErrors != 1 {
		t.Errorf("Poisoned %d, SourceErrors %d; want 1 and 1", st.Poisoned, st.SourceErrors)
	}
}

// TestSourceFailureWaits: with WaitOnError the thread waits, never served
// zeroes, until the source recovers.
func TestSourceFailureWaits(t *testing.T) {
	u, m := setup(t, mem.Anonymous, 2*4096, uffd.FeaturePoison)
	img := pattern(2 * 4096)
	var healthy atomic.Bool
	src := pager.Func(int64(len(img)), func(b []byte, off int64) error {
		if !healthy.Load() {
			return errors.New("down")
		}
		copy(b, img[off:])
		return nil
	})
	p := pager.New(u, pager.Config{Retry: pager.Retry{Attempts: 2, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}})
	add(t, p, m, src, pager.WaitOnError)
	stop := serving(t, p)
	got := make(chan byte, 1)
	go func() { got <- load(m.Data, 100) }()
	select {
	case b := <-got:
		t.Fatalf("the fault returned %#x while the source was down", b)
	case <-time.After(100 * time.Millisecond):
	}
	healthy.Store(true)
	select {
	case b := <-got:
		if b != img[100] {
			t.Fatalf("byte = %#x, want %#x", b, img[100])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not served after the source recovered")
	}
	stop()
	if st := p.Stats(); st.SourceErrors == 0 || st.Poisoned != 0 {
		t.Errorf("SourceErrors %d, Poisoned %d; want >0 and 0", st.SourceErrors, st.Poisoned)
	}
}

// TestShutdownWithPendingFault: Serve returns promptly while a fault waits
// on a source that hangs; closing the userfaultfd then releases the thread.
func TestShutdownWithPendingFault(t *testing.T) {
	for _, reader := range []pager.Reader{pager.ReaderPoller, pager.ReaderThread} {
		t.Run(reader.String(), func(t *testing.T) {
			m, err := mem.Map(mem.Anonymous, 4096)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			u, err := uffd.Open(uffd.Config{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			src := pager.Func(4096, func(b []byte, off int64) error {
				<-release
				return errors.New("released")
			})
			p := pager.New(u, pager.Config{Reader: reader, Retry: pager.Retry{Attempts: 1}})
			add(t, p, m, src, pager.WaitOnError)
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- p.Serve(ctx) }()
			got := make(chan byte, 1)
			go func() { got <- load(m.Data, 0) }()
			time.Sleep(50 * time.Millisecond) // the fault reaches the source
			cancel()
			close(release)
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return after its context ended")
			}
			u.Close() // the thread faults again as unregistered memory
			select {
			case b := <-got:
				if b != 0 {
					t.Fatalf("byte = %#x after close, want 0", b)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the faulting thread was not released by Close")
			}
		})
	}
}

// TestCloseEndsServe: closing the userfaultfd ends Serve without error.
func TestCloseEndsServe(t *testing.T) {
	for _, reader := range []pager.Reader{pager.ReaderPoller, pager.ReaderThread} {
		t.Run(reader.String(), func(t *testing.T) {
			u, err := uffd.Open(uffd.Config{})
			if err != nil {
				t.Fatal(err)
			}
			p := pager.New(u, pager.Config{Reader: reader})
			served := make(chan error, 1)
			go func() { served <- p.Serve(context.Background()) }()
			time.Sleep(20 * time.Millisecond)
			u.Close()
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return after Close")
			}
		})
	}
}

func TestServeTwice(t *testing.T) {
	u, _ := setup(t, mem.Anonymous, 4096, 0)
	p := pager.New(u, pager.Config{})
	serving(t, p)
	time.Sleep(10 * time.Millisecond)
	if err := p.Serve(context.Background()); !errors.Is(err, pager.ErrServing) {
		t.Fatalf("second Serve: %v, want ErrServing", err)
	}
}

func TestFill(t *testing.T) {
	const size = 8 << 20
	u, m := setup(t, mem.Anonymous, size, 0)
	img := pattern(size)
	p := pager.New(u, pager.Config{Fill: true})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	stop := serving(t, p)
	// Touch a few pages while the fill runs: they are served first.
	for i := 0; i < size; i += size / 8 {
		if got := load(m.Data, i+3); got != img[i+3] {
			t.Fatalf("byte %d = %#x, want %#x", i+3, got, img[i+3])
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.Stats().Pages < size/4096 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := p.Stats()
	if st.Pages != size/4096 {
		t.Fatalf("the fill installed %d of %d pages", st.Pages, size/4096)
	}
	faultsBefore := st.Faults
	checkAll(t, m.Data, img)
	stop()
	if st := p.Stats(); st.Faults != faultsBefore || st.Filled == 0 {
		t.Errorf("after the fill: %d new faults, Filled %d; want none and >0", st.Faults-faultsBefore, st.Filled)
	}
}

func TestResolve(t *testing.T) {
	const size = 1 << 20
	u, m := setup(t, mem.Anonymous, size, 0)
	img := pattern(size)
	p := pager.New(u, pager.Config{})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	if err := p.Resolve(m.Addr()+4096, 3*4096); err != nil {
		t.Fatal(err)
	}
	if !p.Resolved(m.Addr()+4096) || p.Resolved(m.Addr()) {
		t.Error("Resolved disagrees with what was resolved")
	}
	// Resolved pages are readable without a server.
	if got := load(m.Data, 4096+5); got != img[4096+5] {
		t.Fatalf("byte = %#x, want %#x", got, img[4096+5])
	}
	// Resolving again fetches nothing.
	if err := p.Resolve(m.Addr(), 8*4096); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Filled != 8 || st.Exists != 0 {
		t.Errorf("Filled %d, Exists %d; want 8 and 0", st.Filled, st.Exists)
	}
}

// TestAdaptivePrefetch: a sequential scan takes few faults, a random one
// resolves (about) one page per fault.
func TestAdaptivePrefetch(t *testing.T) {
	const size = 32 << 20
	t.Run("sequential", func(t *testing.T) {
		u, m := setup(t, mem.Anonymous, size, 0)
		img := pattern(size)
		p := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
		add(t, p, m, pager.Image(img), pager.PoisonOnError)
		stop := serving(t, p)
		for i := 0; i < size; i += 4096 {
			load(m.Data, i)
		}
		stop()
		st := p.Stats()
		if st.Faults > 64 {
			t.Errorf("a sequential scan of %d pages took %d faults; the window did not grow", size/4096, st.Faults)
		}
		checkAll(t, m.Data, img)
	})
	t.Run("random", func(t *testing.T) {
		u, m := setup(t, mem.Anonymous, size, 0)
		img := pattern(size)
		p := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
		add(t, p, m, pager.Image(img), pager.PoisonOnError)
		stop := serving(t, p)
		r := rand.New(rand.NewPCG(1, 2))
		for _, i := range r.Perm(size / 4096)[:2048] {
			load(m.Data, i*4096)
		}
		stop()
		st := p.Stats()
		if st.Prefetched > st.Faults/4 {
			t.Errorf("random access: %d pages prefetched for %d faults; the window did not shrink", st.Prefetched, st.Faults)
		}
	})
}

func TestFileSource(t *testing.T) {
	const size = 1 << 20
	img := pattern(size)
	path := t.TempDir() + "/mem"
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := pager.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size() != size {
		t.Fatalf("Size = %d", f.Size())
	}
	u, m := setup(t, mem.Anonymous, size/2, 0)
	p := pager.New(u, pager.Config{})
	// The second half of the file.
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: f, Offset: size / 2}); err != nil {
		t.Fatal(err)
	}
	stop := serving(t, p)
	checkAll(t, m.Data, img[size/2:])
	stop()
	if _, err := pager.OpenFile(t.TempDir()); err == nil {
		t.Error("OpenFile of a directory succeeded")
	}
}

func TestZeroSource(t *testing.T) {
	for _, kind := range []mem.Kind{mem.Anonymous, mem.HugetlbPrivate} {
		t.Run(kind.String(), func(t *testing.T) {
			size := 4 << 20
			u, m := setup(t, kind, size, 0)
			p := pager.New(u, pager.Config{})
			add(t, p, m, pager.Zero(int64(size)), pager.PoisonOnError)
			stop := serving(t, p)
			checkAll(t, m.Data, make([]byte, size))
			stop()
			if st := p.Stats(); st.Zeroed != uint64(size/m.PageSize) {
				t.Errorf("Zeroed = %d, want %d", st.Zeroed, size/m.PageSize)
			}
		})
	}
}

func TestAddRejects(t *testing.T) {
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	p := pager.New(u, pager.Config{})
	src := pager.Zero(1 << 20)
	if err := p.Add(pager.Region{Start: 1 << 30, Len: 1 << 20, Source: src}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    pager.Region
	}{
		{"zero length", pager.Region{Start: 2 << 30, Source: src}},
		{"misaligned start", pager.Region{Start: 2<<30 + 1, Len: 4096, Source: src}},
		{"misaligned length", pager.Region{Start: 2 << 30, Len: 100, Source: src}},
		{"huge misaligned", pager.Region{Start: 2<<30 + 4096, Len: 2 << 20, PageSize: 2 << 20, Source: pager.Zero(4 << 20)}},
		{"bad page size", pager.Region{Start: 2 << 30, Len: 3 * 4096, PageSize: 3 * 4096, Source: src}},
		{"no source", pager.Region{Start: 2 << 30, Len: 4096}},
		{"beyond source", pager.Region{Start: 2 << 30, Len: 2 << 20, Source: src}},
		{"offset beyond source", pager.Region{Start: 2 << 30, Len: 4096, Offset: 1 << 20, Source: src}},
		{"negative offset", pager.Region{Start: 2 << 30, Len: 4096, Offset: -4096, Source: src}},
		{"overlap", pager.Region{Start: 1<<30 + 4096, Len: 1 << 20, Source: pager.Zero(2 << 20)}},
		{"wraps", pager.Region{Start: ^uintptr(0) - 4095, Len: 8192, Source: pager.Zero(8192)}},
	} {
		if err := p.Add(tc.r); err == nil {
			t.Errorf("%s: Add accepted %+v", tc.name, tc.r)
		}
	}
	if n := len(p.Regions()); n != 1 {
		t.Errorf("%d regions after rejected adds, want 1", n)
	}
}

// TestRemapAndUnmap: the bookkeeping follows mremap(2) and munmap(2) of
// served memory.
func TestRemapAndUnmap(t *testing.T) {
	const size = 16 * 4096
	u, m := setup(t, mem.Anonymous, size, uffd.FeatureEventRemap|uffd.FeatureEventUnmap)
	img := pattern(size)
	p := pager.New(u, pager.Config{})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	stop := serving(t, p)
	// Serve the first half, then move the whole mapping.
	checkAll(t, m.Data[:size/2], img[:size/2])
	dst, err := unix.Mmap(-1, 0, size, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	addr, _, errno := unix.Syscall6(unix.SYS_MREMAP, unsafeAddr(m.Data), size, size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, unsafeAddr(dst), 0)
	if errno != 0 {
		unix.Munmap(dst)
		t.Fatal(errno)
	}
	moved := dst // the same address, now holding the moved pages
	if addr != unsafeAddr(dst) {
		t.Fatalf("mremap moved to %#x, not %#x", addr, unsafeAddr(dst))
	}
	m.Data = moved // Close unmaps the new place
	checkAll(t, moved, img)
	regs := p.Regions()
	if len(regs) != 1 || regs[0].Start != unsafeAddr(moved) {
		t.Errorf("regions after mremap: %+v, want one at %#x", regs, unsafeAddr(moved))
	}
	// Unmap the last 4 pages.
	if _, _, errno := unix.Syscall(unix.SYS_MUNMAP, unsafeAddr(moved)+size-4*4096, 4*4096, 0); errno != 0 {
		t.Fatal(errno)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Unmaps == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if regs := p.Regions(); len(regs) != 1 || regs[0].Len != size-4*4096 {
		t.Errorf("regions after munmap: %+v", regs)
	}
	stop()
	if st := p.Stats(); st.Remaps != 1 || st.Unmaps == 0 {
		t.Errorf("Remaps %d, Unmaps %d", st.Remaps, st.Unmaps)
	}
}

func TestRemovedRanges(t *testing.T) {
	const size = 64 * 4096
	u, m := setup(t, mem.Anonymous, size, uffd.FeatureEventRemove)
	img := pattern(size)
	p := pager.New(u, pager.Config{})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	p.MarkRemoved(m.Addr()+4*4096, m.Addr()+8*4096)
	p.MarkRemoved(m.Addr()+8*4096, m.Addr()+10*4096)
	p.MarkRemoved(m.Addr()+20*4096, m.Addr()+21*4096)
	want := [][2]uintptr{{m.Addr() + 4*4096, m.Addr() + 10*4096}, {m.Addr() + 20*4096, m.Addr() + 21*4096}}
	if got := p.RemovedRanges(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("RemovedRanges = %x, want %x", got, want)
	}
	stop := serving(t, p)
	w := append([]byte(nil), img...)
	clear(w[4*4096 : 10*4096])
	clear(w[20*4096 : 21*4096])
	checkAll(t, m.Data, w)
	stop()
	if got := p.RemovedRanges(); len(got) != 0 {
		t.Errorf("RemovedRanges after serving = %x, want none", got)
	}
}

// TestThreadReaderIdle: an idle ReaderThread waits in ppoll instead of
// spinning (ppoll rewrites its timeout; a reused one shrinks to zero).
func TestThreadReaderIdle(t *testing.T) {
	u, _ := setup(t, mem.Anonymous, 4096, 0)
	p := pager.New(u, pager.Config{Reader: pager.ReaderThread})
	stop := serving(t, p)
	time.Sleep(50 * time.Millisecond) // the reader is waiting
	cpu := func() time.Duration {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := cpu()
	time.Sleep(500 * time.Millisecond)
	used := cpu() - before
	stop()
	if used > 250*time.Millisecond {
		t.Errorf("an idle thread reader used %v of CPU in 500ms: it spins", used)
	}
}
