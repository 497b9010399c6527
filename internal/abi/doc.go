// Package abi holds the kernel's userfaultfd and PAGEMAP_SCAN interface as Go
// sees it: constants, fixed-size struct layouts and ioctl request numbers,
// plus the handful of raw system calls that use them.
//
// It follows include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h of
// Linux 6.18. Every struct here has only fixed-size fields and the exact size
// of its C counterpart; abi_test.go checks the layouts and numbers against the
// installed C headers (through cgo) and against the 6.18 header text for what
// the installed headers are too old to have.
//
// Only this package talks to golang.org/x/sys/unix for userfaultfd-specific
// things; the packages above it speak Go types.
package abi
