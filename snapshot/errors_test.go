//go:build linux && cgo

package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/snapshot"
)

// failingWriter fails every write after the first ok bytes.
type failingWriter struct {
	ok      int64
	written atomic.Int64
	delay   time.Duration
	calls   atomic.Int64
}

var errDestination = errors.New("destination failed")

func (w *failingWriter) WriteAt(b []byte, off int64) (int, error) {
	w.calls.Add(1)
	if w.delay > 0 {
		time.Sleep(w.delay)
	}
	if w.written.Add(int64(len(b))) > w.ok {
		return 0, errDestination
	}
	return len(b), nil
}

// finishWithin stops the writers, failing if any stays blocked.
func finishWithin(t *testing.T, ws *writers, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { ws.finish(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("a writer is still blocked %v after the snapshot ended", d)
	}
}

// requireUnprotected writes every page and checks that none faulted:
// nothing stays write-protected.
func requireUnprotected(t *testing.T, f *fixture) {
	t.Helper()
	before := f.s.Stats().WPFaults
	p := words(f.m.Data)
	for i := 0; i < len(p); i += f.m.PageSize / 8 {
		atomic.AddUint64(&p[i], 0)
	}
	if n := f.s.Stats().WPFaults - before; n != 0 {
		t.Errorf("%d pages were still write-protected", n)
	}
}

// retake checks that a snapshot after a failed one works, is full and is
// consistent.
func retake(t *testing.T, f *fixture, size int) {
	t.Helper()
	ws := startWriters(f.m.Data, 2, 1<<20, plainWrite)
	path := filepath.Join(f.dir, "after")
	res, err := f.s.TakeFile(context.Background(), path)
	ws.finish()
	if err != nil {
		t.Fatal(err)
	}
	if !res.Full {
		t.Error("the snapshot after a failed one is not full")
	}
	checkCut(t, readData(t, path, size), ws, nil)
}

// TestDestinationError: an io.WriterAt that fails midway (it gets the
// layer staged in a temporary file) fails the snapshot with its error;
// nothing stays protected, not even for tracking, every writer goes on,
// and the next snapshot is full and consistent. TestDiskFull has a file
// destination fail while the writers are protected.
func TestDestinationError(t *testing.T) {
	forKinds(t, func(t *testing.T, kind mem.Kind) {
		size := sizeFor(t, kind, 4096, 8)
		f := newFixture(t, kind, size, snapshot.Config{Track: true, Buffer: 8 << 20})
		fill(f.m.Data)
		ws := startWriters(f.m.Data, 2, 1<<20, plainWrite)
		for ws.count.Load() < 1000 {
		}
		_, err := f.s.Take(context.Background(), &failingWriter{ok: int64(size / 4)})
		finishWithin(t, ws, 10*time.Second)
		if !errors.Is(err, errDestination) {
			t.Fatalf("Take with a failing destination: %v, want %v", err, errDestination)
		}
		t.Log(err)
		requireUnprotected(t, f)
		fill(f.m.Data)
		retake(t, f, size)
	})
}

// TestDiskFull: a file on a full file system (a small tmpfs) fails the
// snapshot with ENOSPC, from the drain thread; nothing stays protected.
func TestDiskFull(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	forKinds(t, func(t *testing.T, kind mem.Kind) {
		size := sizeFor(t, kind, 2048, 4)
		f := newFixture(t, kind, size, snapshot.Config{Buffer: 8 << 20})
		fill(f.m.Data)
		ws := startWriters(f.m.Data, 2, 1<<20, plainWrite)
		for ws.count.Load() < 1000 {
		}
		path := filepath.Join(dir, kind.String())
		_, err := f.s.TakeFile(context.Background(), path)
		finishWithin(t, ws, 10*time.Second)
		os.Remove(path)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("TakeFile on a full file system: %v, want ENOSPC", err)
		}
		t.Log(err)
		requireUnprotected(t, f)
		fill(f.m.Data)
		retake(t, f, size)
	})
}

