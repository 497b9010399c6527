package pager_test

import (
	"unsafe"

	"testing"

	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

func testutilReserve(t *testing.T, size int) {
	hp, err := mem.HugePageSize()
	if err != nil {
		t.Fatal(err)
	}
	testutil.ReserveHugePages(t, size/hp+2)
}

func unsafeAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
