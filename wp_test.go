package uffd_test

// The wp-unpopulated test of uffd-unit-tests.c (anonymous memory with
// FeatureWPUnpopulated), then write-protection of populated pages on every
// kind and Copy with WriteProtected.

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// selftUnprotect serves write-protect faults by removing the protection of
// the faulting page, which wakes the writer.
func selftUnprotect(u *uffd.UFFD, pageSize int) func(uffd.Message) error {
	return func(msg uffd.Message) error {
		if msg.Event != uffd.EventPagefault {
			return fmt.Errorf("unexpected %v", msg)
		}
		if msg.Flags&uffd.FaultWriteProtect == 0 {
			return fmt.Errorf("unexpected non-WP fault %v", msg)
		}
		addr := msg.Address &^ uintptr(pageSize-1)
		return u.WriteProtect(addr, uintptr(pageSize), false, 0)
	}
}

// selftWPFaultsAt checks that msgs are exactly write-protect write faults
// at the pages in want, in order.
func selftWPFaultsAt(t *testing.T, msgs []uffd.Message, pageSize int, want ...uintptr) {
	t.Helper()
	msgs = distinct(msgs, pageSize)
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages %v, want WP faults at %#x", len(msgs), msgs, want)
	}
	for i, m := range msgs {
		if m.Event != uffd.EventPagefault || m.Address&^uintptr(pageSize-1) != want[i] {
			t.Errorf("message %d: %v, want a fault at %#x", i, m, want[i])
		}
		if m.Flags&uffd.FaultWriteProtect == 0 || m.Flags&uffd.FaultWrite == 0 {
			t.Errorf("message %d: flags %v, want Write|WriteProtect", i, m.Flags)
		}
	}
}

func TestSelftestWPUnpopulated(t *testing.T) {
	u := openUFFD(t, uffd.FeatureWPFaults|uffd.FeatureWPUnpopulated)
	m := mapKind(t, mem.Anonymous, 4)
	ps := uintptr(m.PageSize)
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeWriteProtect); err != nil {
		t.Fatal(err)
	}
	wp := func(i int, on bool) {
		t.Helper()
		if err := u.WriteProtect(m.PageAddr(i), ps, on, 0); err != nil {
			t.Fatalf("WriteProtect(page %d, %v): %v", i, on, err)
		}
	}
	wpBit := func(i int) bool {
		t.Helper()
		return selftPagemap(t, m.PageAddr(i))&selftPMUffdWP != 0
	}
	dontneed := func(i int) {
		t.Helper()
		if err := unix.Madvise(m.Page(i), unix.MADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
	}

	// Protecting an unpopulated page leaves a marker that pagemap shows;
	// unprotecting removes it.
	wp(0, true)
	if !wpBit(0) {
		t.Errorf("unpopulated page protected, but pagemap has no uffd-wp bit")
	}
	if e := selftPagemap(t, m.PageAddr(0)); e&selftPMPresent != 0 {
		t.Errorf("protecting populated the page: pagemap %#x", e)
	}
	wp(0, false)
	if wpBit(0) {
		t.Errorf("page unprotected, but pagemap still has the uffd-wp bit")
	}
	// MADV_DONTNEED zaps the marker; a write then does not fault.
	wp(0, true)
	dontneed(0)
	if wpBit(0) {
		t.Errorf("marker survived MADV_DONTNEED")
	}
	p0 := m.Page(0)
	kernelStore(t, "write page 0 after the marker was zapped", p0, 0, 1)
	if wpBit(0) {
		t.Errorf("uffd-wp bit after faulting in an unprotected page")
	}
	dontneed(0)

	s := serve(t, u, selftUnprotect(u, m.PageSize))

	// A write to a protected unpopulated page raises a WP fault, which
	// unprotecting resolves.
	wp(0, true)
	kernelStore(t, "write protected unpopulated page 0", p0, 10, 42)
	if p0[10] != 42 || p0[11] != 0 {
		t.Errorf("page 0 bytes 10, 11 = %d, %d after the write, want 42, 0", p0[10], p0[11])
	}
	if wpBit(0) {
		t.Errorf("page 0 still write-protected after the fault was resolved")
	}

	// A read of a protected unpopulated page does not fault: it maps the
	// zero page, still protected, so a later write faults.
	wp(1, true)
	p1 := m.Page(1)
	if bad := selftReadPage(t, "read protected unpopulated page 1", p1, -1); bad != -1 {
		t.Errorf("page 1 byte %d not zero", bad)
	}
	if n := len(distinct(s.messages(), m.PageSize)); n != 1 {
		t.Errorf("%d messages after the read, want only the earlier write fault: %v", n, s.messages())
	}
	if !wpBit(1) {
		t.Errorf("page 1 lost its protection when read")
	}
	kernelStore(t, "write protected zero page 1", p1, 5, 9)
	if p1[5] != 9 {
		t.Errorf("page 1 byte 5 = %d after writing 9", p1[5])
	}

	// Protecting a range over populated and unpopulated pages.
	if err := u.WriteProtect(m.Addr(), m.Len(), true, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < m.Pages(); i++ {
		if !wpBit(i) {
			t.Errorf("page %d not protected after protecting the range", i)
		}
	}
	p3 := m.Page(3)
	kernelStore(t, "write protected unpopulated page 3", p3, 0, 3)

	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	selftWPFaultsAt(t, s.messages(), m.PageSize, m.PageAddr(0), m.PageAddr(1), m.PageAddr(3))
}

// selftWPFeatures are the features write-protecting a kind needs.
func selftWPFeatures(kind mem.Kind) uffd.Feature {
	f := uffd.FeatureWPFaults | featuresFor(kind)
	if kind != mem.Anonymous {
		f |= uffd.FeatureWPHugetlbfsShmem
	}
	return f
}

// TestSelftestWPPopulated write-protects populated pages: reads go on, a
// write faults with the WriteProtect flag and waits until unprotected.
func TestSelftestWPPopulated(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		u := openUFFD(t, selftWPFeatures(kind))
		m := mapKind(t, kind, 2)
		ps := uintptr(m.PageSize)
		ioc, err := u.Register(m.Addr(), m.Len(), uffd.ModeWriteProtect)
		if err != nil {
			t.Fatal(err)
		}
		if !ioc.Has(uffd.IoctlWriteProtect) {
			t.Fatalf("Register offers %v, no WriteProtect", ioc)
		}
		// Populate both pages (WP-only registration: no missing faults).
		for i := 0; i < 2; i++ {
			p := m.Page(i)
			kernelStore(t, fmt.Sprintf("populate page %d", i), p, 0, byte(i+1))
		}
		if err := u.WriteProtect(m.PageAddr(0), ps, true, 0); err != nil {
			t.Fatal(err)
		}
		if e := selftPagemap(t, m.PageAddr(0)); e&selftPMUffdWP == 0 {
			t.Errorf("page 0 protected, pagemap %#x has no uffd-wp bit", e)
		}
		s := serve(t, u, selftUnprotect(u, m.PageSize))
		p0, p1 := m.Page(0), m.Page(1)
		r0 := kernelLoad(t, "read protected page 0", p0, 0)
		if r0 != 1 {
			t.Errorf("page 0 byte 0 = %d, want 1", r0)
		}
		if n := len(s.messages()); n != 0 {
			t.Errorf("a read of a protected page raised %d messages", n)
		}
		kernelStore(t, "write unprotected page 1", p1, 1, 11)
		kernelStore(t, "write protected page 0", p0, 1, 10)
		if p0[1] != 10 || p1[1] != 11 {
			t.Errorf("after the writes: page 0 byte 1 = %d, page 1 byte 1 = %d; want 10, 11", p0[1], p1[1])
		}
		if kind.FileBacked() && kind.Shared() && m.Alias[1] != 10 {
			t.Errorf("the alias does not see the write: %d", m.Alias[1])
		}
		if err := s.stop(); err != nil {
			t.Fatal(err)
		}
		selftWPFaultsAt(t, s.messages(), m.PageSize, m.PageAddr(0))
	})
}

