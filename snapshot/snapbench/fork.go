//go:build linux

package snapbench

import (
	"syscall"
	"unsafe"
)

// The fork() baseline, as Redis' BGSAVE does it: the child of a fork
// writes its copy of the memory to a file and exits. The child of a raw
// clone(2) of a Go process has one thread and a copy of the runtime's
// state, locks included: it must not allocate, grow its stack, take a
// lock or be instrumented by the race detector. Its functions are
// go:nosplit and go:norace and talk to the kernel with
// syscall.RawSyscall6 only.

// forkJob is what the child writes: n bytes at addr to fd, from offset 0.
type forkJob struct {
	fd    uintptr
	addr  unsafe.Pointer
	n     uintptr
	chunk uintptr
}

// forkWrite forks; the child writes j and exits (status 0, or 1 on a
// failed write). It must be called on a locked OS thread.
//
//go:nosplit
//go:norace
func forkWrite(j *forkJob) (int, syscall.Errno) {
	pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno == 0 && pid == 0 {
		childExit(j.write())
	}
	return int(pid), errno
}

//go:nosplit
//go:norace
func (j *forkJob) write() uintptr {
	for off := uintptr(0); off < j.n; {
		n := j.n - off
		if n > j.chunk {
			n = j.chunk
		}
		w, _, errno := syscall.RawSyscall6(syscall.SYS_PWRITE64, j.fd, uintptr(j.addr)+off, n, off, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 || w == 0 {
			return 1
		}
		off += w
	}
	return 0
}

//go:nosplit
//go:norace
func childExit(code uintptr) {
	for {
		syscall.RawSyscall6(syscall.SYS_EXIT_GROUP, code, 0, 0, 0, 0, 0)
	}
}
