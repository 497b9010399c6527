package uffd_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// Ported from the "minor" and "minor-wp" cases of the kernel's
// tools/testing/selftests/mm/uffd-unit-tests.c, which run on shmem and
// shared hugetlbfs: the page cache is filled through a second (alias)
// mapping, the registered mapping's first touch of each page raises a minor
// fault, and the handler changes the page through the alias before mapping
// it with UFFDIO_CONTINUE.

// minorKinds are the kinds the selftest runs the minor tests on.
var minorKinds = []mem.Kind{mem.Shmem, mem.Hugetlb}

func TestMinor(t *testing.T) {
	forKinds(t, minorKinds, func(t *testing.T, kind mem.Kind) { testMinor(t, kind, false) })
}

func TestMinorWP(t *testing.T) {
	forKinds(t, minorKinds, func(t *testing.T, kind mem.Kind) { testMinor(t, kind, true) })
}

// skipUnlessKernelHas skips the test, naming the features, when the kernel
// lacks any of them.
func skipUnlessKernelHas(t *testing.T, want uffd.Feature) {
	t.Helper()
	sup, err := uffd.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if missing := want &^ sup.Features; missing != 0 {
		testutil.Skipf(t, "kernel lacks userfaultfd features %v", missing)
	}
}

// minorFeature is the feature that allows MINOR registration of a kind.
func minorFeature(kind mem.Kind) uffd.Feature {
	if kind.Huge() {
		return uffd.FeatureMinorHugetlbfs
	}
	return uffd.FeatureMinorShmem
}

// minorHandler serves minor and write-protect faults of m. The first minor
// fault of a page flips every bit of it through the alias and maps it with
// Continue; a repeated message for the same page (the faulting thread may
// be interrupted by a signal and fault again) only maps or wakes.
type minorHandler struct {
	u  *uffd.UFFD
	m  *mem.Mapping
	wp bool // Continue with WriteProtected; unprotect on write faults

	mu      sync.Mutex
	flipped map[int]bool
	minors  map[int]bool // pages that raised a minor fault
	wps     map[int]bool // pages that raised a write-protect fault
}

func (h *minorHandler) handle(msg uffd.Message) error {
	if msg.Event != uffd.EventPagefault {
		return fmt.Errorf("unexpected event %v", msg.Event)
	}
	ps := uintptr(h.m.PageSize)
	addr := msg.Address &^ (ps - 1)
	if addr < h.m.Addr() || addr >= h.m.Addr()+h.m.Len() {
		return fmt.Errorf("fault at %#x outside the registered range", msg.Address)
	}
	n := int((addr - h.m.Addr()) / ps)
	switch {
	case msg.Flags&uffd.FaultMinor != 0:
		if msg.Flags&uffd.FaultWriteProtect != 0 {
			return fmt.Errorf("minor fault with flags %v", msg.Flags)
		}
		h.mu.Lock()
		h.minors[n] = true
		if !h.flipped[n] {
			h.flipped[n] = true
			// The alias is not registered: writing it never faults.
			alias := h.m.Alias[n*h.m.PageSize : (n+1)*h.m.PageSize]
			for i := range alias {
				alias[i] = ^alias[i]
			}
		}
		h.mu.Unlock()
		var flags uffd.Flags
		if h.wp {
			flags = uffd.WriteProtected
		}
		_, err := h.u.Continue(addr, ps, flags)
		if errors.Is(err, uffd.ErrPageExists) {
			return h.u.Wake(addr, ps)
		}
		return err
	case msg.Flags&uffd.FaultWriteProtect != 0:
		if !h.wp {
			return fmt.Errorf("write-protect fault %v without write-protect registration", msg)
		}
		if msg.Flags&uffd.FaultWrite == 0 {
			return fmt.Errorf("write-protect fault without the write flag: %v", msg.Flags)
		}
		h.mu.Lock()
		h.wps[n] = true
		h.mu.Unlock()
		return h.u.WriteProtect(addr, ps, false, 0)
	}
	return fmt.Errorf("missing fault %v on a range registered for minor faults only", msg)
}

func testMinor(t *testing.T, kind mem.Kind, wp bool) {
	features := minorFeature(kind)
	mode := uffd.ModeMinor
	if wp {
		features |= uffd.FeatureWPFaults | uffd.FeatureWPHugetlbfsShmem
		mode |= uffd.ModeWriteProtect
	}
	skipUnlessKernelHas(t, features)

	const pages = 4
	u, m, ioctls := registered(t, kind, pages, features, mode)
	ps := m.PageSize
	want := uffd.IoctlContinue | uffd.IoctlWake
	if wp {
		want |= uffd.IoctlWriteProtect
	}
	if !ioctls.Has(want) {
		t.Fatalf("range ioctls %v lack %v", ioctls, want&^ioctls)
	}

	// Populate the page cache through the unregistered alias, after
	// registering: this must not raise minor faults.
	for n := 0; n < pages; n++ {
		fillPattern(m.Alias[n*ps:(n+1)*ps], n)
	}

	h := &minorHandler{u: u, m: m, wp: wp, flipped: map[int]bool{}, minors: map[int]bool{}, wps: map[int]bool{}}
	s := serve(t, u, h.handle)

	// Read every page back through the registered mapping: the first touch
	// of each page is a minor fault, and the reader must see the contents
	// as the handler changed them.
	for n := 0; n < pages; n++ {
		var p []byte
		var err error
		inGoroutine(t, "reading the registered mapping", func() { p, err = testutil.KernelCopyOut(m.Page(n)) })
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < ps; i += 512 {
			if got, want := p[i], ^(byte(n+1) ^ byte(i>>3)); got != want {
				t.Fatalf("page %d byte %d: got %#x, want %#x (the flipped pattern)", n, i, got, want)
			}
		}
	}
	h.mu.Lock()
	minors, wps := len(h.minors), len(h.wps)
	h.mu.Unlock()
	if minors != pages || wps != 0 {
		t.Fatalf("after reading: minor faults on %d pages, write-protect faults on %d; want %d and 0 (messages %v)", minors, wps, pages, s.messages())
	}
	for _, msg := range s.messages() {
		if msg.Flags&uffd.FaultWrite != 0 {
			t.Errorf("a read raised %v", msg)
		}
	}

	// Write one byte of every page. With write protection each write
	// faults once more (a write-protect fault, resolved by unprotecting);
	// without, the pages are mapped writable and nothing faults.
	before := len(s.messages())
	for n := 0; n < pages; n++ {
		kernelStore(t, "writing the registered mapping", m.Page(n), 8, 0xA5)
	}
	for n := 0; n < pages; n++ {
		if got := m.Alias[n*ps+8]; got != 0xA5 {
			t.Errorf("page %d: alias reads %#x after the write, want 0xa5", n, got)
		}
	}
	h.mu.Lock()
	minors, wps = len(h.minors), len(h.wps)
	h.mu.Unlock()
	if wp {
		if wps != pages {
			t.Errorf("write-protect faults on %d pages, want %d (messages %v)", wps, pages, s.messages())
		}
	} else if after := len(s.messages()); after != before {
		t.Errorf("writes to mapped pages raised %d messages: %v", after-before, s.messages()[before:])
	}
	if minors != pages {
		t.Errorf("minor faults on %d pages after writing, want still %d", minors, pages)
	}
}
