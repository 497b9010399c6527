package pager_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// The conformance suite: every behaviour of the fault policy, over every
// engine configuration (engines in harness_test.go).

func TestServeKinds(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		for _, kind := range []mem.Kind{mem.Anonymous, mem.Shmem, mem.ShmemPrivate, mem.Hugetlb, mem.HugetlbPrivate} {
			t.Run(kind.String(), func(t *testing.T) {
				size := 4 << 20
				u, m := setup(t, kind, size, 0)
				img := pattern(size)
				p := newPager(t, u, e.with(t, pager.Config{Prefetch: pager.Adaptive()}))
				add(t, p, m, pager.Image(img), pager.PoisonOnError)
				stop := serving(t, p)
				checkAll(t, m.Data, img)
				stop()
				if st := p.Stats(); st.Pages != uint64(size/m.PageSize) {
					t.Errorf("Pages = %d, want %d", st.Pages, size/m.PageSize)
				}
			})
		}
	})
}

func TestServePrefetch(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		for _, pf := range []pager.Prefetch{{}, pager.Fixed(64 << 10), pager.Adaptive()} {
			t.Run(pf.String(), func(t *testing.T) {
				const size = 4 << 20
				u, m := setup(t, mem.Anonymous, size, 0)
				img := pattern(size)
				p := newPager(t, u, e.with(t, pager.Config{Prefetch: pf}))
				add(t, p, m, pager.Image(img), pager.PoisonOnError)
				stop := serving(t, p)
				checkAll(t, m.Data, img)
				stop()
				st := p.Stats()
				if st.Pages != size/4096 || st.Faults == 0 || st.Latency.Count() == 0 {
					t.Errorf("stats: %+v", st)
				}
			})
		}
	})
}

// TestSamePageRace has several goroutines fault on the same pages at once,
// from inside system calls: each page is resolved once, the source read
// once per page, and every goroutine reads the right bytes.
func TestSamePageRace(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const pages = 256
		u, m := setup(t, mem.Anonymous, pages*4096, uffd.FeatureEventRemove)
		img := pattern(pages * 4096)
		var reads atomic.Int64
		src := pager.Func(int64(len(img)), func(b []byte, off int64) error {
			reads.Add(int64(len(b) / 4096))
			copy(b, img[off:])
			return nil
		})
		p := newPager(t, u, e.with(t, pager.Config{}))
		add(t, p, m, src, pager.PoisonOnError)
		stop := serving(t, p)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for g := range 4 {
			k := newKernelTouch(t)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range pages {
					off := i*4096 + g*17
					got, err := k.read(m.Data, off)
					if err != nil || got != img[off] {
						errs <- fmt.Errorf("goroutine %d: byte %d = %#x (%v), want %#x", g, off, got, err, img[off])
						return
					}
				}
			}()
		}
		within(t, "the racing readers", wg.Wait)
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
	})
}

// TestRemoveThenRefault: a range the process drops (MADV_DONTNEED, the
// balloon case) reads back as zeroes, not as the source's contents.
func TestRemoveThenRefault(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		for _, kind := range []mem.Kind{mem.Anonymous, mem.HugetlbPrivate} {
			t.Run(kind.String(), func(t *testing.T) {
				size := 8 << 20
				u, m := setup(t, kind, size, uffd.FeatureEventRemove)
				img := pattern(size)
				p := newPager(t, u, e.with(t, pager.Config{Prefetch: pager.Adaptive()}))
				add(t, p, m, pager.Image(img), pager.PoisonOnError)
				stop := serving(t, p)
				checkAll(t, m.Data, img)
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
	})
}

// TestRemoveWhileServing drops ranges while other goroutines fault: every
// byte read is the source's (before the drop) or zero (after), and once
// the drops returned, the dropped pages read zero.
func TestRemoveWhileServing(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const pages = 1024
		u, m := setup(t, mem.Anonymous, pages*4096, uffd.FeatureEventRemove)
		img := pattern(pages * 4096)
		p := newPager(t, u, e.with(t, pager.Config{Prefetch: pager.Fixed(64 << 10)}))
		add(t, p, m, pager.Image(img), pager.PoisonOnError)
		serving(t, p)
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
		within(t, "the readers", wg.Wait)
		if n := bad.Load(); n > 0 {
			t.Errorf("%d reads returned neither the source's byte nor zero", n)
		}
		// Each page's last drop came after any copy of its contents, and
		// later faults there got zeroes.
		for i, d := range dropped {
			if d {
				if got := load(m.Data, i*4096); got != 0 {
					t.Errorf("page %d was dropped but reads %#x", i, got)
				}
			}
		}
	})
}

