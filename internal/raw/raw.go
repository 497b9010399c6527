// Package raw gives the project's own packages (the pager) the userfaultfd
// ioctls of a *uffd.UFFD at the errno level: no argument checks and no error
// values, so the fault path allocates nothing. Package uffd fills it in.
package raw

import (
	"syscall"
	"unsafe"
)

// Ioctl runs one userfaultfd ioctl on u, which must be a *uffd.UFFD, with
// the same reference counting against Close as the library's methods:
// after Close it returns EBADF without a system call.
var Ioctl func(u any, req uint, arg unsafe.Pointer) syscall.Errno
