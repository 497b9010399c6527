package firecracker

import (
	"os"
	"slices"
)

// MaxRegions bounds the regions of one VM. Firecracker uses one to a few
// (a memory hotplug region adds one); the bound keeps a hostile message
// from costing much.
const MaxRegions = 4096

// Validate checks regions before any of them is served: each page size is
// the base page size or one of pageSizes (the huge page sizes the kernel
// offers); each region is non-empty, aligned to its page size in address
// and length, within the memory file of fileSize bytes, and overlaps no
// other region in the address space. (Regions may share file ranges: only
// addresses must be distinct.) Errors match ErrHandshake.
func Validate(ms []Mapping, fileSize int64, pageSizes []int) error {
	if len(ms) == 0 {
		return reject(ReasonRegion, "no regions")
	}
	if len(ms) > MaxRegions {
		return reject(ReasonRegion, "%d regions; at most %d are accepted", len(ms), MaxRegions)
	}
	base := uint64(os.Getpagesize())
	for i, m := range ms {
		if m.PageSize != base && !slices.Contains(pageSizes, int(m.PageSize)) {
			return reject(ReasonPageSize, "region %d: page size %d is neither the base page size %d nor a huge page size this kernel offers %v", i, m.PageSize, base, pageSizes)
		}
		ps := m.PageSize
		switch {
		case m.Size == 0:
			return reject(ReasonRegion, "region %d: size 0", i)
		case m.BaseHostVirtAddr%ps != 0:
			return reject(ReasonRegion, "region %d: address %#x is not aligned to its %d-byte pages", i, m.BaseHostVirtAddr, ps)
		case m.Size%ps != 0:
			return reject(ReasonRegion, "region %d: size %#x is not a multiple of its %d-byte pages", i, m.Size, ps)
		case m.Offset%base != 0:
			return reject(ReasonRegion, "region %d: file offset %#x is not aligned to the %d-byte base page", i, m.Offset, base)
		case m.BaseHostVirtAddr+m.Size < m.BaseHostVirtAddr:
			return reject(ReasonRegion, "region %d: [%#x, +%#x) wraps around the address space", i, m.BaseHostVirtAddr, m.Size)
		case m.Offset+m.Size < m.Offset || fileSize < 0 || m.Offset+m.Size > uint64(fileSize):
			return reject(ReasonRegion, "region %d: file range [%#x, %#x) is outside the %d-byte memory file", i, m.Offset, m.Offset+m.Size, fileSize)
		}
	}
	sorted := ByAddress(ms)
	for i := 1; i < len(sorted); i++ {
		if prev, cur := sorted[i-1], sorted[i]; cur.BaseHostVirtAddr < prev.End() {
			return reject(ReasonRegion, "regions %v and %v overlap", prev, cur)
		}
	}
	return nil
}
