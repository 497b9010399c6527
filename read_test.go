package uffd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// readAsync runs ReadMessages in a goroutine and delivers its result.
func readAsync(u *uffd.UFFD, ctx context.Context, msgs []uffd.Message) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := u.ReadMessages(ctx, msgs)
		ch <- err
	}()
	return ch
}

// waitErr waits for a result of readAsync, failing the test on a hang.
func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(hangTimeout):
		t.Fatalf("%s: ReadMessages did not return within %v", what, hangTimeout)
		return nil
	}
}

// letBlock gives a goroutine that was just started the chance to block. The
// tests do not depend on it: they pass whether or not the goroutine blocked
// first, and only check more when it did.
func letBlock() { time.Sleep(20 * time.Millisecond) }

func TestReadCloseUnblocks(t *testing.T) {
	for _, ctx := range []context.Context{context.Background(), t.Context()} {
		u, err := uffd.Open(uffd.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ch := readAsync(u, ctx, make([]uffd.Message, 4))
		letBlock()
		if err := u.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		err = waitErr(t, ch, "after Close")
		if !errors.Is(err, uffd.ErrClosed) {
			t.Errorf("blocked ReadMessages after Close: %v, want ErrClosed", err)
		}
	}
}

func TestReadContextCancel(t *testing.T) {
	u := openUFFD(t, 0)
	m := mapKind(t, mem.Anonymous, 2)
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	msgs := make([]uffd.Message, 4)

	// Cancel a blocked read, twice, then check the UFFD still reads the
	// next fault: the read deadline used to interrupt it was reset.
	for round := 0; round < 2; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		ch := readAsync(u, ctx, msgs)
		letBlock()
		cancel()
		err := waitErr(t, ch, "after cancel")
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: ReadMessages after cancel: %v, want an error wrapping context.Canceled", round, err)
		}
		if errors.Is(err, uffd.ErrClosed) {
			t.Fatalf("round %d: cancel reported as ErrClosed: %v", round, err)
		}
	}
	// A context already cancelled fails the read too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := u.ReadMessages(ctx, msgs); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadMessages with a cancelled context: %v", err)
	}

	// Now a fault: both a cancellable and a background read see it.
	for n, ctx := range []context.Context{t.Context(), context.Background()} {
		faulted := make(chan byte, 1)
		go func() {
			b, _ := testutil.KernelLoad(m.Page(n), 0) // 0 on an error, which the check below reports
			faulted <- b
		}()
		got, err := u.ReadMessages(ctx, msgs)
		if err != nil {
			t.Fatalf("ReadMessages after a cancelled read: %v", err)
		}
		if got < 1 || msgs[0].Event != uffd.EventPagefault || msgs[0].Address != m.PageAddr(n) {
			t.Fatalf("read %d messages %v, want a fault at %#x", got, msgs[:got], m.PageAddr(n))
		}
		page := make([]byte, m.PageSize)
		fillPattern(page, n)
		if _, err := u.Copy(m.PageAddr(n), page, 0); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-faulted:
			if b != byte(n+1) {
				t.Fatalf("faulting read got %#x, want %#x", b, byte(n+1))
			}
		case <-time.After(hangTimeout):
			t.Fatal("faulting goroutine not woken by Copy")
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := u.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
}

func TestOpsAfterClose(t *testing.T) {
	m := mapKind(t, mem.Shmem, 2)
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureMissingShmem | uffd.FeatureMinorShmem})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	addr, ps := m.Addr(), uintptr(m.PageSize)
	page := make([]byte, ps)
	ops := map[string]func() error{
		"Register":   func() error { _, err := u.Register(addr, ps, uffd.ModeMissing); return err },
		"Unregister": func() error { return u.Unregister(addr, ps) },
		"Copy":       func() error { _, err := u.Copy(addr, page, 0); return err },
		"ZeroPage":   func() error { _, err := u.ZeroPage(addr, ps, 0); return err },
		"Wake":       func() error { return u.Wake(addr, ps) },
		"WriteProtect": func() error {
			return u.WriteProtect(addr, ps, true, 0)
		},
		"Continue":     func() error { _, err := u.Continue(addr, ps, 0); return err },
		"Poison":       func() error { _, err := u.Poison(addr, ps, 0); return err },
		"Move":         func() error { _, err := u.Move(addr, addr+ps, ps, 0); return err },
		"ReadMessages": func() error { _, err := u.ReadMessages(context.Background(), make([]uffd.Message, 1)); return err },
		"ReadMessages(ctx)": func() error {
			_, err := u.ReadMessages(t.Context(), make([]uffd.Message, 1))
			return err
		},
		"SyscallConn": func() error { _, err := u.SyscallConn(); return err },
	}
	for name, op := range ops {
		err := op()
		if !errors.Is(err, uffd.ErrClosed) {
			t.Errorf("%s after Close: %v, want an error matching ErrClosed", name, err)
		}
	}
}

// threadWchan reads where a thread of this process sleeps in the kernel.
func threadWchan(tid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/wchan", tid))
	return strings.TrimSpace(string(b))
}