// flaky fails its first n reads of each offset (all of them if n < 0).
type flaky struct {
	img   []byte
	fails int
	mu    sync.Mutex
	seen  map[int64]int
}

func newFlaky(img []byte, fails int) *flaky {
	return &flaky{img: img, fails: fails, seen: map[int64]int{}}
}

func (f *flaky) Size() int64 { return int64(len(f.img)) }
func (f *flaky) ReadAt(b []byte, off int64) (int, error) {
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
	forEngines(t, func(t *testing.T, e engine) {
		const pages = 4
		u, m := setup(t, mem.Anonymous, pages*4096, 0)
		img := pattern(pages * 4096)
		var reported atomic.Int64
		p := newPager(t, u, e.with(t, pager.Config{Retry: pager.Retry{Attempts: 5, Backoff: time.Millisecond}, OnError: func(err error) {
			if !errors.Is(err, pager.ErrSource) {
				t.Errorf("reported %v, want an error matching ErrSource", err)
			}
			reported.Add(1)
		}}))
		add(t, p, m, newFlaky(img, 2), pager.PoisonOnError)
		stop := serving(t, p)
		k := newKernelTouch(t)
		within(t, "reading every page", func() {
			for i := 0; i < pages*4096; i += 1000 {
				if got, err := k.read(m.Data, i); err != nil || got != img[i] {
					t.Errorf("byte %d = %#x (%v), want %#x", i, got, err, img[i])
				}
			}
		})
		stop()
		st := p.Stats()
		if st.Retries == 0 || st.SourceErrors != 0 || st.Poisoned != 0 {
			t.Errorf("Retries %d, SourceErrors %d, Poisoned %d: want retries and no final failure", st.Retries, st.SourceErrors, st.Poisoned)
		}
		if reported.Load() == 0 {
			t.Error("the failures were not reported")
		}
	})
}

// TestSourceFailurePoisons: a page the source never delivers is answered
// with a memory error: SIGBUS in user mode, EFAULT in a system call.
func TestSourceFailurePoisons(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		u, m := setup(t, mem.Anonymous, 2*4096, uffd.FeaturePoison)
		var final atomic.Int64
		p := newPager(t, u, e.with(t, pager.Config{Retry: pager.Retry{Attempts: 3, Backoff: time.Millisecond}, OnError: func(err error) {
			var se *pager.SourceError
			if errors.As(err, &se) && se.Final {
				final.Add(1)
			}
		}}))
		add(t, p, m, newFlaky(pattern(2*4096), -1), pager.PoisonOnError)
		stop := serving(t, p)
		k := newKernelTouch(t)
		within(t, "the poisoned read", func() {
			if _, err := k.read(m.Data, 5); !isErrno(err, unix.EFAULT) {
				t.Errorf("read from a page the source cannot deliver: %v, want EFAULT (poisoned)", err)
			}
		})
		stop()
		if st := p.Stats(); st.Poisoned != 1 || st.SourceErrors != 1 || final.Load() != 1 {
			t.Errorf("Poisoned %d, SourceErrors %d, final reports %d; want 1, 1, 1", st.Poisoned, st.SourceErrors, final.Load())
		}
	})
}

