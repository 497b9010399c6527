//go:build cgo && linux

package pager_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// The proof of issue 3: goroutines of the serving process read registered
// pages through copy(), bytes.Equal and append (faults inside
// runtime.memmove and runtime.memequal, where a goroutine cannot be
// preempted) while another goroutine calls runtime.GC() in a loop.
//
// The workload runs in a child process (this test binary, re-run with
// gcChildEnv set): a hang stops the world, and with it every goroutine of
// the hung process, a watchdog included. The parent waits for the child
// with a deadline; on a hang it asks the child for a goroutine dump
// (SIGQUIT), kills it and fails.
//
// With the Go engine (Config.Isolated false) the same workload hangs: run
// TestGCHangWithoutIsolation with UFFD_HANG_DEMO=1 to see it. On the 2-CPU
// development VM (Linux 6.18, Go 1.26) it hung in 5 runs out of 5, each
// before the first page was read (0 to 1.2 s after the start). The dumps
// show the collection stopping the world (forEachP or stopTheWorld), one
// reader still running (once caught in memeqbody, the rest of the time
// in the kernel), and the Go engine's worker stopped.

const (
	gcChildEnv = "UFFD_GC_CHILD" // "isolated" or "poller": run the workload
	gcSize     = 64 << 20
	gcReaders  = 4
	gcRounds   = 4
)

func TestIsolatedGC(t *testing.T) {
	if mode := os.Getenv(gcChildEnv); mode != "" {
		gcWorkload(t, mode == "isolated")
		return
	}
	out, err, hung := runGCChild(t, "isolated", 180*time.Second)
	if hung {
		t.Fatalf("the isolated pager hung: the workload did not finish in 180 s (a stop-the-world stalled by a fault)\n%s", out.tail())
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out.tail())
	}
	for _, l := range out.lines {
		if strings.HasPrefix(l, "round ") || strings.HasPrefix(l, "    isolated_test.go") {
			t.Log(strings.TrimSpace(l))
		}
	}
}

// TestGCHangWithoutIsolation is the demonstration, not a test: it runs the
// workload of TestIsolatedGC with the Go engine in a child process and
// reports when it hung. It runs only with UFFD_HANG_DEMO=1.
func TestGCHangWithoutIsolation(t *testing.T) {
	if os.Getenv("UFFD_HANG_DEMO") == "" {
		t.Skip("a demonstration of the hang; set UFFD_HANG_DEMO=1 to run it")
	}
	start := time.Now()
	out, err, hung := runGCChild(t, "poller", 30*time.Second)
	if !hung {
		t.Logf("the Go engine did not hang this time (%v, err %v)", time.Since(start), err)
		return
	}
	t.Logf("hung: the child stopped making progress %v after it started (round %d, %d pages read, %d GCs completed; progress lines stop when the world does)",
		out.lastAt.Round(time.Millisecond), out.round, out.pages, out.gcs)
	full := strings.Join(out.lines, "\n")
	for _, l := range out.lines {
		if strings.Contains(l, "PC=") || strings.Contains(l, "runtime.memmove") || strings.Contains(l, "runtime.memequal") || strings.Contains(l, "stopTheWorld") {
			t.Log(strings.TrimSpace(l))
		}
	}
	if f, err := os.CreateTemp("", "uffd-hang-*.txt"); err == nil {
		f.WriteString(full)
		f.Close()
		t.Logf("the child's output, with its goroutine dump (SIGQUIT): %s", f.Name())
	}
}

// isoChildOutput is what the parent learnt from the child's output.
type isoChildOutput struct {
	mu                sync.Mutex
	lines             []string
	round, pages, gcs int
	lastAt            time.Duration // when the last progress line came
}

func (o *isoChildOutput) tail() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.lines
	if len(l) > 60 {
		l = l[len(l)-60:]
	}
	return strings.Join(l, "\n")
}

