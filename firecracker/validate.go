//go:build linux

package firecracker

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// MaxRegions bounds the regions of one VM. Firecracker uses one to a few
// (memory hotplug adds slots); the bound keeps a hostile message from
// costing much.
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
	sorted := byAddress(ms)
	for i := 1; i < len(sorted); i++ {
		if prev, cur := sorted[i-1], sorted[i]; cur.BaseHostVirtAddr < prev.End() {
			return reject(ReasonRegion, "regions %v and %v overlap", prev, cur)
		}
	}
	return nil
}

// vma is one mapping of /proc/PID/smaps.
type vma struct {
	start, end uint64
	pageSize   uint64
	missing    bool // VmFlags "um": registered with userfaultfd in missing mode
}

// readSmaps reads the mappings of process pid.
func readSmaps(pid int) ([]vma, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return nil, err
	}
	return parseSmaps(b)
}

func parseSmaps(b []byte) ([]vma, error) {
	var out []vma
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.Contains(k, " ") && !strings.Contains(k, "-") {
			if len(out) == 0 {
				continue
			}
			cur := &out[len(out)-1]
			switch k {
			case "KernelPageSize":
				f := strings.Fields(v)
				if len(f) == 2 && f[1] == "kB" {
					n, err := strconv.ParseUint(f[0], 10, 64)
					if err == nil {
						cur.pageSize = n << 10
					}
				}
			case "VmFlags":
				cur.missing = slices.Contains(strings.Fields(v), "um")
			}
			continue
		}
		r, _, _ := strings.Cut(line, " ")
		lo, hi, ok := strings.Cut(r, "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, vma{start: s, end: e})
	}
	return out, sc.Err()
}

// checkMemoryMap checks that every region is mapped in the peer's address
// space with its page size, and reports which regions are not registered
// with a userfaultfd in missing mode (they would never fault to us).
func checkMemoryMap(vmas []vma, ms []Mapping) (unregistered []int, err error) {
	for i, m := range ms {
		addr, end := m.BaseHostVirtAddr, m.End()
		j, _ := slices.BinarySearchFunc(vmas, addr, func(v vma, a uint64) int {
			switch {
			case v.end <= a:
				return -1
			case v.start > a:
				return 1
			}
			return 0
		})
		reg := true
		for addr < end {
			if j >= len(vmas) || vmas[j].start > addr {
				return nil, reject(ReasonMapping, "region %d %v: nothing is mapped at %#x in the peer", i, m, addr)
			}
			v := vmas[j]
			if v.pageSize != 0 && v.pageSize != m.PageSize {
				return nil, reject(ReasonMapping, "region %d %v: the peer maps [%#x, %#x) with %d-byte pages, not %d", i, m, v.start, v.end, v.pageSize, m.PageSize)
			}
			reg = reg && v.missing
			addr = v.end
			j++
		}
		if !reg {
			unregistered = append(unregistered, i)
		}
	}
	return unregistered, nil
}

func describeRegions(ms []Mapping) string {
	var sb strings.Builder
	for i, m := range ms {
		if i > 0 {
			sb.WriteString(", ")
		}
		if i == 8 {
			fmt.Fprintf(&sb, "... (%d more)", len(ms)-i)
			break
		}
		sb.WriteString(m.String())
	}
	return sb.String()
}

// byAddress returns a copy of ms sorted by guest address.
func byAddress(ms []Mapping) []Mapping {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b Mapping) int { return cmp.Compare(a.BaseHostVirtAddr, b.BaseHostVirtAddr) })
	return s
}