// TestSourceFailureWaits: with WaitOnError the thread waits, never served
// zeroes, until the source recovers.
func TestSourceFailureWaits(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
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
		p := newPager(t, u, e.with(t, pager.Config{Retry: pager.Retry{Attempts: 2, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}}))
		add(t, p, m, src, pager.WaitOnError)
		stop := serving(t, p)
		k := newKernelTouch(t)
		got := make(chan byte, 1)
		go func() {
			b, err := k.read(m.Data, 100)
			if err != nil {
				t.Errorf("read: %v", err)
			}
			got <- b
		}()
		eventually(t, "the source failed every attempt", func() bool { return p.Stats().SourceErrors > 0 })
		select {
		case b := <-got:
			t.Fatalf("the fault returned %#x while the source was down", b)
		default:
		}
		healthy.Store(true)
		select {
		case b := <-got:
			if b != img[100] {
				t.Fatalf("byte = %#x, want %#x", b, img[100])
			}
		case <-time.After(hangLimit):
			t.Fatal("not served after the source recovered")
		}
		stop()
		if st := p.Stats(); st.Poisoned != 0 {
			t.Errorf("Poisoned %d, want 0", st.Poisoned)
		}
	})
}

// TestFillFailureWakes: a fault whose page the background fill holds
// (claimed, not yet installed) is dropped, trusting the fill to wake it.
// When the fill's read fails, the thread must be woken: it faults again
// and is served. The fault is taken inside read(2), as a VM's device
// emulation takes it: no signal re-raises it.
func TestFillFailureWakes(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const size = 64 << 10
		u, m := setup(t, mem.Anonymous, size, 0)
		img := pattern(size)
		entered := make(chan struct{})
		release := make(chan struct{})
		var calls atomic.Int32
		src := pager.Func(size, func(b []byte, off int64) error {
			if calls.Add(1) == 1 {
				close(entered)
				<-release
				return errors.New("the first read fails")
			}
			copy(b, img[off:])
			return nil
		})
		p := newPager(t, u, e.with(t, pager.Config{Fill: true, FillChunk: size, OnError: func(error) {}}))
		add(t, p, m, src, pager.WaitOnError)
		serving(t, p)
		<-entered // the fill holds the whole region
		k := newKernelTouch(t)
		got := make(chan byte, 1)
		go func() {
			b, err := k.read(m.Data, 5*4096+7)
			if err != nil {
				t.Errorf("read: %v", err)
			}
			got <- b
		}()
		eventually(t, "the fault was read", func() bool { return p.Stats().Faults > 0 })
		close(release)
		select {
		case b := <-got:
			if b != img[5*4096+7] {
				t.Errorf("byte = %#x, want %#x", b, img[5*4096+7])
			}
		case <-time.After(hangLimit):
			t.Fatal("the fault dropped behind the fill's claim was never served after the fill failed")
		}
	})
}

// TestSourceEFAULT: a memory file truncated under the pager makes the copy
// fail with EFAULT. That is a source error, reported and retried under the
// region's policy, not a vanished mapping.
func TestSourceEFAULT(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const size = 16 * 4096
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
		u, m := setup(t, mem.Anonymous, size, 0)
		var efaults atomic.Int64
		p := newPager(t, u, e.with(t, pager.Config{Retry: pager.Retry{Attempts: 2, Backoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}, OnError: func(err error) {
			if errors.Is(err, pager.ErrSource) && errors.Is(err, syscall.EFAULT) {
				efaults.Add(1)
			}
		}}))
		add(t, p, m, f, pager.WaitOnError)
		serving(t, p)
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
		k := newKernelTouch(t)
		got := make(chan byte, 1)
		go func() {
			b, err := k.read(m.Data, 3*4096+1)
			if err != nil {
				t.Errorf("read: %v", err)
			}
			got <- b
		}()
		eventually(t, "the EFAULT was reported as a source error", func() bool { return efaults.Load() >= 2 })
		if st := p.Stats(); st.SourceErrors == 0 {
			t.Errorf("SourceErrors = 0 after the source failed every attempt")
		}
		// The file comes back: the waiting thread is served from it.
		if err := os.WriteFile(path, img, 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			if b != img[3*4096+1] {
				t.Errorf("byte = %#x, want %#x", b, img[3*4096+1])
			}
		case <-time.After(hangLimit):
			t.Fatal("not served after the file was restored")
		}
	})
}