// runGCChild runs TestIsolatedGC's workload in a child process and waits
// for it at most limit.
func runGCChild(t *testing.T, mode string, limit time.Duration) (out *isoChildOutput, err error, hung bool) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestIsolatedGC$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), gcChildEnv+"="+mode)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) } // a goroutine dump, if the runtime can
	cmd.WaitDelay = 5 * time.Second                                          // then SIGKILL
	pr, pw, perr := os.Pipe()
	if perr != nil {
		t.Fatal(perr)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		t.Fatal(err)
	}
	pw.Close()
	out = &isoChildOutput{}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			out.mu.Lock()
			out.lines = append(out.lines, l)
			var r, p, g int
			if n, _ := fmt.Sscanf(l, "progress round=%d pages=%d gcs=%d", &r, &p, &g); n == 3 {
				out.lastAt = time.Since(start)
				out.round, out.pages, out.gcs = r, p, g
			}
			out.mu.Unlock()
		}
	}()
	err = cmd.Wait()
	<-read
	return out, err, ctx.Err() != nil
}

// gcWorkload is the child's side.
func gcWorkload(t *testing.T, isolated bool) {
	img := pattern(gcSize)
	var pages, gcs atomic.Int64
	var round atomic.Int32
	stopGC := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stopGC:
				return
			default:
			}
			runtime.GC()
			gcs.Add(1)
		}
	}()
	go func() {
		// Progress for the parent; it stops when the world does.
		defer bg.Done()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopGC:
				return
			case <-tk.C:
				fmt.Fprintf(os.Stderr, "progress round=%d pages=%d gcs=%d\n", round.Load(), pages.Load(), gcs.Load())
			}
		}
	}()
	defer func() { close(stopGC); bg.Wait() }()

	for r := range gcRounds {
		round.Store(int32(r))
		t0, g0 := time.Now(), gcs.Load()
		st := gcRound(t, isolated, img, &pages)
		if t.Failed() {
			return
		}
		fmt.Printf("round %d: %d pages in %v, %d GCs meanwhile, %d faults, latency p50 <= %v p99 <= %v\n",
			r, gcSize/4096, time.Since(t0).Round(time.Millisecond), gcs.Load()-g0, st.Faults,
			st.Latency.Quantile(0.5), st.Latency.Quantile(0.99))
	}
}

// gcRound maps, registers and serves a fresh region, reads every page of
// it from gcReaders goroutines through runtime assembly, and checks it.
func gcRound(t *testing.T, isolated bool, img []byte, pages *atomic.Int64) pager.Stats {
	m, err := mem.Map(mem.Anonymous, gcSize)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	p := pager.New(u, pager.Config{Isolated: isolated})
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(img)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	// Wait for Serve with a plain load, which a stop-the-world can preempt:
	// until the loop runs, a fault inside runtime assembly could stall a
	// GC with nobody to serve it.
	if got := load(m.Data, 0); got != img[0] {
		t.Errorf("byte 0 = %#x, want %#x", got, img[0])
	}

	const ps = 4096
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range gcReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, ps)
			var dst []byte
			for i := w; i < gcSize/ps; i += gcReaders {
				page, want := m.Data[i*ps:(i+1)*ps], img[i*ps:(i+1)*ps]
				ok := true
				switch i % 3 { // the first touch of the page faults
				case 0:
					copy(buf, page) // runtime.memmove
					ok = bytes.Equal(buf, want)
				case 1:
					ok = bytes.Equal(page, want) // runtime.memequal
				case 2:
					dst = append(dst[:0], page...) // runtime.memmove, after growslice
					ok = bytes.Equal(dst, want)
				}
				if !ok && bad.Add(1) <= 3 {
					t.Errorf("page %d differs from the image", i)
				}
				pages.Add(1)
			}
		}()
	}
	wg.Wait()
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if !bytes.Equal(m.Data, img) { // every page is there: no faults
		t.Error("the region differs from the image")
	}
	st := p.Stats()
	if st.Pages != gcSize/ps {
		t.Errorf("Pages = %d, want %d", st.Pages, gcSize/ps)
	}
	return st
}

// startServe runs p.Serve in a goroutine and returns its result channel.
func isoServe(ctx context.Context, p *pager.Pager) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- p.Serve(ctx) }()
	return ch
}

// wait returns what Serve returned, failing the test if it does not
// return within 10 s (a hang detector, not a timing assertion).
func isoWait(t *testing.T, ch <-chan error, what string) (error, time.Duration) {
	t.Helper()
	t0 := time.Now()
	select {
	case err := <-ch:
		return err, time.Since(t0)
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return 10 s after %s", what)
	}
	return nil, 0
}

