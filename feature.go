package uffd

import (
	"math/bits"

	"github.com/gouffd/uffd/internal/abi"
	"github.com/gouffd/uffd/internal/bitnames"
)

// Feature is a set of userfaultfd features (UFFD_FEATURE_*), as negotiated by
// the UFFDIO_API handshake.
type Feature uint64

// The features Linux offers, through 6.18.
const (
	// FeatureWPFaults makes write-protect faults of anonymous memory reach
	// the handler (UFFD_FEATURE_PAGEFAULT_FLAG_WP, 5.7).
	FeatureWPFaults Feature = 1 << 0
	// FeatureEventFork reports fork(2) with a new userfaultfd for the child
	// (UFFD_FEATURE_EVENT_FORK, 4.11). Needs CAP_SYS_PTRACE.
	FeatureEventFork Feature = 1 << 1
	// FeatureEventRemap reports mremap(2) (UFFD_FEATURE_EVENT_REMAP, 4.11).
	FeatureEventRemap Feature = 1 << 2
	// FeatureEventRemove reports madvise(MADV_DONTNEED/MADV_REMOVE)
	// (UFFD_FEATURE_EVENT_REMOVE, 4.11).
	FeatureEventRemove Feature = 1 << 3
	// FeatureMissingHugetlbfs allows MISSING registration of hugetlbfs
	// (UFFD_FEATURE_MISSING_HUGETLBFS, 4.11).
	FeatureMissingHugetlbfs Feature = 1 << 4
	// FeatureMissingShmem allows MISSING registration of shmem
	// (UFFD_FEATURE_MISSING_SHMEM, 4.11).
	FeatureMissingShmem Feature = 1 << 5
	// FeatureEventUnmap reports munmap(2) (UFFD_FEATURE_EVENT_UNMAP, 4.11).
	FeatureEventUnmap Feature = 1 << 6
	// FeatureSigbus delivers SIGBUS to the faulting thread instead of an
	// event (UFFD_FEATURE_SIGBUS, 4.14).
	FeatureSigbus Feature = 1 << 7
	// FeatureThreadID reports the faulting thread's id
	// (UFFD_FEATURE_THREAD_ID, 4.14).
	FeatureThreadID Feature = 1 << 8
	// FeatureMinorHugetlbfs allows MINOR registration of hugetlbfs
	// (UFFD_FEATURE_MINOR_HUGETLBFS, 5.13).
	FeatureMinorHugetlbfs Feature = 1 << 9
	// FeatureMinorShmem allows MINOR registration of shmem
	// (UFFD_FEATURE_MINOR_SHMEM, 5.14).
	FeatureMinorShmem Feature = 1 << 10
	// FeatureExactAddress reports the exact faulting address instead of the
	// page's (UFFD_FEATURE_EXACT_ADDRESS, 5.18).
	FeatureExactAddress Feature = 1 << 11
	// FeatureWPHugetlbfsShmem allows write-protect registration of hugetlbfs
	// and shmem (UFFD_FEATURE_WP_HUGETLBFS_SHMEM, 5.19).
	FeatureWPHugetlbfsShmem Feature = 1 << 12
	// FeatureWPUnpopulated write-protects pages that are not yet populated
	// in anonymous memory (UFFD_FEATURE_WP_UNPOPULATED, 6.4).
	FeatureWPUnpopulated Feature = 1 << 13
	// FeaturePoison offers UFFDIO_POISON (UFFD_FEATURE_POISON, 6.6).
	FeaturePoison Feature = 1 << 14
	// FeatureWPAsync makes the kernel resolve write-protect faults itself,
	// for dirty tracking with PAGEMAP_SCAN (UFFD_FEATURE_WP_ASYNC, 6.7).
	FeatureWPAsync Feature = 1 << 15
	// FeatureMove offers UFFDIO_MOVE (UFFD_FEATURE_MOVE, 6.8).
	FeatureMove Feature = 1 << 16

	// AllFeatures is every feature this package knows.
	AllFeatures Feature = 1<<17 - 1
)