// TestShutdownWithPendingFault: Serve returns promptly while a fault waits
// on a source that hangs; closing the userfaultfd then releases the thread.
func TestShutdownWithPendingFault(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
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
		entered := make(chan struct{})
		release := make(chan struct{})
		var once sync.Once
		src := pager.Func(4096, func(b []byte, off int64) error {
			once.Do(func() { close(entered) })
			<-release
			return errors.New("released")
		})
		p := newPager(t, u, e.with(t, pager.Config{Retry: pager.Retry{Attempts: 1}}))
		add(t, p, m, src, pager.WaitOnError)
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- p.Serve(ctx) }()
		k := newKernelTouch(t)
		got := make(chan byte, 1)
		go func() {
			b, err := k.read(m.Data, 0)
			if err != nil {
				t.Errorf("read: %v", err)
			}
			got <- b
		}()
		<-entered
		cancel()
		close(release)
		select {
		case err := <-served:
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(hangLimit):
			t.Fatal("Serve did not return after its context ended")
		}
		u.Close() // the thread faults again, on unregistered memory
		select {
		case b := <-got:
			if b != 0 {
				t.Fatalf("byte = %#x after close, want 0", b)
			}
		case <-time.After(hangLimit):
			t.Fatal("the faulting thread was not released by Close")
		}
	})
}

// TestCloseEndsServe: closing the userfaultfd ends Serve without error.
func TestCloseEndsServe(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		for _, features := range []uffd.Feature{0, uffd.FeatureEventRemove} {
			u, err := uffd.Open(uffd.Config{Features: features})
			if err != nil {
				t.Fatal(err)
			}
			p := newPager(t, u, e.with(t, pager.Config{}))
			served := make(chan error, 1)
			go func() { served <- p.Serve(context.Background()) }()
			<-p.Serving()
			u.Close()
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("Serve: %v", err)
				}
			case <-time.After(hangLimit):
				t.Fatal("Serve did not return after Close")
			}
		}
	})
}

func TestServeTwice(t *testing.T) {
	u, _ := setup(t, mem.Anonymous, 4096, 0)
	p := newPager(t, u, pager.Config{})
	serving(t, p)
	if err := p.Serve(context.Background()); !errors.Is(err, pager.ErrServing) {
		t.Fatalf("second Serve: %v, want ErrServing", err)
	}
}

// TestServing: Serving closes once Serve serves; a fault raised before
// waits in the userfaultfd and is served then.
func TestServing(t *testing.T) {
	u, m := setup(t, mem.Anonymous, 4096, 0)
	img := pattern(4096)
	p := newPager(t, u, pager.Config{})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	select {
	case <-p.Serving():
		t.Fatal("Serving is closed before Serve")
	default:
	}
	k := newKernelTouch(t)
	got := make(chan byte, 1)
	go func() { b, _ := k.read(m.Data, 9); got <- b }()
	time.Sleep(10 * time.Millisecond)
	serving(t, p)
	select {
	case b := <-got:
		if b != img[9] {
			t.Errorf("byte = %#x, want %#x", b, img[9])
		}
	case <-time.After(hangLimit):
		t.Fatal("a fault raised before Serve was not served")
	}
}

func TestFill(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const size = 8 << 20
		u, m := setup(t, mem.Anonymous, size, 0)
		img := pattern(size)
		p := newPager(t, u, e.with(t, pager.Config{Fill: true}))
		add(t, p, m, pager.Image(img), pager.PoisonOnError)
		stop := serving(t, p)
		for i := 0; i < size; i += size / 8 {
			if got := load(m.Data, i+3); got != img[i+3] {
				t.Fatalf("byte %d = %#x, want %#x", i+3, got, img[i+3])
			}
		}
		eventually(t, "the fill installed every page", func() bool { return p.Stats().Pages == size/4096 })
		faultsBefore := p.Stats().Faults
		checkAll(t, m.Data, img)
		stop()
		if st := p.Stats(); st.Faults != faultsBefore || st.Filled == 0 {
			t.Errorf("after the fill: %d new faults, Filled %d; want none and >0", st.Faults-faultsBefore, st.Filled)
		}
	})
}

