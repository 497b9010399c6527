package firecracker

import (
	"bufio"
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
)

// VMA is one mapping of a process, as /proc/PID/maps or /proc/PID/smaps
// lists it.
type VMA struct {
	// Start and End bound the mapping: [Start, End).
	Start, End uint64
	// Perms are its permissions as the kernel prints them: "rw-p",
	// "---p" for PROT_NONE.
	Perms string
	// PageSize is the page size the kernel maps it with (KernelPageSize);
	// 0 when not known (from /proc/PID/maps).
	PageSize uint64
	// Flags are its VmFlags ("rd", "wr", "um" for registered with a
	// userfaultfd in missing mode, ...); nil when not known (from
	// /proc/PID/maps).
	Flags []string
}

// Accessible reports whether the mapping can be touched at all: it is not
// PROT_NONE. Memory hotplug (virtio-mem) maps the unplugged part of the
// hotpluggable region PROT_NONE until the guest plugs it, with mprotect(2),
// which raises no userfaultfd event.
func (v VMA) Accessible() bool { return len(v.Perms) >= 3 && v.Perms[:3] != "---" }

// MemoryMap is a process's mappings, by address.
type MemoryMap []VMA

// ReadMemoryMap reads the mappings of process pid from /proc/PID/maps:
// addresses and permissions only, cheap to read (the kernel does not walk
// page tables for it), for re-reading while serving.
func ReadMemoryMap(pid int) (MemoryMap, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return nil, err
	}
	return ParseMemoryMap(b)
}

// ReadSmaps reads the mappings of process pid from /proc/PID/smaps, with
// their page sizes and flags: what Check needs. The kernel walks the page
// tables of every mapping to produce it: read it once per handshake, not
// while serving.
func ReadSmaps(pid int) (MemoryMap, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return nil, err
	}
	return ParseMemoryMap(b)
}

// ParseMemoryMap parses the contents of /proc/PID/maps or /proc/PID/smaps.
// Lines it does not understand are skipped.
func ParseMemoryMap(b []byte) (MemoryMap, error) {
	var out MemoryMap
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.Contains(k, " ") && !strings.Contains(k, "-") {
			// An smaps detail line, "Key: value".
			if len(out) == 0 {
				continue
			}
			cur := &out[len(out)-1]
			switch k {
			case "KernelPageSize":
				f := strings.Fields(v)
				if len(f) == 2 && f[1] == "kB" {
					if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
						cur.PageSize = n << 10
					}
				}
			case "VmFlags":
				cur.Flags = strings.Fields(v)
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || e < s {
			continue
		}
		out = append(out, VMA{Start: s, End: e, Perms: f[1]})
	}
	return out, sc.Err()
}

// find returns the index of the first mapping that ends after addr.
func (m MemoryMap) find(addr uint64) int {
	i, _ := slices.BinarySearchFunc(m, addr, func(v VMA, a uint64) int {
		switch {
		case v.End <= a:
			return -1
		case v.Start > a:
			return 1
		}
		return 0
	})
	return i
}

// Check checks that every region is mapped in the process with its page
// size, and reports which regions are not registered with a userfaultfd
// in missing mode (their faults never reach a handler). Page sizes and
// registration are checked where m knows them (from ReadSmaps). Errors
// match ErrHandshake, with ReasonMapping.
func (m MemoryMap) Check(ms []Mapping) (unregistered []int, err error) {
	for i, r := range ms {
		addr, end := r.BaseHostVirtAddr, r.End()
		j := m.find(addr)
		reg := true
		for addr < end {
			if j >= len(m) || m[j].Start > addr {
				return nil, reject(ReasonMapping, "region %d %v: nothing is mapped at %#x in the peer", i, r, addr)
			}
			v := m[j]
			if v.PageSize != 0 && v.PageSize != r.PageSize {
				return nil, reject(ReasonMapping, "region %d %v: the peer maps [%#x, %#x) with %d-byte pages, not %d", i, r, v.Start, v.End, v.PageSize, r.PageSize)
			}
			reg = reg && (v.Flags == nil || slices.Contains(v.Flags, "um"))
			addr = v.End
			j++
		}
		if !reg {
			unregistered = append(unregistered, i)
		}
	}
	return unregistered, nil
}

// Accessible returns the parts of [start, end) that are mapped and not
// PROT_NONE, in address order: where a handler may populate memory ahead
// of the guest. The rest is either unmapped or, with memory hotplug,
// unplugged: populating it would spend host memory the guest does not
// have, and its faults come only once the VMM mprotect-ed it accessible.
func (m MemoryMap) Accessible(start, end uint64) [][2]uint64 {
	var out [][2]uint64
	for j := m.find(start); j < len(m) && m[j].Start < end; j++ {
		v := m[j]
		if !v.Accessible() {
			continue
		}
		lo, hi := max(v.Start, start), min(v.End, end)
		if n := len(out); n > 0 && out[n-1][1] == lo {
			out[n-1][1] = hi
			continue
		}
		out = append(out, [2]uint64{lo, hi})
	}
	return out
}
