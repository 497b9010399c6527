package abi

import "unsafe"

// ioc builds an ioctl request number with the _IOC formula of the running
// architecture (the direction bits and the width of the size field differ
// between architectures; see iocconst_*.go).
func ioc(dir, typ, nr, size uintptr) uint {
	return uint(dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNrShift | size<<iocSizeShift)
}

const (
	iocNrShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = iocSizeShift + iocSizeBits
)

func iowr(typ, nr, size uintptr) uint { return ioc(iocRead|iocWrite, typ, nr, size) }
func ior(typ, nr, size uintptr) uint  { return ioc(iocRead, typ, nr, size) }
func io(typ, nr uintptr) uint         { return ioc(iocNone, typ, nr, 0) }

// Ioctl request numbers.
var (
	UFFDIO_API          = iowr(IoctlType, NrAPI, unsafe.Sizeof(UffdioAPI{}))
	UFFDIO_REGISTER     = iowr(IoctlType, NrRegister, unsafe.Sizeof(UffdioRegister{}))
	UFFDIO_UNREGISTER   = ior(IoctlType, NrUnregister, unsafe.Sizeof(UffdioRange{}))
	UFFDIO_WAKE         = ior(IoctlType, NrWake, unsafe.Sizeof(UffdioRange{}))
	UFFDIO_COPY         = iowr(IoctlType, NrCopy, unsafe.Sizeof(UffdioCopy{}))
	UFFDIO_ZEROPAGE     = iowr(IoctlType, NrZeropage, unsafe.Sizeof(UffdioZeropage{}))
	UFFDIO_MOVE         = iowr(IoctlType, NrMove, unsafe.Sizeof(UffdioMove{}))
	UFFDIO_WRITEPROTECT = iowr(IoctlType, NrWriteprotect, unsafe.Sizeof(UffdioWriteprotect{}))
	UFFDIO_CONTINUE     = iowr(IoctlType, NrContinue, unsafe.Sizeof(UffdioContinue{}))
	UFFDIO_POISON       = iowr(IoctlType, NrPoison, unsafe.Sizeof(UffdioPoison{}))
	USERFAULTFD_IOC_NEW = io(DevIoctlType, DevNewNr)
	PAGEMAP_SCAN        = iowr(PagemapIoctlType, PagemapScanNr, unsafe.Sizeof(PMScanArg{}))
)
