package uffd

import (
	"syscall"
	"unsafe"

	"github.com/gouffd/uffd/internal/raw"
)

func init() {
	raw.Ioctl = func(u any, req uint, arg unsafe.Pointer) syscall.Errno {
		return u.(*UFFD).ioctl(req, arg)
	}
}
