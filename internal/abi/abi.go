package abi

// API is the only userfaultfd API version (UFFD_API).
const API = 0xAA

// Feature bits of uffdio_api.features (UFFD_FEATURE_*).
const (
	FeaturePagefaultFlagWP  = 1 << 0
	FeatureEventFork        = 1 << 1
	FeatureEventRemap       = 1 << 2
	FeatureEventRemove      = 1 << 3
	FeatureMissingHugetlbfs = 1 << 4
	FeatureMissingShmem     = 1 << 5
	FeatureEventUnmap       = 1 << 6
	FeatureSigbus           = 1 << 7
	FeatureThreadID         = 1 << 8
	FeatureMinorHugetlbfs   = 1 << 9
	FeatureMinorShmem       = 1 << 10
	FeatureExactAddress     = 1 << 11
	FeatureWPHugetlbfsShmem = 1 << 12
	FeatureWPUnpopulated    = 1 << 13
	FeaturePoison           = 1 << 14
	FeatureWPAsync          = 1 << 15
	FeatureMove             = 1 << 16
	FeatureCount            = 17
	FeatureAll              = 1<<FeatureCount - 1
)

// Ioctl command numbers (_UFFDIO_*): the bit positions of uffdio_api.ioctls
// and uffdio_register.ioctls.
const (
	NrRegister     = 0x00
	NrUnregister   = 0x01
	NrWake         = 0x02
	NrCopy         = 0x03
	NrZeropage     = 0x04
	NrMove         = 0x05
	NrWriteprotect = 0x06
	NrContinue     = 0x07
	NrPoison       = 0x08
	NrAPI          = 0x3F
)

// Ioctl type letters.
const (
	IoctlType           = 0xAA // UFFDIO
	DevIoctlType        = 0xAA // USERFAULTFD_IOC
	PagemapIoctlType    = 'f'
	PagemapScanNr       = 16
	DevNewNr            = 0x00
	UserModeOnly        = 1 // UFFD_USER_MODE_ONLY, a flag of userfaultfd(2)
	MsgSize             = 32
	RegisterModeAll     = RegisterModeMissing | RegisterModeWP | RegisterModeMinor
	RegisterModeMissing = 1 << 0
	RegisterModeWP      = 1 << 1
	RegisterModeMinor   = 1 << 2
)

// Mode bits of the resolving ioctls.
const (
	CopyModeDontwake         = 1 << 0
	CopyModeWP               = 1 << 1
	ZeropageModeDontwake     = 1 << 0
	WriteprotectModeWP       = 1 << 0
	WriteprotectModeDontwake = 1 << 1
	ContinueModeDontwake     = 1 << 0
	ContinueModeWP           = 1 << 1
	PoisonModeDontwake       = 1 << 0
	MoveModeDontwake         = 1 << 0
	MoveModeAllowSrcHoles    = 1 << 1
)

// Events (uffd_msg.event) and page-fault flags.
const (
	EventPagefault = 0x12
	EventFork      = 0x13
	EventRemap     = 0x14
	EventRemove    = 0x15
	EventUnmap     = 0x16

	PagefaultFlagWrite = 1 << 0
	PagefaultFlagWP    = 1 << 1
	PagefaultFlagMinor = 1 << 2
)

// UffdioAPI is struct uffdio_api.
type UffdioAPI struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

// UffdioRange is struct uffdio_range.
type UffdioRange struct {
	Start uint64
	Len   uint64
}

// UffdioRegister is struct uffdio_register.
type UffdioRegister struct {
	Range  UffdioRange
	Mode   uint64
	Ioctls uint64
}

// UffdioCopy is struct uffdio_copy. Copy is written by the kernel: bytes
// copied, or a negated errno.
type UffdioCopy struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Copy int64
}

// UffdioZeropage is struct uffdio_zeropage.
type UffdioZeropage struct {
	Range    UffdioRange
	Mode     uint64
	Zeropage int64
}

// UffdioWriteprotect is struct uffdio_writeprotect.
type UffdioWriteprotect struct {
	Range UffdioRange
	Mode  uint64
}

// UffdioContinue is struct uffdio_continue.
type UffdioContinue struct {
	Range  UffdioRange
	Mode   uint64
	Mapped int64
}

// UffdioPoison is struct uffdio_poison.
type UffdioPoison struct {
	Range   UffdioRange
	Mode    uint64
	Updated int64
}

// UffdioMove is struct uffdio_move.
type UffdioMove struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Move int64
}

// Offsets into the 32-byte struct uffd_msg (it is __packed; all fields fall
// on natural boundaries anyway).
const (
	MsgOffEvent       = 0
	MsgOffArg         = 8
	MsgOffPFFlags     = 8
	MsgOffPFAddress   = 16
	MsgOffPFPtid      = 24
	MsgOffForkUfd     = 8
	MsgOffRemapFrom   = 8
	MsgOffRemapTo     = 16
	MsgOffRemapLen    = 24
	MsgOffRemoveStart = 8
	MsgOffRemoveEnd   = 16
)

// PAGEMAP_SCAN (include/uapi/linux/fs.h, Linux 6.7).
const (
	PageIsWPAllowed = 1 << 0
	PageIsWritten   = 1 << 1
	PageIsFile      = 1 << 2
	PageIsPresent   = 1 << 3
	PageIsSwapped   = 1 << 4
	PageIsPFNZero   = 1 << 5
	PageIsHuge      = 1 << 6
	PageIsSoftDirty = 1 << 7
	PageIsGuard     = 1 << 8

	PMScanWPMatching   = 1 << 0
	PMScanCheckWPAsync = 1 << 1
)

// PageRegion is struct page_region.
type PageRegion struct {
	Start      uint64
	End        uint64
	Categories uint64
}

// PMScanArg is struct pm_scan_arg.
type PMScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               uint64
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}
