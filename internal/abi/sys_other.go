//go:build !linux

package abi

import (
	"syscall"
	"unsafe"
)

// userfaultfd and PAGEMAP_SCAN exist only on Linux. Elsewhere every call
// fails with ENOSYS, so that the packages above compile and report the
// missing support in their own terms.

// Userfaultfd fails with ENOSYS.
func Userfaultfd(flags int) (int, error) { return -1, syscall.ENOSYS }

// DevNew fails with ENOSYS.
func DevNew(devFd int, flags int) (int, error) { return -1, syscall.ENOSYS }

// Ioctl returns ENOSYS.
func Ioctl(fd int, req uint, arg unsafe.Pointer) syscall.Errno { return syscall.ENOSYS }

// IoctlRet returns ENOSYS.
func IoctlRet(fd int, req uint, arg unsafe.Pointer) (int, syscall.Errno) {
	return -1, syscall.ENOSYS
}