func TestReadManyMessages(t *testing.T) {
	const pages = 8
	// Each faulting goroutine keeps a P while its thread sleeps in the
	// kernel; give the reader room.
	testutil.SetGOMAXPROCS(t, max(runtime.GOMAXPROCS(0), pages+2))
	u := openUFFD(t, 0)
	m := mapKind(t, mem.Anonymous, pages)
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	tids := make(chan int, pages)
	results := make(chan byte, pages)
	for n := 0; n < pages; n++ {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			b, _ := testutil.KernelLoad(m.Page(n), 0)
			results <- b
		}()
	}
	var threads []int
	for len(threads) < pages {
		threads = append(threads, <-tids)
	}

	// Once every thread sleeps in handle_userfault, all their messages
	// are queued and one read returns several. A thread interrupted by a
	// signal (the Go runtime's preemption) faults again, so retry a little.
	msgs := make([]uffd.Message, 2*pages)
	best := 0
	seen := map[uintptr]bool{}
	deadline := time.Now().Add(hangTimeout)
	for attempt := 0; best < 2 && time.Now().Before(deadline); attempt++ {
		allBlocked := true
		for _, tid := range threads {
			if threadWchan(tid) != "handle_userfault" {
				allBlocked = false
			}
		}
		if !allBlocked {
			time.Sleep(time.Millisecond)
			continue
		}
		n, err := u.ReadMessages(t.Context(), msgs)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs[:n] {
			if msg.Event != uffd.EventPagefault || msg.Address < m.Addr() || msg.Address >= m.Addr()+m.Len() {
				t.Fatalf("unexpected message %v", msg)
			}
			seen[msg.Address] = true
		}
		best = max(best, n)
	}
	t.Logf("largest read: %d messages; %d distinct pages", best, len(seen))
	if best < 2 {
		var wchans []string
		for _, tid := range threads {
			wchans = append(wchans, threadWchan(tid))
		}
		t.Errorf("no read returned more than %d message with %d threads faulting (sleeping in %q)", best, pages, wchans)
	}
	// Serve them all.
	page := make([]byte, m.PageSize)
	for n := 0; n < pages; n++ {
		fillPattern(page, n)
		if _, err := u.Copy(m.PageAddr(n), page, 0); err != nil {
			t.Fatal(err)
		}
	}
	for n := 0; n < pages; n++ {
		select {
		case <-results:
		case <-time.After(hangTimeout):
			t.Fatal("faulting goroutines not woken")
		}
	}
}

func TestReadThreadID(t *testing.T) {
	for _, withFeature := range []bool{true, false} {
		t.Run(fmt.Sprintf("feature=%v", withFeature), func(t *testing.T) {
			var features uffd.Feature
			if withFeature {
				features = uffd.FeatureThreadID
			}
			u := openUFFD(t, features)
			m := mapKind(t, mem.Anonymous, 1)
			if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
				t.Fatal(err)
			}
			s := serve(t, u, copyPattern(u, m))
			var tid int
			var got byte
			var err error
			inGoroutine(t, "faulting read", func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				tid = unix.Gettid()
				got, err = testutil.KernelLoad(m.Page(0), 0)
			})
			if err != nil || got != 1 {
				t.Fatalf("read %#x, %v; want 0x1", got, err)
			}
			msgs := s.messages()
			if len(msgs) == 0 {
				t.Fatal("no message")
			}
			for _, msg := range msgs {
				want := 0
				if withFeature {
					want = tid
				}
				if msg.ThreadID != want {
					t.Errorf("message %v: thread id %d, want %d", msg, msg.ThreadID, want)
				}
			}
		})
	}
}

func TestReadExactAddress(t *testing.T) {
	const off = 123
	for _, withFeature := range []bool{true, false} {
		t.Run(fmt.Sprintf("feature=%v", withFeature), func(t *testing.T) {
			var features uffd.Feature
			if withFeature {
				features = uffd.FeatureExactAddress
			}
			u := openUFFD(t, features)
			m := mapKind(t, mem.Anonymous, 1)
			if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
				t.Fatal(err)
			}
			s := serve(t, u, copyPattern(u, m))
			got := kernelLoad(t, "faulting read", m.Page(0), off)
			if want := byte(1) ^ byte(off>>3); got != want {
				t.Fatalf("read %#x, want %#x", got, want)
			}
			want := m.PageAddr(0)
			if withFeature {
				want += off
			}
			msgs := s.messages()
			if len(msgs) == 0 {
				t.Fatal("no message")
			}
			for _, msg := range msgs {
				if msg.Address != want {
					t.Errorf("message %v: address %#x, want %#x", msg, msg.Address, want)
				}
			}
		})
	}
}

func TestReadWriteFlag(t *testing.T) {
	u := openUFFD(t, 0)
	m := mapKind(t, mem.Anonymous, 2)
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	s := serve(t, u, copyPattern(u, m))
	kernelLoad(t, "faulting read", m.Page(0), 0)
	kernelStore(t, "faulting write", m.Page(1), 0, 7)
	if m.Page(1)[0] != 7 {
		t.Fatal("write lost")
	}
	reads, writes := 0, 0
	for _, msg := range s.messages() {
		switch msg.Address {
		case m.PageAddr(0):
			reads++
			if msg.Flags&uffd.FaultWrite != 0 {
				t.Errorf("read fault %v has the write flag", msg)
			}
		case m.PageAddr(1):
			writes++
			if msg.Flags&uffd.FaultWrite == 0 {
				t.Errorf("write fault %v lacks the write flag", msg)
			}
		default:
			t.Errorf("unexpected message %v", msg)
		}
		if msg.Flags&^uffd.FaultWrite != 0 {
			t.Errorf("missing fault %v with flags other than Write", msg)
		}
	}
	if reads == 0 || writes == 0 {
		t.Errorf("%d read and %d write fault messages, want both", reads, writes)
	}
}
