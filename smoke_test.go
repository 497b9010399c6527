package uffd_test

import (
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// TestServeMissing is the library's basic cycle on every memory kind: each
// page of a registered range is served, on first touch, with its own
// pattern, through ReadMessages and Copy.
func TestServeMissing(t *testing.T) {
	forKinds(t, mem.Kinds, func(t *testing.T, kind mem.Kind) {
		u, m, ioctls := registered(t, kind, 4, featuresFor(kind), uffd.ModeMissing)
		if !ioctls.Has(uffd.IoctlCopy | uffd.IoctlWake) {
			t.Fatalf("range ioctls %v lack Copy and Wake", ioctls)
		}
		s := serve(t, u, once(u, m.PageSize, copyPattern(u, m)))
		for i := 0; i < m.Pages(); i++ {
			if bad := selftReadPage(t, "read a missing page", m.Page(i), i); bad != -1 {
				t.Errorf("page %d byte %d is not the pattern", i, bad)
			}
		}
		if err := s.stop(); err != nil {
			t.Fatal(err)
		}
		if got := len(distinct(s.messages(), m.PageSize)); got != m.Pages() {
			t.Errorf("%d distinct faults, want one per page (%d)", got, m.Pages())
		}
	})
}