func TestResolve(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const size = 1 << 20
		u, m := setup(t, mem.Anonymous, size, 0)
		img := pattern(size)
		p := newPager(t, u, e.with(t, pager.Config{}))
		add(t, p, m, pager.Image(img), pager.PoisonOnError)
		ctx := context.Background()
		if err := p.Resolve(ctx, m.Addr(), 4096); !errors.Is(err, pager.ErrNotServing) {
			t.Errorf("Resolve without Serve: %v, want ErrNotServing", err)
		}
		stop := serving(t, p)
		if err := p.Resolve(ctx, m.Addr()+4096, 3*4096); err != nil {
			t.Fatal(err)
		}
		if !p.Resolved(m.Addr()+4096) || p.Resolved(m.Addr()) {
			t.Error("Resolved disagrees with what was resolved")
		}
		stop()
		// Resolved pages are there without a server.
		if got := load(m.Data, 4096+5); got != img[4096+5] {
			t.Fatalf("byte = %#x, want %#x", got, img[4096+5])
		}
		if st := p.Stats(); st.Filled != 3 || st.Faults != 0 {
			t.Errorf("Filled %d, Faults %d; want 3 and 0", st.Filled, st.Faults)
		}
	})
}

// TestResolveAfterServe: a Resolve that waits for an event to be read (its
// install answered EAGAIN) must return once Serve has ended, since nobody
// reads events then.
func TestResolveAfterServe(t *testing.T) {
	const size = 64 * 4096
	u, m := setup(t, mem.Anonymous, size, uffd.FeatureEventRemove)
	block := make(chan struct{})
	entered := make(chan struct{})
	var once sync.Once
	src := pager.Func(size, func(b []byte, off int64) error {
		once.Do(func() { close(entered) })
		<-block
		return nil
	})
	p := newPager(t, u, pager.Config{})
	add(t, p, m, src, pager.PoisonOnError)
	stop := serving(t, p)
	res := make(chan error, 1)
	go func() { res <- p.Resolve(context.Background(), m.Addr(), size) }()
	<-entered
	stop()
	close(block)
	select {
	case err := <-res:
		if err != nil && !errors.Is(err, pager.ErrNotServing) {
			t.Errorf("Resolve: %v, want nil or ErrNotServing", err)
		}
	case <-time.After(hangLimit):
		t.Fatal("Resolve did not return after Serve ended")
	}
	if err := p.Resolve(context.Background(), m.Addr(), size); !errors.Is(err, pager.ErrNotServing) {
		t.Errorf("Resolve after Serve: %v, want ErrNotServing", err)
	}
}

// TestAdaptivePrefetch: a sequential scan takes few faults, a random one
// resolves (about) one page per fault.
func TestAdaptivePrefetch(t *testing.T) {
	const size = 32 << 20
	forEngines(t, func(t *testing.T, e engine) {
		t.Run("sequential", func(t *testing.T) {
			u, m := setup(t, mem.Anonymous, size, 0)
			img := pattern(size)
			p := newPager(t, u, e.with(t, pager.Config{Prefetch: pager.Adaptive()}))
			add(t, p, m, pager.Image(img), pager.PoisonOnError)
			stop := serving(t, p)
			for i := 0; i < size; i += 4096 {
				load(m.Data, i)
			}
			stop()
			// Windows double to 1024 pages; a fault may also meet a
			// window still being resolved ahead of it, and wait.
			if st := p.Stats(); st.Faults > size/4096/32 || st.Prefetched < size/4096*9/10 {
				t.Errorf("a sequential scan of %d pages took %d faults, %d pages prefetched; the window did not grow", size/4096, st.Faults, st.Prefetched)
			}
			checkAll(t, m.Data, img)
		})
		t.Run("random", func(t *testing.T) {
			u, m := setup(t, mem.Anonymous, size, 0)
			img := pattern(size)
			p := newPager(t, u, e.with(t, pager.Config{Prefetch: pager.Adaptive()}))
			add(t, p, m, pager.Image(img), pager.PoisonOnError)
			stop := serving(t, p)
			r := rand.New(rand.NewPCG(1, 2))
			for _, i := range r.Perm(size / 4096)[:2048] {
				load(m.Data, i*4096)
			}
			stop()
			if st := p.Stats(); st.Prefetched > st.Faults/4 {
				t.Errorf("random access: %d pages prefetched for %d faults; the window did not shrink", st.Prefetched, st.Faults)
			}
		})
	})
}

