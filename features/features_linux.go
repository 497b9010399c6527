package features

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/internal/abi"
)

func uname() Kernel {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return Kernel{}
	}
	return Kernel{Release: unix.ByteSliceToString(u.Release[:]), Machine: unix.ByteSliceToString(u.Machine[:])}
}

// hasCapSysPtrace reads the effective capability set from
// /proc/self/status.
func hasCapSysPtrace() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_PTRACE) != 0
		}
	}
	return false
}

// errnoName spells an errno as C does: "EINVAL".
func errnoName(errno syscall.Errno) string { return unix.ErrnoName(errno) }

// pagemapScan asks PAGEMAP_SCAN to scan an empty range of this process:
// kernels that have the ioctl (6.7) answer with no regions, older ones
// with ENOTTY.
func pagemapScan() PagemapScan {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return PagemapScan{Error: err.Error()}
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return PagemapScan{Error: err.Error()}
	}
	arg := abi.PMScanArg{Size: uint64(unsafe.Sizeof(abi.PMScanArg{}))}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, errno = abi.IoctlRet(int(fd), abi.PAGEMAP_SCAN, unsafe.Pointer(&arg))
	}); err != nil {
		return PagemapScan{Error: err.Error()}
	}
	if errno != 0 {
		return PagemapScan{Error: os.NewSyscallError("PAGEMAP_SCAN", errno).Error()}
	}
	return PagemapScan{Supported: true}
}
