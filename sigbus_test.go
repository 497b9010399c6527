package uffd_test

import (
	"testing"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// Ported from the "sigbus" and "sigbus-wp" cases of the kernel's
// tools/testing/selftests/mm/uffd-unit-tests.c, which run on every memory
// kind: with UFFD_FEATURE_SIGBUS a fault on a registered missing page (and,
// for sigbus-wp, a write to a write-protected page) raises SIGBUS in the
// faulting thread instead of queueing a message. The selftest then resolves
// the page and retries; after releasing the pages every access raises
// SIGBUS again and no message is ever read. (Its fork step, which needs a
// child process sharing the registration, has no Go counterpart.)

func TestSigbus(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) { testSigbus(t, kind, false) })
}

func TestSigbusWP(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) { testSigbus(t, kind, true) })
}

func testSigbus(t *testing.T, kind mem.Kind, wp bool) {
	features := uffd.FeatureSigbus | featuresFor(kind)
	mode := uffd.ModeMissing
	var copyFlags uffd.Flags
	if wp {
		features |= uffd.FeatureWPFaults
		if kind != mem.Anonymous {
			features |= uffd.FeatureWPHugetlbfsShmem
		}
		mode |= uffd.ModeWriteProtect
		copyFlags = uffd.WriteProtected
	}
	skipUnlessKernelHas(t, features)

	const pages = 4
	u, m, ioctls := registered(t, kind, pages, features, mode)
	ps := m.PageSize
	page := make([]byte, ps)
	for n := 0; n < pages; n++ {
		p := m.Page(n)
		if !sigbusRead(t, p, 100) {
			t.Fatalf("page %d: reading a missing page did not raise SIGBUS", n)
		}
		// Resolve the page; odd pages with a zero page where the kind
		// offers it (and write protection is not asked for: ZeroPage
		// cannot map write-protected).
		zero := !wp && n%2 == 1 && ioctls.Has(uffd.IoctlZeroPage)
		if zero {
			if _, err := u.ZeroPage(m.PageAddr(n), uintptr(ps), 0); err != nil {
				t.Fatal(err)
			}
		} else {
			fillPattern(page, n)
			if _, err := u.Copy(m.PageAddr(n), page, copyFlags); err != nil {
				t.Fatal(err)
			}
		}
		if sigbusRead(t, p, 100) {
			t.Fatalf("page %d: SIGBUS after the page was resolved", n)
		}
		if zero {
			for i := 0; i < ps; i += 512 {
				if p[i] != 0 {
					t.Fatalf("page %d byte %d: %#x after ZeroPage", n, i, p[i])
				}
			}
		} else {
			checkPattern(t, p, n)
			if kind.Shared() {
				checkPattern(t, m.Alias[n*ps:(n+1)*ps], n)
			}
		}
		if wp {
			// Write the same value back, as the selftest does: the
			// page was copied write-protected, so the write raises
			// SIGBUS until the protection is removed.
			v := p[8]
			if !sigbusWrite(t, p, 8, v) {
				t.Fatalf("page %d: writing a write-protected page did not raise SIGBUS", n)
			}
			if err := u.WriteProtect(m.PageAddr(n), uintptr(ps), false, 0); err != nil {
				t.Fatal(err)
			}
			if sigbusWrite(t, p, 8, v) {
				t.Fatalf("page %d: SIGBUS writing after the protection was removed", n)
			}
		}
	}
	if pollReadable(t, u, 0) {
		t.Fatal("faults queued messages although FeatureSigbus is on")
	}

	// Release the pages (MADV_DONTNEED, or MADV_REMOVE for shared kinds):
	// they are missing again and raise SIGBUS again.
	if err := m.Drop(0, len(m.Data)); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < pages; n++ {
		if !sigbusRead(t, m.Page(n), 0) {
			t.Errorf("page %d: no SIGBUS on a released page", n)
		}
		if wp && !sigbusWrite(t, m.Page(n), 0, 1) {
			t.Errorf("page %d: no SIGBUS writing a released page", n)
		}
	}
	if pollReadable(t, u, 0) {
		t.Fatal("faults on released pages queued messages although FeatureSigbus is on")
	}
	// Without the feature the same fault queues a message instead.
	u2 := openUFFD(t, featuresFor(kind))
	if err := u.Unregister(m.Addr(), m.Len()); err != nil {
		t.Fatal(err)
	}
	if _, err := u2.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	s := serve(t, u2, copyPattern(u2, m))
	done := make(chan bool, 1)
	go func() { done <- raisesSigbus(func() { sink = m.Page(0)[0] }) }()
	select {
	case sig := <-done:
		if sig {
			t.Fatal("SIGBUS without FeatureSigbus")
		}
	case <-time.After(hangTimeout):
		t.Fatal("fault without FeatureSigbus was never served")
	}
	if len(s.messages()) == 0 {
		t.Error("fault without FeatureSigbus was served without a message")
	}
	checkPattern(t, m.Page(0), 0)
}