func TestIsolatedServe(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  pager.Config
	}{
		{"page", pager.Config{}},
		{"fixed64k", pager.Config{Prefetch: pager.Fixed(64 << 10)}},
		{"adaptive", pager.Config{Prefetch: pager.Adaptive()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const size = 4 << 20
			u, m := setup(t, mem.Anonymous, size, 0)
			img := pattern(size)
			cfg := c.cfg
			cfg.Isolated = true
			p := pager.New(u, cfg)
			if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(img)}); err != nil {
				t.Fatal(err)
			}
			stop := serving(t, p)
			checkAll(t, m.Data, img)
			stop()
			st := p.Stats()
			if st.Pages != size/4096 || st.Bytes != size {
				t.Errorf("Pages, Bytes = %d, %d; want %d, %d", st.Pages, st.Bytes, size/4096, size)
			}
			if st.Faults == 0 || st.Latency.Count() == 0 || st.Latency.Count() > st.Faults {
				t.Errorf("Faults %d, latencies %d", st.Faults, st.Latency.Count())
			}
			if c.cfg.Prefetch.Min > 0 || c.cfg.Prefetch.Adaptive {
				if st.Prefetched == 0 || st.Faults >= size/4096 {
					t.Errorf("prefetch: %d faults, %d prefetched", st.Faults, st.Prefetched)
				}
			}
			if st.Zeroed != 0 || st.Outside != 0 {
				t.Errorf("stats: %+v", st)
			}
			t.Logf("%d faults, %d prefetched, %d exists, p50 <= %v", st.Faults, st.Prefetched, st.Exists, st.Latency.Quantile(0.5))
		})
	}
}

func TestIsolatedZero(t *testing.T) {
	const size = 2 << 20
	u, m := setup(t, mem.Anonymous, size, 0)
	p := pager.New(u, pager.Config{Isolated: true, Prefetch: pager.Fixed(16 << 10)})
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Zero(size)}); err != nil {
		t.Fatal(err)
	}
	stop := serving(t, p)
	checkAll(t, m.Data, make([]byte, size))
	stop()
	if st := p.Stats(); st.Zeroed != size/4096 || st.Pages != size/4096 {
		t.Errorf("Zeroed, Pages = %d, %d; want %d", st.Zeroed, st.Pages, size/4096)
	}
}

// TestIsolatedRemove drops served pages (a REMOVE event): they read back as
// zeroes, the others keep their contents.
func TestIsolatedRemove(t *testing.T) {
	const size = 1 << 20
	u, m := setup(t, mem.Anonymous, size, uffd.FeatureEventRemove)
	img := pattern(size)
	p := pager.New(u, pager.Config{Isolated: true})
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(img)}); err != nil {
		t.Fatal(err)
	}
	stop := serving(t, p)
	checkAll(t, m.Data, img)
	const off, n = 64 << 10, 128 << 10
	if err := m.Drop(off, n); err != nil {
		t.Fatal(err)
	}
	// madvise returns once the event was read; the loop applies it right
	// after.
	for deadline := time.Now().Add(10 * time.Second); p.Resolved(m.Addr() + off); {
		if time.Now().After(deadline) {
			t.Fatal("a dropped page is still marked resolved 10 s after the REMOVE")
		}
		time.Sleep(time.Millisecond)
	}
	want := bytes.Clone(img)
	clear(want[off : off+n])
	checkAll(t, m.Data, want)
	stop()
	st := p.Stats()
	if st.Removes != 1 || st.Zeroed != n/4096 || st.Pages != (size+n)/4096 {
		t.Errorf("Removes %d, Zeroed %d, Pages %d; want 1, %d, %d", st.Removes, st.Zeroed, st.Pages, n/4096, (size+n)/4096)
	}
}