// TestSelftestCopyWP resolves missing pages with Copy(WriteProtected): the
// page reads as copied, and the first write to it faults as write-protect.
func TestSelftestCopyWP(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		u := openUFFD(t, selftWPFeatures(kind))
		m := mapKind(t, kind, 2)
		ps := uintptr(m.PageSize)
		if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing|uffd.ModeWriteProtect); err != nil {
			t.Fatal(err)
		}
		n, err := u.Copy(m.PageAddr(0), selftPattern(m.PageSize, 1, 0), uffd.WriteProtected)
		if err != nil || n != int(ps) {
			t.Fatalf("Copy(WriteProtected): %d, %v; want %d, nil", n, err, ps)
		}
		if e := selftPagemap(t, m.PageAddr(0)); e&selftPMUffdWP == 0 || e&selftPMPresent == 0 {
			t.Errorf("page copied write-protected: pagemap %#x, want present and uffd-wp", e)
		}
		// A plain copy for comparison: writable at once.
		if n, err := u.Copy(m.PageAddr(1), selftPattern(m.PageSize, 1, 1), 0); err != nil || n != int(ps) {
			t.Fatalf("Copy: %d, %v", n, err)
		}
		s := serve(t, u, selftUnprotect(u, m.PageSize))
		if bad := selftReadPage(t, "read page copied write-protected", m.Page(0), 0); bad != -1 {
			t.Errorf("page 0 byte %d is not the pattern", bad)
		}
		p0, p1 := m.Page(0), m.Page(1)
		kernelStore(t, "write page copied writable", p1, 0, 0xEE)
		if n := len(s.messages()); n != 0 {
			t.Errorf("reads and a write to a writable page raised %d messages: %v", n, s.messages())
		}
		kernelStore(t, "write page copied write-protected", p0, 0, 0xDD)
		if p0[0] != 0xDD || p1[0] != 0xEE {
			t.Errorf("after the writes: %#x, %#x; want 0xdd, 0xee", p0[0], p1[0])
		}
		if err := s.stop(); err != nil {
			t.Fatal(err)
		}
		selftWPFaultsAt(t, s.messages(), m.PageSize, m.PageAddr(0))

		// WriteProtected needs a range registered with ModeWriteProtect.
		u2 := openUFFD(t, featuresFor(kind))
		m2 := mapKind(t, kind, 1)
		if _, err := u2.Register(m2.Addr(), m2.Len(), uffd.ModeMissing); err != nil {
			t.Fatal(err)
		}
		n, err = u2.Copy(m2.Addr(), selftPattern(m2.PageSize, 1, 0), uffd.WriteProtected)
		selftExpectErr(t, "Copy(WriteProtected) without ModeWriteProtect", n, err, "UFFDIO_COPY", unix.EINVAL, 0)
	})
}
