package abi

import "unsafe"

// iocLayout is one architecture family's _IOC encoding: the values of the
// direction field and the width of the size field (the direction field
// takes the bits above it).
type iocLayout struct {
	none, write, read uintptr
	sizeBits          uint
}

// The two encodings Linux uses: asm-generic/ioctl.h (amd64, arm64, riscv64,
// loong64, s390x, 386, arm) and arch/{mips,powerpc,sparc}/include/uapi/asm/ioctl.h
// (three direction bits, a 13-bit size field).
var (
	iocGeneric = iocLayout{none: 0, write: 1, read: 2, sizeBits: 14}
	iocMIPSPPC = iocLayout{none: 1, write: 4, read: 2, sizeBits: 13}
)

const (
	iocNrShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
)

// ioc is the kernel's _IOC(dir, type, nr, size).
func (l iocLayout) ioc(dir, typ, nr, size uintptr) uint {
	dirShift := iocSizeShift + l.sizeBits
	return uint(dir<<dirShift | typ<<iocTypeShift | nr<<iocNrShift | size<<iocSizeShift)
}

func (l iocLayout) iowr(typ, nr, size uintptr) uint { return l.ioc(l.read|l.write, typ, nr, size) }
func (l iocLayout) ior(typ, nr, size uintptr) uint  { return l.ioc(l.read, typ, nr, size) }
func (l iocLayout) iow(typ, nr, size uintptr) uint  { return l.ioc(l.write, typ, nr, size) }
func (l iocLayout) io(typ, nr uintptr) uint         { return l.ioc(l.none, typ, nr, 0) }

// Ioctl request numbers, computed with the running architecture's _IOC
// formula from the sizes of this package's structs.
var (
	UFFDIO_API          = iocHost.iowr(IoctlType, NrAPI, unsafe.Sizeof(UffdioAPI{}))
	UFFDIO_REGISTER     = iocHost.iowr(IoctlType, NrRegister, unsafe.Sizeof(UffdioRegister{}))
	UFFDIO_UNREGISTER   = iocHost.ior(IoctlType, NrUnregister, unsafe.Sizeof(UffdioRange{}))
	UFFDIO_WAKE         = iocHost.ior(IoctlType, NrWake, unsafe.Sizeof(UffdioRange{}))
	UFFDIO_COPY         = iocHost.iowr(IoctlType, NrCopy, unsafe.Sizeof(UffdioCopy{}))
	UFFDIO_ZEROPAGE     = iocHost.iowr(IoctlType, NrZeropage, unsafe.Sizeof(UffdioZeropage{}))
	UFFDIO_MOVE         = iocHost.iowr(IoctlType, NrMove, unsafe.Sizeof(UffdioMove{}))
	UFFDIO_WRITEPROTECT = iocHost.iowr(IoctlType, NrWriteprotect, unsafe.Sizeof(UffdioWriteprotect{}))
	UFFDIO_CONTINUE     = iocHost.iowr(IoctlType, NrContinue, unsafe.Sizeof(UffdioContinue{}))
	UFFDIO_POISON       = iocHost.iowr(IoctlType, NrPoison, unsafe.Sizeof(UffdioPoison{}))
	USERFAULTFD_IOC_NEW = iocHost.io(DevIoctlType, DevNewNr)
	PAGEMAP_SCAN        = iocHost.iowr(PagemapIoctlType, PagemapScanNr, unsafe.Sizeof(PMScanArg{}))
)
