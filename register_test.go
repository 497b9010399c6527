package uffd_test

// The register-ioctls test of uffd-unit-tests.c, with the exact ioctl sets
// Linux 6.18 reports (fs/userfaultfd.c, userfaultfd_register): ranges with
// hugetlbfs get UFFD_API_RANGE_IOCTLS_BASIC (no ZeroPage, no Move), others
// UFFD_API_RANGE_IOCTLS; WriteProtect only with ModeWriteProtect, Continue
// only with ModeMinor; ModeMinor on anonymous memory is refused.

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// selftRegisterFeatures are the features the selftest asks for.
const selftRegisterFeatures = uffd.FeatureMissingHugetlbfs | uffd.FeatureMissingShmem |
	uffd.FeatureWPFaults | uffd.FeatureWPHugetlbfsShmem |
	uffd.FeatureMinorHugetlbfs | uffd.FeatureMinorShmem

// selftRangeIoctls is what UFFDIO_REGISTER reports for a kind and modes.
func selftRangeIoctls(kind mem.Kind, mode uffd.Mode) uffd.Ioctl {
	want := uffd.IoctlWake | uffd.IoctlCopy | uffd.IoctlPoison
	if !kind.Huge() {
		want |= uffd.IoctlZeroPage | uffd.IoctlMove
	}
	if mode&uffd.ModeWriteProtect != 0 {
		want |= uffd.IoctlWriteProtect
	}
	if mode&uffd.ModeMinor != 0 {
		want |= uffd.IoctlContinue
	}
	return want
}

func TestSelftestRegisterIoctls(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		u := openUFFD(t, selftRegisterFeatures)
		m := mapKind(t, kind, 2)
		for mode := uffd.Mode(1); mode <= uffd.ModeMissing|uffd.ModeWriteProtect|uffd.ModeMinor; mode++ {
			// One page, as the selftest; then the whole mapping.
			for _, length := range []uintptr{uintptr(m.PageSize), m.Len()} {
				got, err := u.Register(m.Addr(), length, mode)
				if kind == mem.Anonymous && mode&uffd.ModeMinor != 0 {
					if !errors.Is(err, unix.EINVAL) {
						t.Errorf("Register(%v) on anon: %v, want EINVAL", mode, err)
					}
					var errno syscall.Errno
					if !errors.As(err, &errno) || !strings.Contains(err.Error(), "UFFDIO_REGISTER") {
						t.Errorf("Register(%v) on anon: %v, want the kernel's errno, naming UFFDIO_REGISTER", mode, err)
					}
					if err == nil {
						u.Unregister(m.Addr(), length)
					}
					continue
				}
				if err != nil {
					t.Errorf("Register(%v, %d bytes): %v", mode, length, err)
					continue
				}
				if want := selftRangeIoctls(kind, mode); got != want {
					t.Errorf("Register(%v, %d bytes) ioctls = %v, want %v", mode, length, got, want)
				}
				if err := u.Unregister(m.Addr(), length); err != nil {
					t.Errorf("Unregister after %v: %v", mode, err)
				}
			}
		}
		// Hugetlbfs ranges must be aligned to the huge page size; the
		// kernel checks that part.
		if kind.Huge() {
			_, err := u.Register(m.Addr()+uintptr(mem.PageSize()), uintptr(m.PageSize), uffd.ModeMissing)
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("Register of a range not aligned to the huge page: %v, want EINVAL", err)
			}
			_, err = u.Register(m.Addr(), uintptr(m.PageSize+mem.PageSize()), uffd.ModeMissing)
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("Register of a length not a multiple of the huge page: %v, want EINVAL", err)
			}
		}
	})
}

// selftCheckArgErr checks an argument error caught before the system call:
// EINVAL, an *OpError naming op, and no errno from the kernel inside.
func selftCheckArgErr(t *testing.T, what, op string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want EINVAL", what)
		return
	}
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("%s: %v, want EINVAL", what, err)
	}
	var oe *uffd.OpError
	if !errors.As(err, &oe) || oe.Op != op {
		t.Errorf("%s: %v (%T), want an *OpError of %s", what, err, err, op)
	}
	if !strings.Contains(err.Error(), op) {
		t.Errorf("%s: message %q does not name %s", what, err, op)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		t.Errorf("%s: %v carries errno %v: the kernel was asked", what, err, errno)
	}
}