type bitInfo struct {
	name   string // Go name, as String prints it
	kernel string // kernel spelling
	since  string // first Linux release that has it
}

var featureInfo = [abi.FeatureCount]bitInfo{
	{"WPFaults", "UFFD_FEATURE_PAGEFAULT_FLAG_WP", "5.7"},
	{"EventFork", "UFFD_FEATURE_EVENT_FORK", "4.11"},
	{"EventRemap", "UFFD_FEATURE_EVENT_REMAP", "4.11"},
	{"EventRemove", "UFFD_FEATURE_EVENT_REMOVE", "4.11"},
	{"MissingHugetlbfs", "UFFD_FEATURE_MISSING_HUGETLBFS", "4.11"},
	{"MissingShmem", "UFFD_FEATURE_MISSING_SHMEM", "4.11"},
	{"EventUnmap", "UFFD_FEATURE_EVENT_UNMAP", "4.11"},
	{"Sigbus", "UFFD_FEATURE_SIGBUS", "4.14"},
	{"ThreadID", "UFFD_FEATURE_THREAD_ID", "4.14"},
	{"MinorHugetlbfs", "UFFD_FEATURE_MINOR_HUGETLBFS", "5.13"},
	{"MinorShmem", "UFFD_FEATURE_MINOR_SHMEM", "5.14"},
	{"ExactAddress", "UFFD_FEATURE_EXACT_ADDRESS", "5.18"},
	{"WPHugetlbfsShmem", "UFFD_FEATURE_WP_HUGETLBFS_SHMEM", "5.19"},
	{"WPUnpopulated", "UFFD_FEATURE_WP_UNPOPULATED", "6.4"},
	{"Poison", "UFFD_FEATURE_POISON", "6.6"},
	{"WPAsync", "UFFD_FEATURE_WP_ASYNC", "6.7"},
	{"Move", "UFFD_FEATURE_MOVE", "6.8"},
}

// Features lists every single feature this package knows, in bit order.
func Features() []Feature {
	fs := make([]Feature, abi.FeatureCount)
	for i := range fs {
		fs[i] = 1 << i
	}
	return fs
}

// Has reports whether every feature of want is in f.
func (f Feature) Has(want Feature) bool { return f&want == want }

// String returns the features' names joined with "|", "0" for none, and
// unknown bits in hex.
func (f Feature) String() string { return bitnames.Format(uint64(f), featureNames) }

// KernelName returns the kernel's spelling of a single feature
// ("UFFD_FEATURE_MOVE"), or "" for a set or an unknown bit.
func (f Feature) KernelName() string {
	if i, ok := single(uint64(f)); ok && i < len(featureInfo) {
		return featureInfo[i].kernel
	}
	return ""
}

// Since returns the first Linux release that has a single feature ("6.8"),
// or "" for a set or an unknown bit.
func (f Feature) Since() string {
	if i, ok := single(uint64(f)); ok && i < len(featureInfo) {
		return featureInfo[i].since
	}
	return ""
}

// Ioctl is a set of userfaultfd ioctls, as the kernel reports them for a
// file descriptor (UFFDIO_API) and for a registered range (UFFDIO_REGISTER).
type Ioctl uint64

// The userfaultfd ioctls.
const (
	IoctlRegister     Ioctl = 1 << 0  // UFFDIO_REGISTER
	IoctlUnregister   Ioctl = 1 << 1  // UFFDIO_UNREGISTER
	IoctlWake         Ioctl = 1 << 2  // UFFDIO_WAKE
	IoctlCopy         Ioctl = 1 << 3  // UFFDIO_COPY
	IoctlZeroPage     Ioctl = 1 << 4  // UFFDIO_ZEROPAGE
	IoctlMove         Ioctl = 1 << 5  // UFFDIO_MOVE
	IoctlWriteProtect Ioctl = 1 << 6  // UFFDIO_WRITEPROTECT
	IoctlContinue     Ioctl = 1 << 7  // UFFDIO_CONTINUE
	IoctlPoison       Ioctl = 1 << 8  // UFFDIO_POISON
	IoctlAPI          Ioctl = 1 << 63 // UFFDIO_API
)

