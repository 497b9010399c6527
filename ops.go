package uffd

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/gouffd/uffd/internal/abi"
	"github.com/gouffd/uffd/internal/bitnames"
)

var pageSize = uintptr(os.Getpagesize())

// checkRange validates a range before it reaches the kernel: non-empty,
// aligned to the base page size, and not wrapping around the address space.
func checkRange(op string, addr, length uintptr) error {
	var why string
	switch {
	case length == 0:
		why = "zero length"
	case addr%pageSize != 0:
		why = fmt.Sprintf("address %#x is not aligned to the %d-byte page size", addr, pageSize)
	case length%pageSize != 0:
		why = fmt.Sprintf("length %#x is not a multiple of the %d-byte page size", length, pageSize)
	case addr+length < addr:
		why = fmt.Sprintf("range %#x+%#x wraps around the address space", addr, length)
	default:
		return nil
	}
	return &OpError{Op: op, Addr: addr, Len: length, Err: argError(why)}
}

// Register registers [addr, addr+length) of the process this userfaultfd
// belongs to in the given modes, and returns the ioctls the kernel offers for
// the range: anonymous memory has no Continue, hugetlbfs no ZeroPage.
//
// addr and length must be aligned to the page size of the mapping (2 MiB for
// 2 MiB hugetlbfs pages); they are checked against the base page size here
// and by the kernel for the rest.
func (u *UFFD) Register(addr, length uintptr, mode Mode) (Ioctl, error) {
	const op = "UFFDIO_REGISTER"
	if err := checkRange(op, addr, length); err != nil {
		return 0, err
	}
	if mode == 0 || mode&^Mode(abi.RegisterModeAll) != 0 {
		return 0, &OpError{Op: op, Addr: addr, Len: length, Err: argError(fmt.Sprintf("mode %v: want a combination of Missing, WriteProtect and Minor", mode))}
	}
	reg := abi.UffdioRegister{Range: abi.UffdioRange{Start: uint64(addr), Len: uint64(length)}, Mode: uint64(mode)}
	if errno := u.ioctl(abi.UFFDIO_REGISTER, unsafe.Pointer(&reg)); errno != 0 {
		if errno == syscall.EINVAL {
			return 0, &OpError{Op: op, Addr: addr, Len: length, Err: fmt.Errorf("%w (the mapping must exist and support mode %v: hugetlbfs ranges aligned to the huge page size; ModeMinor only on shmem or hugetlbfs; ModeWriteProtect on shmem or hugetlbfs needs FeatureWPHugetlbfsShmem)", errno, mode)}
		}
		return 0, opErr(op, addr, length, 0, errno)
	}
	return Ioctl(reg.Ioctls), nil
}

// Unregister unregisters [addr, addr+length). Threads waiting on faults in
// the range are woken and fault again as if it was never registered.
func (u *UFFD) Unregister(addr, length uintptr) error {
	const op = "UFFDIO_UNREGISTER"
	if err := checkRange(op, addr, length); err != nil {
		return err
	}
	r := abi.UffdioRange{Start: uint64(addr), Len: uint64(length)}
	if errno := u.ioctl(abi.UFFDIO_UNREGISTER, unsafe.Pointer(&r)); errno != 0 {
		return opErr(op, addr, length, 0, errno)
	}
	return nil
}

// Flags modify the resolving operations. Each operation accepts only the
// flags listed in its documentation.
type Flags uint8

const (
	// DontWake leaves the faulting threads asleep; wake them later with
	// Wake, for instance once for a batch of resolves.
	DontWake Flags = 1 << iota
	// WriteProtected maps the resolved pages write-protected (Copy,
	// Continue): the next write to them faults again, as a write-protect
	// fault. Needs a range registered with ModeWriteProtect.
	WriteProtected
	// AllowSrcHoles lets Move skip holes in the source instead of failing
	// with ErrNoMapping.
	AllowSrcHoles
)

var flagNames = []string{"DontWake", "WriteProtected", "AllowSrcHoles"}

