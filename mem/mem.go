package mem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// Kind is a kind of memory.
type Kind int

// The kinds of memory, named as in the kernel's userfaultfd selftests.
const (
	Anonymous      Kind = iota // private anonymous memory
	Shmem                      // a memfd mapped shared
	ShmemPrivate               // a memfd mapped private
	Hugetlb                    // a hugetlbfs memfd mapped shared
	HugetlbPrivate             // a hugetlbfs memfd mapped private
)

// Kinds lists every Kind.
var Kinds = []Kind{Anonymous, Shmem, ShmemPrivate, Hugetlb, HugetlbPrivate}

var kindNames = []string{"anon", "shmem", "shmem-private", "hugetlb", "hugetlb-private"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKind parses a Kind's name as String prints it.
func ParseKind(s string) (Kind, error) {
	for i, n := range kindNames {
		if n == s {
			return Kind(i), nil
		}
	}
	return 0, fmt.Errorf("mem: unknown memory kind %q (want one of %s)", s, strings.Join(kindNames, ", "))
}

// Huge reports whether the kind uses huge pages.
func (k Kind) Huge() bool { return k == Hugetlb || k == HugetlbPrivate }

// Shared reports whether writes through the mapping reach the file (and
// the alias).
func (k Kind) Shared() bool { return k == Shmem || k == Hugetlb }

// FileBacked reports whether the kind is backed by a memfd (and so has an
// Alias).
func (k Kind) FileBacked() bool { return k != Anonymous }

// Mapping is a mapped region of one Kind.
type Mapping struct {
	Kind Kind
	// Data is the mapping to register with userfaultfd.
	Data []byte
	// Alias is a second, shared mapping of the same file for file-backed
	// kinds, nil for Anonymous.
	Alias []byte
	// PageSize is the size of the pages backing Data.
	PageSize int

	fd int
}

// Addr returns the address of Data.
func (m *Mapping) Addr() uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(m.Data))) }

// Len returns the length of Data.
func (m *Mapping) Len() uintptr { return uintptr(len(m.Data)) }

// Fd returns the memfd behind a file-backed mapping, or -1. It stays owned
// by the Mapping.
func (m *Mapping) Fd() int { return m.fd }

// Page returns the i-th page of Data.
func (m *Mapping) Page(i int) []byte { return m.Data[i*m.PageSize : (i+1)*m.PageSize] }

// PageAddr returns the address of the i-th page of Data.
func (m *Mapping) PageAddr(i int) uintptr { return m.Addr() + uintptr(i*m.PageSize) }

// Pages returns the number of pages in Data.
func (m *Mapping) Pages() int { return len(m.Data) / m.PageSize }

// PageSize returns the base page size.
func PageSize() int { return os.Getpagesize() }

// HugePageSizes lists the huge page sizes the kernel offers, in bytes,
// from /sys/kernel/mm/hugepages.
func HugePageSizes() ([]int, error) {
	ents, err := os.ReadDir("/sys/kernel/mm/hugepages")
	if err != nil {
		return nil, err
	}
	var sizes []int
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), "hugepages-")
		if !ok {
			continue
		}
		s, ok = strings.CutSuffix(s, "kB")
		if !ok {
			continue
		}
		if kb, err := strconv.Atoi(s); err == nil {
			sizes = append(sizes, kb<<10)
		}
	}
	return sizes, nil
}

// HugePageSize returns the default huge page size (Hugepagesize in
// /proc/meminfo), which hugetlbfs memfds use.
func HugePageSize() (int, error) {
	v, err := meminfo("Hugepagesize")
	return v << 10, err
}

// HugePages reports the default-size huge page pool: the pages in it, and
// those a new mapping can still have: free and not reserved by mappings
// made earlier (HugePages_Free less HugePages_Rsvd in /proc/meminfo). The
// kernel reserves a mapping's huge pages when it is mapped, so a free page
// that is reserved is not available.
func HugePages() (total, available int, err error) {
	var free, rsvd int
	if total, err = meminfo("HugePages_Total"); err != nil {
		return
	}
	if free, err = meminfo("HugePages_Free"); err != nil {
		return
	}
	if rsvd, err = meminfo("HugePages_Rsvd"); err != nil {
		return
	}
	return total, max(free-rsvd, 0), nil
}

// HugePagesFor returns how many default-size huge pages Map takes from the
// pool for a mapping of size bytes of kind: none for the kinds without huge
// pages; for Hugetlb, one per page of Data (Data and Alias share the
// file's pages); for HugetlbPrivate, twice as many, as the private pages of
// Data are reserved beside the file's pages that Alias maps.
func HugePagesFor(kind Kind, size int) (int, error) {
	if !kind.Huge() {
		return 0, nil
	}
	hps, err := HugePageSize()
	if err != nil {
		return 0, err
	}
	n := (size + hps - 1) / hps
	if kind == HugetlbPrivate {
		n *= 2
	}
	return n, nil
}

// Available returns the memory available for new allocations without
// swapping (MemAvailable in /proc/meminfo), in bytes.
func Available() (int, error) {
	kb, err := meminfo("MemAvailable")
	return kb << 10, err
}

func meminfo(key string) (int, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		return strconv.Atoi(f[0])
	}
	return 0, fmt.Errorf("mem: no %s in /proc/meminfo", key)
}
