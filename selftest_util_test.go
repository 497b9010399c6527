package uffd_test

// Helpers of the ports of the kernel's uffd-unit-tests.c (the Selftest
// tests). Registered memory is touched inside system calls (see
// kernelLoad), except by the tests of user-mode behaviour.

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
)

// selftNonZero returns the index of the first non-zero byte of p, or -1.
func selftNonZero(p []byte) int {
	for i := range p {
		if p[i] != 0 {
			return i
		}
	}
	return -1
}

// selftMismatch returns the index of the first byte of p that differs from
// page n's pattern (see fillPattern), or -1.
func selftMismatch(p []byte, n int) int {
	for i := range p {
		if p[i] != byte(n+1)^byte(i>>3) {
			return i
		}
	}
	return -1
}

// selftPattern returns a buffer of pages pages of size each, page i holding
// page first+i's pattern.
func selftPattern(size, pages, first int) []byte {
	b := make([]byte, size*pages)
	for i := 0; i < pages; i++ {
		fillPattern(b[i*size:(i+1)*size], first+i)
	}
	return b
}

// selftReadPage reads p inside a system call in a goroutine (it may
// fault; see kernelLoad) and returns the index of the first byte that is
// not page n's pattern, or of the first non-zero byte when n < 0; -1 when
// all match.
func selftReadPage(t *testing.T, what string, p []byte, n int) int {
	t.Helper()
	var got []byte
	var err error
	inGoroutine(t, what, func() { got, err = testutil.KernelCopyOut(p) })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if n < 0 {
		return selftNonZero(got)
	}
	return selftMismatch(got, n)
}

// selftExpectErr checks that err is the *OpError of op matching target,
// with done bytes done.
func selftExpectErr(t *testing.T, what string, n int, err error, op string, target error, done int) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded (%d bytes), want %v", what, n, target)
		return
	}
	if !errors.Is(err, target) {
		t.Errorf("%s: %v, want %v", what, err, target)
	}
	var oe *uffd.OpError
	if !errors.As(err, &oe) || oe.Op != op {
		t.Errorf("%s: %v (%T), want an *OpError of %s", what, err, err, op)
	} else if oe.Done != done {
		t.Errorf("%s: OpError.Done = %d, want %d", what, oe.Done, done)
	}
	if !strings.Contains(err.Error(), op) {
		t.Errorf("%s: %q does not name %s", what, err, op)
	}
	if n != done {
		t.Errorf("%s: %d bytes done, want %d", what, n, done)
	}
}

// pagemap bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	selftPMUffdWP   = 1 << 57
	selftPMPresent  = 1 << 63
	selftPMFilePage = 1 << 61
)

// selftPagemap returns the /proc/self/pagemap entry of the page at addr.
func selftPagemap(t *testing.T, addr uintptr) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr/uintptr(os.Getpagesize())*8)); err != nil {
		t.Fatalf("read pagemap at %#x: %v", addr, err)
	}
	return binary.NativeEndian.Uint64(b[:])
}

// selftIsErrno reports whether err carries a kernel errno (rather than an
// argument error the library caught).
func selftIsErrno(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno)
}

// selftAddr returns the address of b's first byte.
func selftAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
