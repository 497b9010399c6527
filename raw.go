package uffd

import (
	"os"
	"syscall"
	"unsafe"

	"github.com/gouffd/uffd/internal/raw"
)

func init() {
	raw.Ioctl = func(u any, req uint, arg unsafe.Pointer) syscall.Errno {
		return u.(*UFFD).ioctl(req, arg)
	}
	raw.File = func(u any) *os.File { return u.(*UFFD).f }
	raw.Closed = func(u any) bool { return u.(*UFFD).isClosed() }
}
