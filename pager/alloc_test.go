package pager_test

import (
	"fmt"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// TestFaultPathAllocs: serving a fault allocates nothing, in every reader
// mode, with events ordered, with prefetch. testing.AllocsPerRun runs with
// GOMAXPROCS=1, where a goroutine blocked in a fault would keep the only P;
// the faults are therefore taken inside read(2) (a kernel-mode fault), which
// releases the P to the pager.
func TestFaultPathAllocs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      pager.Config
		features uffd.Feature
	}{
		{"poller", pager.Config{}, 0},
		{"thread", pager.Config{Reader: pager.ReaderThread}, 0},
		{"events", pager.Config{}, uffd.FeatureEventRemove | uffd.FeatureEventUnmap | uffd.FeatureEventRemap},
		{"adaptive", pager.Config{Prefetch: pager.Adaptive()}, uffd.FeatureEventRemove},
		{"func source", pager.Config{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const pages = 512
			u, m := setup(t, mem.Anonymous, pages*4096, tc.features)
			img := pattern(pages * 4096)
			var src pager.Source = pager.Image(img)
			if tc.name == "func source" {
				src = pager.Func(int64(len(img)), func(b []byte, off int64) error { copy(b, img[off:]); return nil })
			}
			p := pager.New(u, tc.cfg)
			add(t, p, m, src, pager.PoisonOnError)
			stop := serving(t, p)
			var pipe [2]int
			if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pipe[0])
			defer unix.Close(pipe[1])
			one := []byte{0xEE}
			next := 0
			var err error
			fault := func() {
				if err != nil || next >= pages {
					return
				}
				// Random-ish order defeats prefetch, so each run faults.
				i := (next * 97) % pages
				next++
				unix.Write(pipe[1], one)
				_, _, errno := unix.Syscall(unix.SYS_READ, uintptr(pipe[0]), uintptr(unsafe.Pointer(&m.Data[i*4096+1])), 1)
				if errno != 0 {
					err = fmt.Errorf("read(2) into page %d: %v", i, errno)
				}
			}
			for range 8 { // warm up: buffers, the poller, the thread
				fault()
			}
			allocs := testing.AllocsPerRun(200, fault)
			if err != nil {
				t.Fatal(err)
			}
			stop()
			if allocs != 0 {
				t.Errorf("%v allocations per fault, want 0", allocs)
			}
			if st := p.Stats(); st.Faults < 200 {
				t.Errorf("only %d faults were served", st.Faults)
			}
		})
	}
}
