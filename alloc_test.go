package uffd_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// The resolving operations and a ReadMessages with a context that is never
// cancelled are the hot path of a fault handler: they must not allocate,
// not once in all the runs (testutil.NoAllocs counts exactly, where
// testing.AllocsPerRun would read 99 allocations in 100 runs as none).

const allocRuns = 100

// assertNoAllocs runs op allocRuns times (after a warm-up run) and fails the
// test if it errs or allocates at all.
func assertNoAllocs(t *testing.T, what string, op func() error) {
	t.Helper()
	var err error
	testutil.NoAllocs(t, what, allocRuns, func() {
		if e := op(); e != nil && err == nil {
			err = e
		}
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// dropPages releases pages of registered memory so that the next resolve
// of them succeeds again. Without FeatureEventRemove this raises no event.
func dropPages(t *testing.T, b []byte) {
	if err := unix.Madvise(b, unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

func TestAllocsCopy(t *testing.T) {
	u, m, _ := registered(t, mem.Anonymous, 1, 0, uffd.ModeMissing)
	page := make([]byte, m.PageSize)
	fillPattern(page, 0)
	assertNoAllocs(t, "Copy", func() error {
		_, err := u.Copy(m.Addr(), page, 0)
		dropPages(t, m.Data)
		return err
	})

	// The error path (the page exists) may allocate; it must still work.
	if _, err := u.Copy(m.Addr(), page, 0); err != nil {
		t.Fatal(err)
	}
	var err error
	allocs := testutil.Mallocs(10, func() {
		_, err = u.Copy(m.Addr(), page, 0)
	})
	if !errors.Is(err, uffd.ErrPageExists) {
		t.Fatalf("Copy over a present page: %v, want ErrPageExists", err)
	}
	t.Logf("Copy over a present page (EEXIST): %d allocations in 10 calls", allocs)
}

func TestAllocsZeroPage(t *testing.T) {
	u, m, _ := registered(t, mem.Anonymous, 1, 0, uffd.ModeMissing)
	assertNoAllocs(t, "ZeroPage", func() error {
		_, err := u.ZeroPage(m.Addr(), m.Len(), 0)
		dropPages(t, m.Data)
		return err
	})
}

func TestAllocsWake(t *testing.T) {
	u, m, _ := registered(t, mem.Anonymous, 1, 0, uffd.ModeMissing)
	assertNoAllocs(t, "Wake", func() error { return u.Wake(m.Addr(), m.Len()) })
}

func TestAllocsWriteProtect(t *testing.T) {
	skipUnlessKernelHas(t, uffd.FeatureWPFaults)
	m := mapKind(t, mem.Anonymous, 1)
	m.Data[0] = 1 // populate before registering: a write-protected page
	u := openUFFD(t, uffd.FeatureWPFaults)
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeWriteProtect); err != nil {
		t.Fatal(err)
	}
	assertNoAllocs(t, "WriteProtect (protect and unprotect)", func() error {
		if err := u.WriteProtect(m.Addr(), m.Len(), true, 0); err != nil {
			return err
		}
		return u.WriteProtect(m.Addr(), m.Len(), false, 0)
	})
}

func TestAllocsReadMessages(t *testing.T) {
	const pages = 4
	u, m, _ := registered(t, mem.Anonymous, pages, 0, uffd.ModeMissing)
	// One long-lived goroutine faults a page per round, so that every
	// ReadMessages has a fault to read. The fault is taken by the kernel,
	// in write(2) copying the page's first byte into a pipe: the count
	// runs with GOMAXPROCS=1, and a thread blocked in a fault of its own
	// load keeps the only P, while every preemption withdraws its message
	// before the reader gets to run. A thread blocked in a system call
	// gives its P back.
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	faults := make(chan int)
	served := make(chan byte)
	defer close(faults)
	go func() {
		var b [1]byte
		for n := range faults {
			if _, err := unix.Write(pipe[1], m.Page(n)[:1]); err != nil {
				served <- 0
				continue
			}
			if _, err := unix.Read(pipe[0], b[:]); err != nil {
				b[0] = 0
			}
			served <- b[0]
		}
	}()
	page := make([]byte, m.PageSize)
	msgs := make([]uffd.Message, 8)
	ctx := context.Background()
	var err error
	round := 0
	testutil.NoAllocs(t, "ReadMessages with context.Background", allocRuns, func() {
		n := round % pages
		round++
		fillPattern(page, n)
		faults <- n
		got, e := u.ReadMessages(ctx, msgs)
		if e != nil {
			err = e
			return
		}
		if got < 1 || msgs[0].Event != uffd.EventPagefault || msgs[0].Address != m.PageAddr(n) {
			err = fmt.Errorf("round %d: read %v, want the fault of page %d", round, msgs[:got], n)
			return
		}
		if _, e := u.Copy(m.PageAddr(n), page, 0); e != nil {
			err = e
			return
		}
		if b := <-served; b != byte(n+1) {
			err = fmt.Errorf("round %d: write(2) copied %#x from page %d, want %#x", round, b, n, byte(n+1))
			return
		}
		dropPages(t, m.Page(n))
	})
	if err != nil {
		t.Fatal(err)
	}
}
