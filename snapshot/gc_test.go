//go:build linux && cgo

package snapshot_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/snapshot"
)

// TestGCTorture is the proof that snapshots of the Go process's own memory
// are safe: goroutines write the memory through copy() and append (write
// faults inside runtime.memmove, where a goroutine cannot be preempted, so
// that a stop-the-world waits for it) while another goroutine calls
// runtime.GC() in a loop, through full and incremental snapshots. Every
// answer to those faults (tracking, holding, copy-before-write, the drain
// to the file) runs in C; a handler the stop-the-world could stop would
// hang the process.
//
// The workload runs in a child process: a hang stops every goroutine of
// the hung process, a watchdog included. On a hang the parent asks the
// child for a goroutine dump (SIGQUIT), kills it and fails.
func TestGCTorture(t *testing.T) {
	if os.Getenv(gcChildEnv) != "" {
		gcWorkload(t)
		return
	}
	out, err, hung := testutil.RunTestChild("TestGCTorture", gcChildEnv+"=1", 240*time.Second)
	if hung {
		t.Fatalf("the snapshot hung: the workload did not finish in 240 s (a stop-the-world stalled by a fault)\n%s", out)
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "round ") {
			t.Log(l)
		}
	}
}

const (
	gcChildEnv = "UFFD_SNAPSHOT_GC_CHILD"
	gcSize     = 32 << 20
	gcWriters  = 3
	gcRounds   = 6
)

// wordLen is 8, in a variable so that copy and append call memmove.
var wordLen = 8

// runtimeWrite writes val at word k through runtime.memmove: copy() on
// even words, append on odd ones.
func runtimeWrite(_ []uint64, b []byte, k int, val uint64) {
	var tmp [8]byte
	binary.LittleEndian.PutUint64(tmp[:], val)
	off := k * 8
	if k%2 == 0 {
		copy(b[off:off+wordLen], tmp[:wordLen])
	} else {
		_ = append(b[off:off:off+8], tmp[:wordLen]...)
	}
}

func gcWorkload(t *testing.T) {
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
	f := newFixture(t, mem.Anonymous, gcSize, snapshot.Config{Track: true, Buffer: 4 << 20, ArmChunk: 1 << 20})
	fill(f.m.Data)
	var paths []string
	for r := range gcRounds {
		before := append([]uint64(nil), words(f.m.Data)...)
		g0, t0 := gcs.Load(), time.Now()
		ws := startWriters(f.m.Data, gcWriters, 1<<20, runtimeWrite)
		for ws.count.Load() < 1000 {
		}
		path := filepath.Join(f.dir, fmt.Sprint(r))
		res, err := f.s.TakeFile(context.Background(), path)
		n := ws.count.Load()
		ws.finish()
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
		c, err := snapshot.OpenChain(paths...)
		if err != nil {
			t.Fatal(err)
		}
		checkCut(t, c.Bytes(), ws, before)
		c.Close()
		if t.Failed() {
			return
		}
		fmt.Printf("round %d: full %v, %d pages, %d writes, %d GCs meanwhile, pause %v, %d copy-before-write faults, %d parked, in %v\n",
			r, res.Full, res.Pages, n, gcs.Load()-g0, res.Pause, res.Stats.CowFaults, res.Stats.Parked, time.Since(t0).Round(time.Millisecond))
	}
}
