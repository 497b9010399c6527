//go:build linux

package noncoop

// The programs a helper's forked child runs. The child of a raw clone(2)
// of a Go process has one thread and a copy of the runtime's state, locks
// included: it must not allocate, grow its stack, take a lock, meet a write
// barrier or be instrumented by the race detector. Every function here is
// therefore go:nosplit (the linker checks that the whole call chain fits
// the stack left) and go:norace, touches memory only with plain loads and
// stores of integers through unsafe pointers, and talks to the kernel with
// syscall.RawSyscall6. Results go to a page shared with the helper
// (gresult), and the exit status says whether all went well.

import (
	"syscall"
	"unsafe"
)

// The child programs.
const (
	progEvents  = iota + 1 // uffd-unit-tests.c faulting_process(0): fault, mremap, fault, release, read zeroes
	progSigbus             // touch one page with the default SIGBUS action: expect to die of SIGBUS
	progPagemap            // exit 1 if the page's pagemap entry has the uffd-wp bit, 0 if not
	progTouch              // check pages [lo, hi) hold the pattern, then exit
)

// Phases of progEvents, reported in gresult.phase on failure.
const (
	phaseFirstHalf = iota + 1
	phaseMremap
	phaseSecondHalf
	phaseRelease
	phaseZero
	phaseMunmap
	phaseSigbusSurvived
	phaseOpen
	phaseRead
	phaseTouch
)

var phaseNames = []string{"", "first half", "mremap", "second half", "release", "zero check", "munmap", "no SIGBUS", "open pagemap", "read pagemap", "touch"}

// gresult is written by the child into memory shared with the helper.
type gresult struct {
	phase    uint64 // failing phase, 0 if none
	page     uint64
	word     uint64
	got      uint64
	want     uint64
	errno    uint64
	progress uint64 // pages checked
}

// gjob is the child's program and arguments, set up before the clone.
type gjob struct {
	prog     int
	area     unsafe.Pointer // the registered range
	target   unsafe.Pointer // where progEvents moves it
	res      *gresult       // in a MAP_SHARED page
	pages    uintptr
	psize    uintptr
	lo, hi   uintptr // pages progTouch checks; progSigbus touches lo
	advice   uintptr // progEvents: MADV_DONTNEED or MADV_REMOVE
	wb       bool    // progEvents: write each word 0 back (raises write-protect faults)
	unmapTop bool    // progEvents: munmap the upper half at the end
	path     *byte   // progPagemap: "/proc/self/pagemap\x00"
	buf      *[8]byte
	basePS   uintptr // the base page size, pagemap's unit
}

// pattern is word w of page i of the contents the monitors serve.
//
//go:nosplit
//go:norace
func pattern(i, w uintptr) uint64 {
	return (uint64(i)+1)*0x9E3779B97F4A7C15 ^ uint64(w)*0x2545F4914F6CDD1D | 1
}

// fill writes page i's pattern into p (used by the monitors, not the
// child).
func fill(p []byte, i int) {
	for w := 0; w < len(p)/8; w++ {
		*(*uint64)(unsafe.Pointer(&p[w*8])) = pattern(uintptr(i), uintptr(w))
	}
}

// forkChild clones the calling process; the child runs j and never
// returns. It must be called on a locked OS thread.
//
//go:nosplit
//go:norace
func forkChild(j *gjob, flags uintptr) (int, syscall.Errno) {
	pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, flags|uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno == 0 && pid == 0 {
		gexit(j.run())
	}
	return int(pid), errno
}

//go:nosplit
//go:norace
func gexit(code uintptr) {
	for {
		syscall.RawSyscall6(syscall.SYS_EXIT_GROUP, code, 0, 0, 0, 0, 0)
	}
}

//go:nosplit
//go:norace
func (j *gjob) fail(phase, page, word uintptr, got, want uint64, errno syscall.Errno) uintptr {
	j.res.page, j.res.word, j.res.got, j.res.want, j.res.errno = uint64(page), uint64(word), got, want, uint64(errno)
	j.res.phase = uint64(phase)
	return 1
}

//go:nosplit
//go:norace
func (j *gjob) run() uintptr {
	switch j.prog {
	case progEvents:
		return j.events()
	case progSigbus:
		return j.sigbus()
	case progPagemap:
		return j.pagemap()
	case progTouch:
		for i := j.lo; i < j.hi; i++ {
			if r := j.check(phaseTouch, j.area, i, false); r != 0 {
				return r
			}
		}
		return 0
	}
	return 2
}

