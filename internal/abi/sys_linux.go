package abi

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Userfaultfd calls userfaultfd(2). flags is a mix of O_CLOEXEC, O_NONBLOCK
// and UserModeOnly.
func Userfaultfd(flags int) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(flags), 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// DevNew asks /dev/userfaultfd (open as devFd) for a new userfaultfd with
// USERFAULTFD_IOC_NEW.
func DevNew(devFd int, flags int) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(devFd), uintptr(USERFAULTFD_IOC_NEW), uintptr(flags))
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// Ioctl issues ioctl(fd, req, arg) and returns the raw errno (0 on success).
// arg must point at one of this package's structs, which the kernel reads
// and, for _IOWR requests, writes back. It never allocates.
func Ioctl(fd int, req uint, arg unsafe.Pointer) syscall.Errno {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	return errno
}

// IoctlRet is Ioctl for requests whose return value carries a result (such
// as PAGEMAP_SCAN's count of regions).
func IoctlRet(fd int, req uint, arg unsafe.Pointer) (int, syscall.Errno) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	return int(r), errno
}