func TestFileSource(t *testing.T) {
	const size = 1 << 20
	img := pattern(size)
	dir := t.TempDir()
	path := dir + "/mem"
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
	p := newPager(t, u, pager.Config{})
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: f, Offset: size / 2}); err != nil {
		t.Fatal(err)
	}
	stop := serving(t, p)
	checkAll(t, m.Data, img[size/2:])
	stop()
	if _, err := pager.OpenFile(dir); err == nil {
		t.Error("OpenFile of a directory succeeded")
	}
	if err := os.WriteFile(dir+"/empty", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pager.OpenFile(dir + "/empty"); err == nil {
		t.Error("OpenFile of an empty file succeeded")
	}
	_, err = pager.OpenFile(dir + "/missing")
	if err == nil || !errors.Is(err, os.ErrNotExist) || err.Error()[:7] != "pager: " {
		t.Errorf("OpenFile of a missing file: %v, want an error with the package's prefix matching ErrNotExist", err)
	}
}

func TestZeroSource(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		for _, kind := range []mem.Kind{mem.Anonymous, mem.HugetlbPrivate} {
			t.Run(kind.String(), func(t *testing.T) {
				size := 4 << 20
				u, m := setup(t, kind, size, 0)
				p := newPager(t, u, e.with(t, pager.Config{}))
				add(t, p, m, pager.Zero(int64(size)), pager.PoisonOnError)
				stop := serving(t, p)
				checkAll(t, m.Data, make([]byte, size))
				stop()
				if st := p.Stats(); st.Zeroed != uint64(size/m.PageSize) {
					t.Errorf("Zeroed = %d, want %d", st.Zeroed, size/m.PageSize)
				}
			})
		}
	})
}

func TestNewRejects(t *testing.T) {
	u := open(t, 0)
	if _, err := pager.New(nil, pager.Config{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	for _, cfg := range []pager.Config{
		{Prefetch: pager.Fixed(-1)},
		{Prefetch: pager.Prefetch{Min: 8192, Max: 4096}},
		{Prefetch: pager.Fixed(2 << 30)},
		{FillChunk: -1},
		{Fetchers: -1},
		{Retry: pager.Retry{Attempts: -1}},
		{Retry: pager.Retry{Backoff: -time.Second}},
		{Retry: pager.Retry{Backoff: time.Second, MaxBackoff: time.Millisecond}},
	} {
		if _, err := pager.New(u, cfg); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}

func TestAddRejects(t *testing.T) {
	u := open(t, 0)
	p := newPager(t, u, pager.Config{})
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
		{"bad policy", pager.Region{Start: 2 << 30, Len: 4096, Source: src, OnError: 7}},
	} {
		if err := p.Add(tc.r); err == nil {
			t.Errorf("%s: Add accepted %v", tc.name, tc.r)
		}
	}
	if n := len(p.Regions()); n != 1 {
		t.Errorf("%d regions after rejected adds, want 1", n)
	}
}

// TestRemapAndUnmap: the bookkeeping follows mremap(2) and munmap(2) of
// served memory.
func TestRemapAndUnmap(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const size = 16 * 4096
		u, m := setup(t, mem.Anonymous, size, uffd.FeatureEventRemap|uffd.FeatureEventUnmap)
		img := pattern(size)
		p := newPager(t, u, e.with(t, pager.Config{}))
		add(t, p, m, pager.Image(img), pager.PoisonOnError)
		stop := serving(t, p)
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
		if addr != unsafeAddr(dst) {
			t.Fatalf("mremap moved to %#x, not %#x", addr, unsafeAddr(dst))
		}
		m.Data = dst // Close unmaps the new place
		checkAll(t, dst, img)
		if regs := p.Regions(); len(regs) != 1 || regs[0].Start != unsafeAddr(dst) {
			t.Errorf("regions after mremap: %v, want one at %#x", regs, unsafeAddr(dst))
		}
		if _, _, errno := unix.Syscall(unix.SYS_MUNMAP, unsafeAddr(dst)+size-4*4096, 4*4096, 0); errno != 0 {
			t.Fatal(errno)
		}
		// munmap returns once the UNMAP event was read; its bookkeeping
		// follows at once (the reader applies it holding the layout).
		eventually(t, "the layout shows the munmap", func() bool {
			regs := p.Regions()
			return len(regs) == 1 && regs[0].Len == size-4*4096
		})
		stop()
		if st := p.Stats(); st.Remaps != 1 || st.Unmaps == 0 {
			t.Errorf("Remaps %d, Unmaps %d", st.Remaps, st.Unmaps)
		}
	})
}

