//go:build cgo && linux

package pager_test

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/hazard"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// TestGCTorture is the proof that the engine serves the Go process's own
// memory safely: goroutines read registered pages through copy(),
// bytes.Equal and append (faults inside runtime.memmove and
// runtime.memequal, where a goroutine cannot be preempted, so that a
// stop-the-world waits for it) while another goroutine calls runtime.GC()
// in a loop. A handler that the stop-the-world stops (a goroutine) hangs
// the process; the engine's threads are not Go's and keep serving.
//
// The workload runs in a child process (this test binary, re-run with
// gcChildEnv set): a hang stops the world, and with it every goroutine of
// the hung process, a watchdog included. The parent waits with a deadline;
// on a hang it asks the child for a goroutine dump (SIGQUIT), kills it and
// fails.
func TestGCTorture(t *testing.T) {
	if os.Getenv(gcChildEnv) != "" {
		gcWorkload(t)
		return
	}
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			out, err, hung := testutil.RunTestChild("TestGCTorture", gcChildEnv+"="+e.name, 240*time.Second)
			if hung {
				t.Fatalf("the pager hung: the workload did not finish in 240 s (a stop-the-world stalled by a fault)\n%s", out)
			}
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "round ") {
					t.Log(l)
				}
			}
		})
	}
}

const (
	gcChildEnv = "UFFD_GC_CHILD" // the engine to use: run the workload
	gcSize     = 64 << 20
	gcReaders  = 4
	gcRounds   = 4
)

// gcWorkload is the child's side.
func gcWorkload(t *testing.T) {
	var eng engine
	for _, e := range engines {
		if e.name == os.Getenv(gcChildEnv) {
			eng = e
		}
	}
	img := pattern(gcSize)
	var gcs atomic.Int64
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			runtime.GC()
			gcs.Add(1)
		}
	}()
	defer func() { close(stop); bg.Wait() }()
	for r := range gcRounds {
		t0, g0 := time.Now(), gcs.Load()
		st := gcRound(t, eng, img)
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
func gcRound(t *testing.T, e engine, img []byte) pager.Stats {
	m, err := mem.Map(mem.Anonymous, gcSize)
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
	p := newPager(t, u, e.with(t, pager.Config{}))
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	stopServe := serving(t, p) // the engine serves from here on
	const ps = 4096
	var bad atomic.Int64
	hazard.ReadPages(m.Data, img, ps, gcReaders, func(i int, ok bool) {
		if !ok && bad.Add(1) <= 3 {
			t.Errorf("page %d differs from the image", i)
		}
	})
	stopServe()
	if !bytes.Equal(m.Data, img) { // every page is there: no faults
		t.Error("the region differs from the image")
	}
	st := p.Stats()
	if st.Pages != gcSize/ps {
		t.Errorf("Pages = %d, want %d", st.Pages, gcSize/ps)
	}
	return st
}