func (f Flags) String() string { return bitnames.Format(uint64(f), flagNames) }

// mode translates flags into one ioctl's mode bits, rejecting the flags the
// ioctl does not take.
func (f Flags) mode(op string, addr, length uintptr, allowed Flags, dontWake, wp, holes uint64) (uint64, error) {
	if bad := f &^ allowed; bad != 0 {
		return 0, &OpError{Op: op, Addr: addr, Len: length, Err: argError(fmt.Sprintf("flags %v not accepted (only %v)", bad, allowed))}
	}
	var m uint64
	if f&DontWake != 0 {
		m |= dontWake
	}
	if f&WriteProtected != 0 {
		m |= wp
	}
	if f&AllowSrcHoles != 0 {
		m |= holes
	}
	return m, nil
}

// result decodes the signed result field of a resolving ioctl: bytes done,
// or a negated errno that must not be counted as progress.
func result(op string, addr, length uintptr, field int64, errno syscall.Errno) (int, error) {
	done := 0
	if field > 0 {
		done = int(field)
	}
	if errno == 0 {
		if field <= 0 { // the kernel always reports progress on success
			done = int(length)
		}
		return done, nil
	}
	return done, opErr(op, addr, length, done, errno)
}

// Copy atomically copies src into the registered range at dst (which may be
// in another process) and wakes the threads waiting there. It returns the
// bytes copied; on a partial copy the error matches ErrPartial. Flags:
// DontWake, WriteProtected.
//
// dst and len(src) must be page-aligned (huge-page-aligned on hugetlbfs).
// An already-populated page stops the copy with ErrPageExists.
func (u *UFFD) Copy(dst uintptr, src []byte, flags Flags) (int, error) {
	const op = "UFFDIO_COPY"
	length := uintptr(len(src))
	if err := checkRange(op, dst, length); err != nil {
		return 0, err
	}
	mode, err := flags.mode(op, dst, length, DontWake|WriteProtected, abi.CopyModeDontwake, abi.CopyModeWP, 0)
	if err != nil {
		return 0, err
	}
	// The kernel gets src's address as an integer: src must not live on a
	// goroutine stack, which can move before the ioctl.
	srcPtr := unsafe.Pointer(unsafe.SliceData(src))
	abi.Escape(srcPtr)
	c := abi.UffdioCopy{Dst: uint64(dst), Src: uint64(uintptr(srcPtr)), Len: uint64(length), Mode: mode}
	errno := u.ioctl(abi.UFFDIO_COPY, unsafe.Pointer(&c))
	runtime.KeepAlive(src)
	return result(op, dst, length, c.Copy, errno)
}

// ZeroPage maps zero pages over [start, start+length) and wakes the threads
// waiting there. Flags: DontWake. Not available on hugetlbfs.
func (u *UFFD) ZeroPage(start, length uintptr, flags Flags) (int, error) {
	const op = "UFFDIO_ZEROPAGE"
	if err := checkRange(op, start, length); err != nil {
		return 0, err
	}
	mode, err := flags.mode(op, start, length, DontWake, abi.ZeropageModeDontwake, 0, 0)
	if err != nil {
		return 0, err
	}
	z := abi.UffdioZeropage{Range: abi.UffdioRange{Start: uint64(start), Len: uint64(length)}, Mode: mode}
	errno := u.ioctl(abi.UFFDIO_ZEROPAGE, unsafe.Pointer(&z))
	return result(op, start, length, z.Zeropage, errno)
}

// Wake wakes the threads waiting on faults in [start, start+length), after
// resolves made with DontWake or a lost race (ErrPageExists).
func (u *UFFD) Wake(start, length uintptr) error {
	const op = "UFFDIO_WAKE"
	if err := checkRange(op, start, length); err != nil {
		return err
	}
	r := abi.UffdioRange{Start: uint64(start), Len: uint64(length)}
	if errno := u.ioctl(abi.UFFDIO_WAKE, unsafe.Pointer(&r)); errno != 0 {
		return opErr(op, start, length, 0, errno)
	}
	return nil
}