func TestSelftestRegisterInvalid(t *testing.T) {
	u := openUFFD(t, 0)
	m := mapKind(t, mem.Anonymous, 4)
	ps := uintptr(os.Getpagesize())
	top := ^uintptr(0) &^ (ps - 1)
	const op = "UFFDIO_REGISTER"
	cases := []struct {
		name       string
		addr, size uintptr
		mode       uffd.Mode
	}{
		{"zero length", m.Addr(), 0, uffd.ModeMissing},
		{"misaligned address", m.Addr() + 1, ps, uffd.ModeMissing},
		{"misaligned length", m.Addr(), ps + 100, uffd.ModeMissing},
		{"wrapping range", top, 2 * ps, uffd.ModeMissing},
		{"mode 0", m.Addr(), ps, 0},
		{"unknown mode bit", m.Addr(), ps, uffd.ModeMissing | 1<<3},
		{"only unknown mode bits", m.Addr(), ps, 1 << 40},
	}
	for _, c := range cases {
		_, err := u.Register(c.addr, c.size, c.mode)
		selftCheckArgErr(t, c.name, op, err)
	}
	// The refused calls left the descriptor usable: a proper Register of
	// the same range succeeds.
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatalf("valid Register after refused ones: %v", err)
	}
	if err := u.Unregister(m.Addr(), m.Len()); err != nil {
		t.Fatal(err)
	}
}

// TestSelftestOpsInvalid checks the same pre-syscall validation, and the
// refusal of flags an operation does not take, for the other operations.
func TestSelftestOpsInvalid(t *testing.T) {
	u := openUFFD(t, uffd.FeatureMove|uffd.FeaturePoison)
	m := mapKind(t, mem.Anonymous, 4)
	ps := uintptr(os.Getpagesize())
	a := m.Addr()
	top := ^uintptr(0) &^ (ps - 1)
	page := make([]byte, ps)
	odd := make([]byte, ps+1)
	ranges := []struct {
		name       string
		addr, size uintptr
	}{
		{"zero length", a, 0},
		{"misaligned address", a + 8, ps},
		{"misaligned length", a, ps / 2},
		{"wrapping range", top, 2 * ps},
	}
	for _, r := range ranges {
		selftCheckArgErr(t, "Unregister "+r.name, "UFFDIO_UNREGISTER", u.Unregister(r.addr, r.size))
		selftCheckArgErr(t, "Wake "+r.name, "UFFDIO_WAKE", u.Wake(r.addr, r.size))
		selftCheckArgErr(t, "WriteProtect "+r.name, "UFFDIO_WRITEPROTECT", u.WriteProtect(r.addr, r.size, true, 0))
		for _, c := range []struct {
			op string
			fn func() (int, error)
		}{
			{"UFFDIO_ZEROPAGE", func() (int, error) { return u.ZeroPage(r.addr, r.size, 0) }},
			{"UFFDIO_CONTINUE", func() (int, error) { return u.Continue(r.addr, r.size, 0) }},
			{"UFFDIO_POISON", func() (int, error) { return u.Poison(r.addr, r.size, 0) }},
			{"UFFDIO_MOVE", func() (int, error) { return u.Move(r.addr, a, r.size, 0) }},
			{"UFFDIO_MOVE", func() (int, error) { return u.Move(a, r.addr, r.size, 0) }},
		} {
			n, err := c.fn()
			selftCheckArgErr(t, c.op+" "+r.name, c.op, err)
			if n != 0 {
				t.Errorf("%s %s: %d bytes done, want 0", c.op, r.name, n)
			}
		}
	}
	n, err := u.Copy(a, nil, 0)
	selftCheckArgErr(t, "Copy of nothing", "UFFDIO_COPY", err)
	if n != 0 {
		t.Errorf("Copy of nothing: %d bytes", n)
	}
	_, err = u.Copy(a, odd, 0)
	selftCheckArgErr(t, "Copy of a partial page", "UFFDIO_COPY", err)
	_, err = u.Copy(a+1, page, 0)
	selftCheckArgErr(t, "Copy to a misaligned address", "UFFDIO_COPY", err)

	// Flags an operation does not take.
	_, err = u.Copy(a, page, uffd.AllowSrcHoles)
	selftCheckArgErr(t, "Copy with AllowSrcHoles", "UFFDIO_COPY", err)
	_, err = u.ZeroPage(a, ps, uffd.WriteProtected)
	selftCheckArgErr(t, "ZeroPage with WriteProtected", "UFFDIO_ZEROPAGE", err)
	_, err = u.Poison(a, ps, uffd.AllowSrcHoles)
	selftCheckArgErr(t, "Poison with AllowSrcHoles", "UFFDIO_POISON", err)
	_, err = u.Move(a, a+ps, ps, uffd.WriteProtected)
	selftCheckArgErr(t, "Move with WriteProtected", "UFFDIO_MOVE", err)
	_, err = u.Continue(a, ps, uffd.AllowSrcHoles)
	selftCheckArgErr(t, "Continue with AllowSrcHoles", "UFFDIO_CONTINUE", err)
	selftCheckArgErr(t, "WriteProtect with WriteProtected", "UFFDIO_WRITEPROTECT", u.WriteProtect(a, ps, true, uffd.WriteProtected))
}