// check compares page i at base with its pattern (or with zeroes), word by
// word; wb writes word 0 back first.
//
//go:nosplit
//go:norace
func (j *gjob) check(phase uintptr, base unsafe.Pointer, i uintptr, zero bool) uintptr {
	page := unsafe.Add(base, i*j.psize)
	words := j.psize / 8
	for w := uintptr(0); w < words; w++ {
		got := *(*uint64)(unsafe.Add(page, w*8))
		want := uint64(0)
		if !zero {
			want = pattern(i, w)
		}
		if got != want {
			return j.fail(phase, i, w, got, want, 0)
		}
		if w == 0 && j.wb {
			// Write the same value back: a write-protected page
			// faults, and the monitor unprotects it.
			*(*uint64)(page) = got
		}
	}
	j.res.progress++
	return 0
}

// events is faulting_process(0) of uff-unit-tests.c: read (and write back)
// the first half of the range, move it with mremap, do the same for the
// second half at the new place, release all of it, and check that every
// page now reads as zeroes.
//
//go:nosplit
//go:norace
func (j *gjob) events() uintptr {
	split := (j.pages + 1) / 2
	for i := uintptr(0); i < split; i++ {
		if r := j.check(phaseFirstHalf, j.area, i, false); r != 0 {
			return r
		}
	}
	size := j.pages * j.psize
	const mayMoveFixed = 1 | 2 // MREMAP_MAYMOVE | MREMAP_FIXED
	_, _, errno := syscall.RawSyscall6(syscall.SYS_MREMAP, uintptr(j.area), size, size, mayMoveFixed, uintptr(j.target), 0)
	if errno != 0 {
		return j.fail(phaseMremap, 0, 0, 0, 0, errno)
	}
	for i := split; i < j.pages; i++ {
		if r := j.check(phaseSecondHalf, j.target, i, false); r != 0 {
			return r
		}
	}
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_MADVISE, uintptr(j.target), size, j.advice, 0, 0, 0); errno != 0 {
		return j.fail(phaseRelease, 0, 0, 0, 0, errno)
	}
	wb := j.wb
	j.wb = false
	for i := uintptr(0); i < j.pages; i++ {
		if r := j.check(phaseZero, j.target, i, true); r != 0 {
			return r
		}
	}
	j.wb = wb
	if j.unmapTop {
		top := split * j.psize
		if _, _, errno := syscall.RawSyscall6(syscall.SYS_MUNMAP, uintptr(j.target)+top, size-top, 0, 0, 0, 0); errno != 0 {
			return j.fail(phaseMunmap, 0, 0, 0, 0, errno)
		}
	}
	return 0
}

// sigbus restores the default action of SIGBUS, turns core dumps off and
// reads page lo: with FeatureSigbus on a missing page the child dies of
// SIGBUS; surviving is a failure.
//
//go:nosplit
//go:norace
func (j *gjob) sigbus() uintptr {
	var act [4]uint64 // struct sigaction: handler SIG_DFL, flags, restorer, mask
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(syscall.SIGBUS), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	set := uint64(1) << (uint(syscall.SIGBUS) - 1)
	const sigUnblock = 1
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigUnblock, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
	var lim [2]uint64 // no core file
	const rlimitCore = 4
	syscall.RawSyscall6(syscall.SYS_PRLIMIT64, 0, rlimitCore, uintptr(unsafe.Pointer(&lim)), 0, 0, 0)
	got := *(*uint64)(unsafe.Add(j.area, j.lo*j.psize))
	return j.fail(phaseSigbusSurvived, j.lo, 0, got, 0, 0)
}

// pagemap reads the child's own pagemap entry of the first page.
//
//go:nosplit
//go:norace
func (j *gjob) pagemap() uintptr {
	const atFdcwd = ^uintptr(99) // -100
	fd, _, errno := syscall.RawSyscall6(syscall.SYS_OPENAT, atFdcwd, uintptr(unsafe.Pointer(j.path)), syscall.O_RDONLY, 0, 0, 0)
	if errno != 0 {
		j.fail(phaseOpen, 0, 0, 0, 0, errno)
		return 2
	}
	off := uintptr(j.area) / j.basePS * 8
	n, _, errno := syscall.RawSyscall6(syscall.SYS_PREAD64, fd, uintptr(unsafe.Pointer(j.buf)), 8, off, 0, 0)
	if errno != 0 || n != 8 {
		j.fail(phaseRead, 0, 0, uint64(n), 8, errno)
		return 3
	}
	v := *(*uint64)(unsafe.Pointer(j.buf))
	j.res.got = v
	if v&(1<<57) != 0 { // PM_UFFD_WP
		return 1
	}
	return 0
}