var ioctlInfo = [abi.NrAPI + 1]bitInfo{
	abi.NrRegister:     {"Register", "UFFDIO_REGISTER", "4.3"},
	abi.NrUnregister:   {"Unregister", "UFFDIO_UNREGISTER", "4.3"},
	abi.NrWake:         {"Wake", "UFFDIO_WAKE", "4.3"},
	abi.NrCopy:         {"Copy", "UFFDIO_COPY", "4.3"},
	abi.NrZeropage:     {"ZeroPage", "UFFDIO_ZEROPAGE", "4.3"},
	abi.NrMove:         {"Move", "UFFDIO_MOVE", "6.8"},
	abi.NrWriteprotect: {"WriteProtect", "UFFDIO_WRITEPROTECT", "5.7"},
	abi.NrContinue:     {"Continue", "UFFDIO_CONTINUE", "5.13"},
	abi.NrPoison:       {"Poison", "UFFDIO_POISON", "6.6"},
	abi.NrAPI:          {"API", "UFFDIO_API", "4.3"},
}

// Ioctls lists every single ioctl this package knows, in bit order.
func Ioctls() []Ioctl {
	var out []Ioctl
	for i, b := range ioctlInfo {
		if b.name != "" {
			out = append(out, 1<<i)
		}
	}
	return out
}

// Has reports whether every ioctl of want is in i.
func (i Ioctl) Has(want Ioctl) bool { return i&want == want }

// String returns the ioctls' names joined with "|".
func (i Ioctl) String() string { return bitnames.Format(uint64(i), ioctlNames) }

// KernelName returns the kernel's spelling of a single ioctl ("UFFDIO_COPY").
func (i Ioctl) KernelName() string {
	if n, ok := single(uint64(i)); ok && n < len(ioctlInfo) {
		return ioctlInfo[n].kernel
	}
	return ""
}

// Since returns the first Linux release that has a single ioctl.
func (i Ioctl) Since() string {
	if n, ok := single(uint64(i)); ok && n < len(ioctlInfo) {
		return ioctlInfo[n].since
	}
	return ""
}

// Mode is a set of registration modes (UFFDIO_REGISTER_MODE_*).
type Mode uint64

// Registration modes. They combine: ModeMissing|ModeWriteProtect is the
// usual way to serve and then track a range.
const (
	// ModeMissing reports faults on pages that are not populated.
	ModeMissing Mode = 1 << 0
	// ModeWriteProtect reports writes to write-protected pages.
	ModeWriteProtect Mode = 1 << 1
	// ModeMinor reports faults on pages present in the page cache but not
	// mapped (shmem and hugetlbfs), resolved with Continue.
	ModeMinor Mode = 1 << 2
)

var modeInfo = []bitInfo{
	{"Missing", "UFFDIO_REGISTER_MODE_MISSING", "4.3"},
	{"WriteProtect", "UFFDIO_REGISTER_MODE_WP", "5.7"},
	{"Minor", "UFFDIO_REGISTER_MODE_MINOR", "5.13"},
}

// String returns the modes' names joined with "|".
func (m Mode) String() string { return bitnames.Format(uint64(m), modeNames) }

func single(v uint64) (int, bool) {
	if bits.OnesCount64(v) != 1 {
		return 0, false
	}
	return bits.TrailingZeros64(v), true
}

// The Go names of the bits, for String.
var (
	featureNames = namesOf(featureInfo[:])
	ioctlNames   = namesOf(ioctlInfo[:])
	modeNames    = namesOf(modeInfo)
)

func namesOf(info []bitInfo) []string {
	names := make([]string, len(info))
	for i, b := range info {
		names[i] = b.name
	}
	return names
}
