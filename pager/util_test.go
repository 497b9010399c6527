package pager_test

import (
	"testing"

	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// testutilReserve reserves the huge pages a mapping of kind needs: a
// private hugetlb mapping and its shared alias take twice its size.
func testutilReserve(t *testing.T, kind mem.Kind, size int) {
	hp, err := mem.HugePageSize()
	if err != nil {
		t.Fatal(err)
	}
	n := size / hp
	if kind == mem.HugetlbPrivate {
		n *= 2
	}
	testutil.ReserveHugePages(t, n+2)
}
