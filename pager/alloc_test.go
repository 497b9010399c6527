//go:build cgo && linux

package pager_test

import (
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// mallocs counts the heap allocations of the whole process while fn runs:
// exactly, not averaged per run (testing.AllocsPerRun's integer division
// reads 199 allocations in 200 runs as 0).
func mallocs(fn func()) uint64 {
	var a, b runtime.MemStats
	// Let the cleanups a collection queues (earlier tests' pagers) run
	// first: their goroutine's allocations would count.
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.Mallocs - a.Mallocs
}

// TestFaultPathAllocs: serving faults allocates nothing, counted exactly
// over hundreds of faults, with the engine blocking in read(2) and in
// epoll (events ordered), with prefetch, and with a source read by Go.
// The faults are taken inside read(2), as a VM's device emulation takes
// them, from a goroutine that allocates nothing itself.
func TestFaultPathAllocs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      pager.Config
		features uffd.Feature
		src      string
	}{
		{"blocking", pager.Config{}, 0, "image"},
		{"events", pager.Config{}, uffd.FeatureEventRemove | uffd.FeatureEventUnmap | uffd.FeatureEventRemap, "image"},
		{"adaptive", pager.Config{Prefetch: pager.Adaptive()}, uffd.FeatureEventRemove, "image"},
		{"func source", pager.Config{}, 0, "func"},
		{"func source, events", pager.Config{}, uffd.FeatureEventRemove, "func"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const pages, faults = 4096, 400 // room for the warm-up's faults: each touch a new page
			u, m := setup(t, mem.Anonymous, pages*4096, tc.features)
			img := pattern(pages * 4096)
			var src pager.Source = pager.Image(img)
			if tc.src == "func" {
				src = pager.Func(int64(len(img)), func(b []byte, off int64) error { copy(b, img[off:]); return nil })
			}
			p := newPager(t, u, tc.cfg)
			add(t, p, m, src, pager.PoisonOnError)
			stop := serving(t, p)
			var pipe [2]int
			if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pipe[0])
			defer unix.Close(pipe[1])
			one := [1]byte{0xEE}
			var errno syscall.Errno
			next := 0
			fault := func() {
				// A scattered order defeats prefetch, so each touch faults.
				i := (next * 97) % pages
				next++
				unix.Syscall(unix.SYS_WRITE, uintptr(pipe[1]), uintptr(unsafe.Pointer(&one[0])), 1)
				if _, _, e := unix.Syscall(unix.SYS_READ, uintptr(pipe[0]), uintptr(unsafe.Pointer(&m.Data[i*4096+1])), 1); e != 0 {
					errno = e
				}
			}
			// Warm up: buffers, the queue, the fetchers; and the runtime's
			// threads: a collection that finds a P whose goroutine is in a
			// system call (a fault inside read(2)) hands the P to another
			// thread, creating one if none is idle (7 allocations of the
			// runtime's, seen in 1 run of 30 under -race). Collect while
			// faulting here so that those threads exist before counting.
			gcs := make(chan struct{})
			go func() {
				defer close(gcs)
				for range 8 {
					runtime.GC()
				}
			}()
			for warm := 0; ; warm++ {
				fault()
				select {
				case <-gcs:
				default:
					continue
				}
				if warm >= 16 {
					break
				}
				if warm > pages-faults-1 {
					t.Fatalf("warming up took %d faults, leaving too few pages to count on", warm)
				}
			}
			before := p.Stats().Faults
			n := mallocs(func() {
				for range faults {
					fault()
				}
			})
			if errno != 0 {
				t.Fatalf("read(2) into a served page: %v", errno)
			}
			stop()
			if got := p.Stats().Faults - before; got < faults {
				t.Errorf("only %d faults were served", got)
			}
			if n != 0 {
				t.Errorf("%d allocations in %d faults, want 0", n, faults)
			}
		})
	}
}
