// Package abi holds the kernel's userfaultfd and PAGEMAP_SCAN interface as Go
// sees it: constants, fixed-size struct layouts and ioctl request numbers,
// plus the handful of raw system calls that use them.
//
// It follows include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h of
// Linux 6.18. Every struct here has only fixed-size fields and the exact size
// of its C counterpart; abi_test.go checks the layouts and numbers against the
// installed C headers (through internal/cdefs, a cgo package, since test
// files cannot use cgo) and against values transcribed from the 6.18 headers
// for what the installed headers are too old to have. Ioctl request numbers
// are computed with the running architecture's _IOC formula, never pasted.
//
// On operating systems other than Linux the system calls fail with ENOSYS.
//
// Only this package talks to golang.org/x/sys/unix for userfaultfd-specific
// things; the packages above it speak Go types.
package abi