// TestIsolatedHugetlb serves hugetlbfs memory: an image, zeroes after a
// REMOVE (copied from a zeroed huge page: hugetlbfs has no ZEROPAGE), and a
// Zero source.
func TestIsolatedHugetlb(t *testing.T) {
	hp, err := mem.HugePageSize()
	if err != nil {
		t.Skipf("no hugetlbfs: %v", err)
	}
	size := 4 * hp
	t.Run("image", func(t *testing.T) {
		u, m := setup(t, mem.Hugetlb, size, uffd.FeatureEventRemove|uffd.FeatureMissingHugetlbfs)
		img := pattern(size)
		p := pager.New(u, pager.Config{Isolated: true})
		if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), PageSize: hp, Source: pager.Image(img)}); err != nil {
			t.Fatal(err)
		}
		stop := serving(t, p)
		checkAll(t, m.Data, img)
		if err := m.Drop(hp, hp); err != nil { // MADV_REMOVE
			t.Fatal(err)
		}
		want := bytes.Clone(img)
		clear(want[hp : 2*hp])
		checkAll(t, m.Data, want)
		stop()
		if st := p.Stats(); st.Pages != 5 || st.Zeroed != 1 || st.Removes != 1 {
			t.Errorf("Pages %d, Zeroed %d, Removes %d; want 5, 1, 1", st.Pages, st.Zeroed, st.Removes)
		}
	})
	t.Run("zero", func(t *testing.T) {
		u, m := setup(t, mem.HugetlbPrivate, size, uffd.FeatureMissingHugetlbfs)
		p := pager.New(u, pager.Config{Isolated: true})
		if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), PageSize: hp, Source: pager.Zero(int64(size))}); err != nil {
			t.Fatal(err)
		}
		stop := serving(t, p)
		checkAll(t, m.Data, make([]byte, size))
		stop()
		if st := p.Stats(); st.Pages != 4 || st.Zeroed != 4 {
			t.Errorf("Pages %d, Zeroed %d; want 4, 4", st.Pages, st.Zeroed)
		}
	})
}