// TestCancel: a snapshot whose context ends while arming, or midway
// through the save, returns the context's error; nothing stays protected,
// every writer goes on, and the next snapshot is full and consistent.
func TestCancel(t *testing.T) {
	forKinds(t, func(t *testing.T, kind mem.Kind) {
		size := sizeFor(t, kind, 4096, 8)
		f := newFixture(t, kind, size, snapshot.Config{Track: true, Buffer: 8 << 20, ArmChunk: 1, SaveRun: 1})
		for _, when := range []string{"arming", "saving"} {
			t.Run(when, func(t *testing.T) {
				fill(f.m.Data)
				ws := startWriters(f.m.Data, 2, 1<<20, plainWrite)
				for ws.count.Load() < 1000 {
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				hook := func(i int) {
					if i == 1 {
						cancel()
					}
				}
				snapshot.SetArmHook(f.s, nil)
				snapshot.SetSaveHook(f.s, nil)
				if when == "arming" {
					snapshot.SetArmHook(f.s, hook)
				} else {
					snapshot.SetSaveHook(f.s, hook)
				}
				_, err := f.s.TakeFile(ctx, filepath.Join(f.dir, "cancelled"))
				snapshot.SetArmHook(f.s, nil)
				snapshot.SetSaveHook(f.s, nil)
				finishWithin(t, ws, 10*time.Second)
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Take cancelled while %s: %v, want context.Canceled", when, err)
				}
				requireUnprotected(t, f)
				fill(f.m.Data)
				retake(t, f, size)
			})
		}
	})
}

// TestWriteDuringArming: a write to a page protected by the first chunk
// of the first protect pass, made before the next chunk is protected, is
// answered at once (tracked, protected again before the instant); so are
// those of writers running through the whole pass; the snapshot is one
// cut.
func TestWriteDuringArming(t *testing.T) {
	forKinds(t, func(t *testing.T, kind mem.Kind) {
		size := sizeFor(t, kind, 16384, 16)
		f := newFixture(t, kind, size, snapshot.Config{ArmChunk: 1, Buffer: 16 << 20})
		fill(f.m.Data[f.m.PageSize:])
		ws := startWriters(f.m.Data[f.m.PageSize:], 2, 4<<20, plainWrite)
		for ws.count.Load() < 1000 {
		}
		first := words(f.m.Data[:f.m.PageSize])
		mid := make(chan uint64, 1)
		snapshot.SetArmHook(f.s, func(chunk int) {
			if chunk != 0 {
				return
			}
			// WPFaults counts a fault before it is answered; only page
			// 0 is protected yet.
			before := f.s.Stats().WPFaults
			done := make(chan struct{})
			go func() { atomic.StoreUint64(&first[1], 0xa5); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("the write to the first chunk was not answered while arming")
			}
			mid <- f.s.Stats().WPFaults - before
		})
		path := filepath.Join(f.dir, "img")
		res, err := f.s.TakeFile(context.Background(), path)
		ws.finish()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("arm %v (%d rounds, %d pages at the instant), pause %v; %d faults while arming", res.Arm, res.Rounds, res.Final, res.Pause, res.Stats.Tracked)
		// At least one fault: the write was tracked. A second one is
		// the same write faulting again after a signal (Go's preemption
		// signal interrupts a thread blocked in a fault, which re-raises
		// it), so the count is not required to be exactly one.
		if n := <-mid; n < 1 {
			t.Errorf("the write during the first pass was answered after %d faults, want at least 1", n)
		}
		img := readData(t, path, size)
		if got := words(img[:f.m.PageSize])[1]; got != 0xa5 {
			t.Errorf("the word written during arming is %#x in the image, want 0xa5", got)
		}
		checkCut(t, img[f.m.PageSize:], ws, nil)
	})
}
