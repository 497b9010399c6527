// Package raw gives the project's own packages (the pager) the userfaultfd
// ioctls of a *uffd.UFFD at the errno level: no argument checks and no error
// values, so the fault path allocates nothing. Package uffd fills it in.
package raw

import (
	"os"
	"syscall"
	"unsafe"
)

// Ioctl runs one userfaultfd ioctl on u, which must be a *uffd.UFFD, with
// the same reference counting against Close as the library's methods:
// after Close it returns EBADF without a system call.
var Ioctl func(u any, req uint, arg unsafe.Pointer) syscall.Errno

// File returns u's *os.File, registered with the runtime poller, for
// reading through a syscall.RawConn with deadlines. Do not close it.
var File func(u any) *os.File

// Closed reports whether u was closed.
var Closed func(u any) bool
