package pagemap

import (
	"fmt"

	"github.com/gouffd/uffd/internal/abi"
	"github.com/gouffd/uffd/internal/bitnames"
)

// Category is a set of page categories (PAGE_IS_*): what PAGEMAP_SCAN
// matches pages by and reports for them.
type Category uint64

// The categories.
const (
	// WPAllowed: the page is in a range registered for asynchronous
	// write-protection (uffd.FeatureWPAsync with uffd.ModeWriteProtect),
	// so Written is tracked and WPMatching can reset it.
	WPAllowed Category = abi.PageIsWPAllowed
	// Written: the page is not write-protected; in a WPAllowed range, it
	// was written since it was last write-protected.
	Written Category = abi.PageIsWritten
	// File: the page is file-backed (shmem and hugetlbfs included).
	File Category = abi.PageIsFile
	// Present: the page is in memory.
	Present Category = abi.PageIsPresent
	// Swapped: the page is swapped out.
	Swapped Category = abi.PageIsSwapped
	// PFNZero: the page maps the shared zero page.
	PFNZero Category = abi.PageIsPFNZero
	// Huge: the page is part of a PMD-mapped transparent huge page or a
	// hugetlbfs page.
	Huge Category = abi.PageIsHuge
	// SoftDirty: the page is soft-dirty (see the kernel's soft-dirty.rst).
	SoftDirty Category = abi.PageIsSoftDirty
	// Guard: the page is in a guard region (MADV_GUARD_INSTALL). Linux 6.15;
	// older kernels refuse a scan that names it with EINVAL.
	Guard Category = abi.PageIsGuard

	// BaseCategories are the categories of Linux 6.7, where PAGEMAP_SCAN
	// appeared: all but Guard.
	BaseCategories = WPAllowed | Written | File | Present | Swapped | PFNZero | Huge | SoftDirty
	// AllCategories are all the categories this package knows.
	AllCategories = BaseCategories | Guard
)

var categoryNames = [...]string{"WPAllowed", "Written", "File", "Present", "Swapped", "PFNZero", "Huge", "SoftDirty", "Guard"}

// Has reports whether c holds every category of want.
func (c Category) Has(want Category) bool { return c&want == want }

// String returns the categories' names joined with "|", "0" for none,
// and unknown bits in hex.
func (c Category) String() string { return bitnames.Format(uint64(c), categoryNames[:]) }

// Region is a run of contiguous pages [Start, End) whose reported
// categories (ScanOptions.Return) are the same.
type Region struct {
	Start      uintptr
	End        uintptr
	Categories Category
}

// Len returns the region's length in bytes.
func (r Region) Len() uintptr { return r.End - r.Start }

func (r Region) String() string {
	return fmt.Sprintf("[%#x, %#x) %v", r.Start, r.End, r.Categories)
}
