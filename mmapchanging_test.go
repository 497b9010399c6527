package uffd_test

// The mmap-changing test of uffd-unit-tests.c: while a non-cooperative
// event (here REMOVE, from madvise) waits to be read, every resolving ioctl
// fails with EAGAIN and nothing done (ErrMmapChanging); the madvise caller
// waits until the event is read, and then the ioctls work again. Plus a
// partial copy (ErrPartial): EAGAIN too, but with the bytes done.

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

func TestSelftestMmapChanging(t *testing.T) {
	// The selftest runs on shmem only (the code paths are shared); the
	// other kinds are cheap to add.
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		features := uffd.FeatureEventRemove | uffd.FeatureMove | uffd.FeaturePoison |
			uffd.FeatureMinorShmem | uffd.FeatureMinorHugetlbfs | featuresFor(kind)
		u := openUFFD(t, features)
		m := mapKind(t, kind, 4)
		ps := uintptr(m.PageSize)
		src := mapKind(t, mem.Anonymous, 1)
		fillPattern(src.Data, 0)
		if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
			t.Fatal(err)
		}
		if n, err := u.Copy(m.PageAddr(0), selftPattern(m.PageSize, 1, 0), 0); err != nil || n != int(ps) {
			t.Fatalf("Copy page 0: %d, %v", n, err)
		}

		// The madvise blocks in the kernel until the REMOVE event is read.
		madvised := make(chan error, 1)
		go func() { madvised <- m.Drop(0, m.PageSize) }()
		if !pollReadable(t, u, hangTimeout) {
			t.Fatalf("no message pending within %v", hangTimeout)
		}

		a := m.PageAddr(1)
		page := selftPattern(m.PageSize, 1, 1)
		ops := []struct {
			op string
			fn func() (int, error)
		}{
			{"UFFDIO_COPY", func() (int, error) { return u.Copy(a, page, 0) }},
			{"UFFDIO_ZEROPAGE", func() (int, error) { return u.ZeroPage(a, ps, 0) }},
			{"UFFDIO_MOVE", func() (int, error) { return u.Move(a, src.Addr(), ps, 0) }},
			{"UFFDIO_POISON", func() (int, error) { return u.Poison(a, ps, 0) }},
			{"UFFDIO_CONTINUE", func() (int, error) { return u.Continue(a, ps, 0) }},
			{"UFFDIO_WRITEPROTECT", func() (int, error) { return 0, u.WriteProtect(a, ps, true, 0) }},
		}
		for _, o := range ops {
			n, err := o.fn()
			selftExpectErr(t, o.op+" during an event", n, err, o.op, uffd.ErrMmapChanging, 0)
			selftExpectErr(t, o.op+" during an event", n, err, o.op, unix.EAGAIN, 0)
			if errors.Is(err, uffd.ErrPartial) {
				t.Errorf("%s during an event: %v matches ErrPartial", o.op, err)
			}
		}
		select {
		case err := <-madvised:
			t.Fatalf("madvise returned (%v) before its event was read", err)
		default:
		}

		ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
		defer cancel()
		msgs := make([]uffd.Message, 4)
		n, err := u.ReadMessages(ctx, msgs)
		if err != nil {
			t.Fatalf("read the event: %v", err)
		}
		if n != 1 || msgs[0].Event != uffd.EventRemove || msgs[0].Start != m.PageAddr(0) || msgs[0].End != m.PageAddr(1) {
			t.Fatalf("read %v, want one Remove event of [%#x, %#x)", msgs[:n], m.PageAddr(0), m.PageAddr(1))
		}
		select {
		case err := <-madvised:
			if err != nil {
				t.Fatalf("madvise: %v", err)
			}
		case <-time.After(hangTimeout):
			t.Fatalf("madvise still blocked after its event was read")
		}

		// The event is done: the ioctls work again. Page 0 was dropped
		// and is missing again.
		if n, err := u.Copy(a, page, 0); err != nil || n != int(ps) {
			t.Fatalf("Copy after the event: %d, %v; want %d, nil", n, err, ps)
		}
		if n, err := u.Copy(m.PageAddr(0), selftPattern(m.PageSize, 1, 0), 0); err != nil || n != int(ps) {
			t.Fatalf("Copy into the dropped page 0: %d, %v; want %d, nil", n, err, ps)
		}
		for i := 0; i < 2; i++ {
			if bad := selftReadPage(t, "read page", m.Page(i), i); bad != -1 {
				t.Errorf("page %d byte %d is not the pattern", i, bad)
			}
		}
	})
}

// TestSelftestPartialCopy copies over four pages of which the third is
// populated: mfill_atomic stops there and returns the bytes copied, and the
// ioctl fails with EAGAIN because the count is short (ErrPartial).
func TestSelftestPartialCopy(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		u := openUFFD(t, featuresFor(kind))
		m := mapKind(t, kind, 4)
		ps := m.PageSize
		if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
			t.Fatal(err)
		}
		// Page 2 holds page 9's pattern, to tell it from the big copy's.
		if n, err := u.Copy(m.PageAddr(2), selftPattern(ps, 1, 9), 0); err != nil || n != ps {
			t.Fatalf("Copy page 2: %d, %v", n, err)
		}
		const op = "UFFDIO_COPY"
		n, err := u.Copy(m.Addr(), selftPattern(ps, 4, 0), 0)
		selftExpectErr(t, "Copy over a populated page", n, err, op, uffd.ErrPartial, 2*ps)
		selftExpectErr(t, "Copy over a populated page", n, err, op, unix.EAGAIN, 2*ps)
		if errors.Is(err, uffd.ErrMmapChanging) || errors.Is(err, uffd.ErrPageExists) {
			t.Errorf("partial Copy: %v also matches ErrMmapChanging or ErrPageExists", err)
		}
		// Retrying the rest meets the populated page first: nothing done.
		n, err = u.Copy(m.PageAddr(2), selftPattern(ps, 2, 2), 0)
		selftExpectErr(t, "Copy from the populated page", n, err, op, uffd.ErrPageExists, 0)
		if n, err := u.Copy(m.PageAddr(3), selftPattern(ps, 1, 3), 0); err != nil || n != ps {
			t.Fatalf("Copy page 3: %d, %v", n, err)
		}
		for i, want := range []int{0, 1, 9, 3} {
			if bad := selftReadPage(t, "read page", m.Page(i), want); bad != -1 {
				t.Errorf("page %d byte %d is not page %d's pattern", i, bad, want)
			}
		}
	})
}
