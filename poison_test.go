package uffd_test

// The poison test of uffd-unit-tests.c: UFFDIO_POISON marks missing pages so
// that touching them raises SIGBUS; a fault handler poisons even pages and
// copies odd ones. Plus the count, EEXIST on a populated page and a partial
// poison.

import (
	"fmt"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

func TestSelftestPoison(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		u := openUFFD(t, uffd.FeaturePoison|featuresFor(kind))
		m := mapKind(t, kind, 8)
		ps := uintptr(m.PageSize)
		const op = "UFFDIO_POISON"
		ioc, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing)
		if err != nil {
			t.Fatal(err)
		}
		if !ioc.Has(uffd.IoctlCopy | uffd.IoctlPoison) {
			t.Fatalf("Register offers %v, want Copy and Poison", ioc)
		}

		// Pages 0 and 1 at once.
		n, err := u.Poison(m.PageAddr(0), 2*ps, 0)
		if err != nil || n != int(2*ps) {
			t.Fatalf("Poison of 2 pages: %d, %v; want %d, nil", n, err, 2*ps)
		}
		for i := 0; i < 2; i++ {
			for _, off := range []int{0, m.PageSize / 2, m.PageSize - 1} {
				if !sigbusRead(t, m.Page(i), off) {
					t.Errorf("page %d byte %d: no SIGBUS after Poison", i, off)
				}
			}
		}
		// Poison does not poison a poisoned page again (it wants pte_none),
		// but Copy overwrites the marker, as it does write-protect markers
		// (pte_none_mostly): a handler can still fill a poisoned page.
		n, err = u.Poison(m.PageAddr(0), ps, 0)
		selftExpectErr(t, "Poison of a poisoned page", n, err, op, uffd.ErrPageExists, 0)
		if n, err := u.Copy(m.PageAddr(1), selftPattern(m.PageSize, 1, 1), 0); err != nil || n != int(ps) {
			t.Errorf("Copy over a poisoned page: %d, %v; want %d, nil", n, err, ps)
		}
		if sigbusRead(t, m.Page(1), 0) {
			t.Errorf("page 1: SIGBUS after Copy replaced the poison")
		} else if bad := selftReadPage(t, "read page 1", m.Page(1), 1); bad != -1 {
			t.Errorf("page 1 byte %d is not the pattern", bad)
		}
		if !sigbusRead(t, m.Page(0), 0) {
			t.Errorf("page 0: no SIGBUS after the refused second Poison")
		}

		// Page 3 populated: poisoning pages 2-3 stops after page 2.
		if n, err := u.Copy(m.PageAddr(3), selftPattern(m.PageSize, 1, 3), 0); err != nil || n != int(ps) {
			t.Fatalf("Copy page 3: %d, %v", n, err)
		}
		n, err = u.Poison(m.PageAddr(2), 2*ps, 0)
		selftExpectErr(t, "Poison over a populated page", n, err, op, uffd.ErrPartial, int(ps))
		if !sigbusRead(t, m.Page(2), 0) {
			t.Errorf("page 2: no SIGBUS after a partial Poison")
		}
		if sigbusRead(t, m.Page(3), 0) {
			t.Errorf("page 3: SIGBUS, though it was populated before Poison")
		}
		if bad := selftReadPage(t, "read page 3", m.Page(3), 3); bad != -1 {
			t.Errorf("page 3 byte %d is not the pattern", bad)
		}

		// Faults on pages 4-7: even pages poisoned, odd pages copied.
		page := make([]byte, m.PageSize)
		s := serve(t, u, once(u, m.PageSize, func(msg uffd.Message) error {
			if msg.Event != uffd.EventPagefault || msg.Flags&(uffd.FaultWriteProtect|uffd.FaultMinor) != 0 {
				return fmt.Errorf("unexpected %v", msg)
			}
			addr := msg.Address &^ (ps - 1)
			nr := int((addr - m.Addr()) / ps)
			if nr%2 == 0 {
				_, err := u.Poison(addr, ps, 0)
				return err
			}
			fillPattern(page, nr)
			_, err := u.Copy(addr, page, 0)
			return err
		}))
		sigbus := 0
		for i := 4; i < 8; i++ {
			if sigbusRead(t, m.Page(i), 1) {
				sigbus++
				if i%2 == 1 {
					t.Errorf("page %d (copied) raised SIGBUS", i)
				}
				continue
			}
			if i%2 == 0 {
				t.Errorf("page %d (poisoned) did not raise SIGBUS", i)
			}
			if bad := selftReadPage(t, fmt.Sprintf("read page %d", i), m.Page(i), i); bad != -1 {
				t.Errorf("page %d byte %d is not the pattern", i, bad)
			}
		}
		if sigbus != 2 {
			t.Errorf("%d SIGBUS for 4 faulting pages, want 2", sigbus)
		}
		if err := s.stop(); err != nil {
			t.Fatal(err)
		}
		if got := len(distinct(s.messages(), m.PageSize)); got != 4 {
			t.Errorf("%d faults, want 4 (one per page)", got)
		}
	})
}