// TestIsolatedUnmapRemap moves part of a region (REMAP) and unmaps another
// (UNMAP): the moved pages are served at their new place from the right
// offset of the source, and Regions follows.
func TestIsolatedUnmapRemap(t *testing.T) {
	const size, ps = 4 << 20, 4096
	u, m := setup(t, mem.Anonymous, size, uffd.FeatureEventRemap|uffd.FeatureEventUnmap)
	img := pattern(size)
	p := pager.New(u, pager.Config{Isolated: true})
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(img)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := isoServe(ctx, p)
	checkAll(t, m.Data[:ps], img[:ps])

	// Move [1 MiB, 2 MiB) onto a reserved range, unserved yet.
	const from, n = 1 << 20, 1 << 20
	dst, err := unix.Mmap(-1, 0, n, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	to := uintptr(unsafe.Pointer(&dst[0]))
	if _, _, e := unix.Syscall6(unix.SYS_MREMAP, m.Addr()+from, n, n, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to, 0); e != 0 {
		unix.Munmap(dst)
		t.Fatalf("mremap: %v", e)
	}
	moved := dst // the same addresses, now the moved pages
	// Unmap [3 MiB, 3.5 MiB).
	const hole, holeLen = 3 << 20, 512 << 10
	if _, _, e := unix.Syscall(unix.SYS_MUNMAP, m.Addr()+hole, holeLen, 0); e != 0 {
		t.Fatalf("munmap: %v", e)
	}
	checkAll(t, moved, img[from:from+n])
	checkAll(t, m.Data[:from], img[:from])
	checkAll(t, m.Data[from+n:hole], img[from+n:hole])
	checkAll(t, m.Data[hole+holeLen:], img[hole+holeLen:])

	cancel()
	if err, _ := isoWait(t, served, "its context ended"); err != nil {
		t.Errorf("Serve: %v", err)
	}
	// Close the userfaultfd before unmapping the moved range: an UNMAP
	// event that nobody reads would hold munmap.
	u.Close()
	unix.Munmap(moved)

	// The kernel follows the Remap with an Unmap of the old range.
	st := p.Stats()
	if st.Remaps != 1 || st.Unmaps != 2 || st.Pages != (size-holeLen)/ps {
		t.Errorf("Remaps %d, Unmaps %d, Pages %d; want 1, 2, %d", st.Remaps, st.Unmaps, st.Pages, (size-holeLen)/ps)
	}
	want := []pager.Region{
		{Start: m.Addr(), Len: from},
		{Start: m.Addr() + from + n, Len: hole - from - n},
		{Start: m.Addr() + hole + holeLen, Len: size - hole - holeLen},
		{Start: to, Len: n},
	}
	var got []pager.Region
	for _, r := range p.Regions() {
		got = append(got, pager.Region{Start: r.Start, Len: r.Len})
	}
	isoSortRegions(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Regions = %x\nwant %x", got, want)
	}
}

func isoSortRegions(l []pager.Region) {
	for i := range l {
		for j := i + 1; j < len(l); j++ {
			if l[j].Start < l[i].Start {
				l[i], l[j] = l[j], l[i]
			}
		}
	}
}

// TestIsolatedAdd adds a region while an isolated Serve runs: its faults
// are served.
func TestIsolatedAdd(t *testing.T) {
	const size = 1 << 20
	u, m := setup(t, mem.Anonymous, 2*size, 0)
	img := pattern(2 * size)
	var errs atomic.Int64
	p := pager.New(u, pager.Config{Isolated: true, OnError: func(error) { errs.Add(1) }})
	if err := p.Add(pager.Region{Start: m.Addr(), Len: size, Source: pager.Image(img[:size])}); err != nil {
		t.Fatal(err)
	}
	stop := serving(t, p)
	checkAll(t, m.Data[:size], img[:size])
	if err := p.Add(pager.Region{Start: m.Addr() + size, Len: size, Source: pager.Image(img[size:])}); err != nil {
		t.Fatal(err)
	}
	checkAll(t, m.Data[size:], img[size:])
	stop()
	if st := p.Stats(); st.Pages != 2*size/4096 {
		t.Errorf("Pages = %d, want %d", st.Pages, 2*size/4096)
	}
	t.Logf("faults reported outside meanwhile: %d", errs.Load())
}

// TestIsolatedOutside: a fault in no region is reported to OnError, and
// served once a region holding it is added.
func TestIsolatedOutside(t *testing.T) {
	const size = 64 << 10
	u, m := setup(t, mem.Anonymous, size, 0)
	img := pattern(size)
	reported := make(chan error, 16)
	p := pager.New(u, pager.Config{Isolated: true, OnError: func(err error) { reported <- err }})
	stop := serving(t, p)
	got := make(chan byte)
	go func() { got <- load(m.Data, 4096) }()
	select {
	case err := <-reported:
		if !errors.Is(err, pager.ErrOutside) {
			t.Errorf("reported %v, want ErrOutside", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fault outside every region was not reported in 10 s")
	}
	if err := p.Add(pager.Region{Start: m.Addr(), Len: size, Source: pager.Image(img)}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if b != img[4096] {
			t.Errorf("byte = %#x, want %#x", b, img[4096])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fault was not served 10 s after its region was added")
	}
	stop()
	// A thread interrupted by a signal faults again: one message each time.
	if st := p.Stats(); st.Outside == 0 || st.Pages != 1 {
		t.Errorf("Outside %d, Pages %d; want at least 1, and 1", st.Outside, st.Pages)
	}
}

// TestIsolatedStop ends Serve by its context, then by a Close of the
// userfaultfd; neither is an error.
func TestIsolatedStop(t *testing.T) {
	for _, how := range []string{"context", "close"} {
		t.Run(how, func(t *testing.T) {
			u, m := setup(t, mem.Anonymous, 64<<10, 0)
			p := pager.New(u, pager.Config{Isolated: true})
			if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Zero(64 << 10)}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := isoServe(ctx, p)
			load(m.Data, 0) // serving
			if err := p.Serve(ctx); !errors.Is(err, pager.ErrServing) {
				t.Errorf("a second Serve: %v, want ErrServing", err)
			}
			if how == "context" {
				cancel()
			} else {
				u.Close()
			}
			err, took := isoWait(t, served, how)
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
			t.Logf("Serve returned %v after the %s ended", took, how)
		})
	}
}

func TestIsolatedUnsupported(t *testing.T) {
	u, m := setup(t, mem.Anonymous, 64<<10, 0)
	p := pager.New(u, pager.Config{Isolated: true})
	fn := pager.Func(64<<10, func(b []byte, off int64) error { return nil })
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: fn}); err == nil {
		t.Error("Add of a Func source to an isolated pager succeeded")
	}
	for _, cfg := range []pager.Config{
		{Isolated: true, Fill: true},
		{Isolated: true, OnFault: func(uintptr) {}},
		{Isolated: true, OnFork: func(*pager.Pager) {}},
	} {
		if err := pager.New(u, cfg).Serve(context.Background()); err == nil {
			t.Errorf("Serve with %+v succeeded", cfg)
		}
	}
}

func BenchmarkFaultIsolated(b *testing.B) { benchServe(b, pager.Config{Isolated: true}) }
func BenchmarkFaultIsolated64K(b *testing.B) {
	benchServe(b, pager.Config{Isolated: true, Prefetch: pager.Fixed(64 << 10)})
}