func TestRemovedRanges(t *testing.T) {
	const size = 64 * 4096
	u, m := setup(t, mem.Anonymous, size, uffd.FeatureEventRemove)
	img := pattern(size)
	p := newPager(t, u, pager.Config{})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	a := m.Addr()
	p.MarkRemoved(pager.Range{Start: a + 4*4096, End: a + 8*4096})
	p.MarkRemoved(pager.Range{Start: a + 8*4096, End: a + 10*4096})
	p.MarkRemoved(pager.Range{Start: a + 20*4096, End: a + 21*4096})
	want := []pager.Range{{Start: a + 4*4096, End: a + 10*4096}, {Start: a + 20*4096, End: a + 21*4096}}
	if got := p.RemovedRanges(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("RemovedRanges = %v, want %v", got, want)
	}
	stop := serving(t, p)
	w := append([]byte(nil), img...)
	clear(w[4*4096 : 10*4096])
	clear(w[20*4096 : 21*4096])
	checkAll(t, m.Data, w)
	stop()
	if got := p.RemovedRanges(); len(got) != 0 {
		t.Errorf("RemovedRanges after serving = %v, want none", got)
	}
}

// TestOutside: a fault in no region waits, is reported once, and is served
// when a region that holds it is added.
func TestOutside(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const size = 8 * 4096
		u, m := setup(t, mem.Anonymous, size, 0)
		img := pattern(size)
		var outside atomic.Int64
		p := newPager(t, u, e.with(t, pager.Config{OnError: func(err error) {
			if errors.Is(err, pager.ErrOutside) {
				outside.Add(1)
			}
		}}))
		if err := p.Add(pager.Region{Start: m.Addr(), Len: size / 2, Source: pager.Image(img)}); err != nil {
			t.Fatal(err)
		}
		serving(t, p)
		k := newKernelTouch(t)
		got := make(chan byte, 1)
		go func() { b, _ := k.read(m.Data, size-1); got <- b }()
		eventually(t, "the fault outside was reported", func() bool { return outside.Load() == 1 })
		select {
		case b := <-got:
			t.Fatalf("a fault in no region returned %#x", b)
		default:
		}
		if err := p.Add(pager.Region{Start: m.Addr() + size/2, Len: size / 2, Source: pager.Image(img[size/2:])}); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			if b != img[size-1] {
				t.Errorf("byte = %#x, want %#x", b, img[size-1])
			}
		case <-time.After(hangLimit):
			t.Fatal("the fault was not served after its region was added")
		}
		if st := p.Stats(); st.Outside == 0 || outside.Load() != 1 {
			t.Errorf("Outside %d, reports %d; want >0 and 1", st.Outside, outside.Load())
		}
	})
}

// TestOnFault: OnFault receives each distinct fault's page, in order.
func TestOnFault(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		const pages = 64
		u, m := setup(t, mem.Anonymous, pages*4096, 0)
		var mu sync.Mutex
		var seen []uintptr
		p := newPager(t, u, e.with(t, pager.Config{OnFault: func(a uintptr) {
			mu.Lock()
			seen = append(seen, a)
			mu.Unlock()
		}}))
		add(t, p, m, pager.Image(pattern(pages*4096)), pager.PoisonOnError)
		stop := serving(t, p)
		order := rand.New(rand.NewPCG(3, 4)).Perm(pages)
		for _, i := range order {
			load(m.Data, i*4096)
		}
		stop()
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != pages {
			t.Fatalf("OnFault saw %d faults, want %d", len(seen), pages)
		}
		for k, i := range order {
			if seen[k] != m.Addr()+uintptr(i)*4096 {
				t.Fatalf("fault %d: OnFault got %#x, want %#x", k, seen[k], m.Addr()+uintptr(i)*4096)
			}
		}
	})
}