// WriteProtect write-protects [start, start+length) when protect is true,
// and removes the protection otherwise (which also wakes the threads
// waiting on write-protect faults there, unless flags has DontWake). The
// range must be registered with ModeWriteProtect. Flags: DontWake.
func (u *UFFD) WriteProtect(start, length uintptr, protect bool, flags Flags) error {
	const op = "UFFDIO_WRITEPROTECT"
	if err := checkRange(op, start, length); err != nil {
		return err
	}
	mode, err := flags.mode(op, start, length, DontWake, abi.WriteprotectModeDontwake, 0, 0)
	if err != nil {
		return err
	}
	if protect {
		mode |= abi.WriteprotectModeWP
	}
	w := abi.UffdioWriteprotect{Range: abi.UffdioRange{Start: uint64(start), Len: uint64(length)}, Mode: mode}
	if errno := u.ioctl(abi.UFFDIO_WRITEPROTECT, unsafe.Pointer(&w)); errno != 0 {
		return opErr(op, start, length, 0, errno)
	}
	return nil
}

// Continue maps the pages already in the page cache (shmem or hugetlbfs)
// over [start, start+length), resolving minor faults, and wakes the threads
// waiting there. Flags: DontWake, WriteProtected.
func (u *UFFD) Continue(start, length uintptr, flags Flags) (int, error) {
	const op = "UFFDIO_CONTINUE"
	if err := checkRange(op, start, length); err != nil {
		return 0, err
	}
	mode, err := flags.mode(op, start, length, DontWake|WriteProtected, abi.ContinueModeDontwake, abi.ContinueModeWP, 0)
	if err != nil {
		return 0, err
	}
	c := abi.UffdioContinue{Range: abi.UffdioRange{Start: uint64(start), Len: uint64(length)}, Mode: mode}
	errno := u.ioctl(abi.UFFDIO_CONTINUE, unsafe.Pointer(&c))
	return result(op, start, length, c.Mapped, errno)
}

// Poison marks [start, start+length) as poisoned: threads touching it get
// SIGBUS, as for a hardware memory error. Use it to fail a fault whose
// contents cannot be had. Needs FeaturePoison. Flags: DontWake.
func (u *UFFD) Poison(start, length uintptr, flags Flags) (int, error) {
	const op = "UFFDIO_POISON"
	if err := checkRange(op, start, length); err != nil {
		return 0, err
	}
	mode, err := flags.mode(op, start, length, DontWake, abi.PoisonModeDontwake, 0, 0)
	if err != nil {
		return 0, err
	}
	p := abi.UffdioPoison{Range: abi.UffdioRange{Start: uint64(start), Len: uint64(length)}, Mode: mode}
	errno := u.ioctl(abi.UFFDIO_POISON, unsafe.Pointer(&p))
	return result(op, start, length, p.Updated, errno)
}

// Move moves the pages at src to the registered range at dst, both in the
// registered process's address space, without copying (anonymous private
// memory only), and wakes the threads waiting at dst. Needs FeatureMove.
// Flags: DontWake, AllowSrcHoles.
func (u *UFFD) Move(dst, src, length uintptr, flags Flags) (int, error) {
	const op = "UFFDIO_MOVE"
	if err := checkRange(op, dst, length); err != nil {
		return 0, err
	}
	if err := checkRange(op, src, length); err != nil {
		return 0, err
	}
	mode, err := flags.mode(op, dst, length, DontWake|AllowSrcHoles, abi.MoveModeDontwake, 0, abi.MoveModeAllowSrcHoles)
	if err != nil {
		return 0, err
	}
	m := abi.UffdioMove{Dst: uint64(dst), Src: uint64(src), Len: uint64(length), Mode: mode}
	errno := u.ioctl(abi.UFFDIO_MOVE, unsafe.Pointer(&m))
	return result(op, dst, length, m.Move, errno)
}
