//go:build !linux

package features

import (
	"runtime"
	"syscall"
)

// Outside Linux there is no userfaultfd: Collect reports the open paths'
// ErrNotSupported errors and what little else applies.

func uname() Kernel { return Kernel{Release: runtime.GOOS, Machine: runtime.GOARCH} }

func hasCapSysPtrace() bool { return false }

func errnoName(errno syscall.Errno) string { return errno.Error() }

func pagemapScan() PagemapScan {
	return PagemapScan{Error: "PAGEMAP_SCAN: not supported on " + runtime.GOOS + " (Linux-only)"}
}
