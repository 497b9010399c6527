package uffd_test

// The zeropage test of uffd-unit-tests.c: UFFDIO_ZEROPAGE on a registered
// range where Register offers it (everything but hugetlbfs), EEXIST on a
// populated page, EINVAL on hugetlbfs; plus a fault resolved with a zero
// page.

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

func TestSelftestZeropage(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		u := openUFFD(t, featuresFor(kind))
		m := mapKind(t, kind, 2)
		ps := uintptr(m.PageSize)
		const op = "UFFDIO_ZEROPAGE"

		ioc, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing)
		if err != nil {
			t.Fatal(err)
		}
		if kind.Shared() {
			// The selftest registers the alias as well.
			if _, err := u.Register(selftAddr(m.Alias), m.Len(), uffd.ModeMissing); err != nil {
				t.Fatal(err)
			}
		}

		if kind.Huge() {
			if ioc.Has(uffd.IoctlZeroPage) {
				t.Errorf("Register on %v offers ZeroPage: %v", kind, ioc)
			}
			n, err := u.ZeroPage(m.PageAddr(0), ps, 0)
			selftExpectErr(t, "ZeroPage on hugetlbfs", n, err, op, unix.EINVAL, 0)
			if !selftIsErrno(err) {
				t.Errorf("ZeroPage on hugetlbfs: %v was not the kernel's answer", err)
			}
			// Nothing was mapped: the page is still missing, and a Copy
			// fills it.
			if n, err := u.Copy(m.PageAddr(0), selftPattern(m.PageSize, 1, 0), 0); err != nil || n != int(ps) {
				t.Fatalf("Copy after the refused ZeroPage: %d, %v", n, err)
			}
			if bad := selftReadPage(t, "read copied huge page", m.Page(0), 0); bad != -1 {
				t.Errorf("huge page 0 byte %d is not the pattern", bad)
			}
			return
		}

		if !ioc.Has(uffd.IoctlZeroPage) {
			t.Fatalf("Register on %v does not offer ZeroPage: %v", kind, ioc)
		}
		n, err := u.ZeroPage(m.PageAddr(0), ps, 0)
		if err != nil || n != int(ps) {
			t.Fatalf("ZeroPage of one page: %d, %v; want %d, nil", n, err, ps)
		}
		if bad := selftReadPage(t, "read zero page", m.Page(0), -1); bad != -1 {
			t.Errorf("zero page byte %d is not zero", bad)
		}

		// The page is populated now: ZeroPage and Copy both meet EEXIST.
		n, err = u.ZeroPage(m.PageAddr(0), ps, 0)
		selftExpectErr(t, "second ZeroPage", n, err, op, uffd.ErrPageExists, 0)
		selftExpectErr(t, "second ZeroPage", n, err, op, unix.EEXIST, 0)
		n, err = u.Copy(m.PageAddr(0), selftPattern(m.PageSize, 1, 0), 0)
		selftExpectErr(t, "Copy over a zero page", n, err, "UFFDIO_COPY", uffd.ErrPageExists, 0)
		if kind.Shared() {
			// The page cache has the page: the alias sees it populated.
			n, err = u.ZeroPage(selftAddr(m.Alias), ps, 0)
			selftExpectErr(t, "ZeroPage through the alias", n, err, op, uffd.ErrPageExists, 0)
		}

		// A read fault resolved with ZeroPage.
		s := serve(t, u, func(msg uffd.Message) error {
			if msg.Event != uffd.EventPagefault {
				return nil
			}
			_, err := u.ZeroPage(msg.Address&^(ps-1), ps, 0)
			return err
		})
		p := m.Page(1)
		if bad := selftReadPage(t, "read-fault page 1", p, -1); bad != -1 {
			t.Errorf("page 1 byte %d is not zero after a zero-page fault", bad)
		}
		kernelStore(t, "write page 1", p, 100, 7)
		if got := p[100]; got != 7 {
			t.Errorf("page 1 byte 100 = %d after writing 7", got)
		}
		if err := s.stop(); err != nil {
			t.Fatal(err)
		}
		msgs := s.messages()
		if len(msgs) != 1 {
			t.Fatalf("got %d messages %v, want one page fault", len(msgs), msgs)
		}
		if msg := msgs[0]; msg.Event != uffd.EventPagefault || msg.Address&^(ps-1) != m.PageAddr(1) || msg.Flags&uffd.FaultWrite != 0 {
			t.Errorf("message %v, want a read fault at %#x", msg, m.PageAddr(1))
		}
	})
}
