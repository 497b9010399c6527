//go:build linux

package mem_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

func TestKindNames(t *testing.T) {
	for _, k := range mem.Kinds {
		got, err := mem.ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", k.String(), got, err, k)
		}
	}
	if _, err := mem.ParseKind("tmpfs"); err == nil {
		t.Error("ParseKind(tmpfs) succeeded")
	}
}

func TestMapKinds(t *testing.T) {
	hps, err := mem.HugePageSize()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range mem.Kinds {
		t.Run(k.String(), func(t *testing.T) {
			ps := mem.PageSize()
			if k.Huge() {
				testutil.ReserveHugePagesFor(t, k, 2*hps)
				ps = hps
			}
			m, err := mem.Map(k, 2*ps)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.PageSize != ps || m.Pages() != 2 || m.Len() != uintptr(2*ps) {
				t.Fatalf("page size %d, %d pages, len %d; want %d, 2, %d", m.PageSize, m.Pages(), m.Len(), ps, 2*ps)
			}
			if m.PageAddr(1) != m.Addr()+uintptr(ps) || &m.Page(1)[0] != &m.Data[ps] {
				t.Error("Page/PageAddr disagree with Data")
			}
			if (m.Alias != nil) != k.FileBacked() || (m.Fd() >= 0) != k.FileBacked() {
				t.Fatalf("alias %v, fd %d for a %v mapping", m.Alias != nil, m.Fd(), k)
			}
			m.Data[ps+1] = 7
			if k.FileBacked() {
				// Shared kinds write through to the file; private ones copy.
				if got := m.Alias[ps+1]; (got == 7) != k.Shared() {
					t.Errorf("alias reads %d after a write through Data of a %v mapping", got, k)
				}
				m.Alias[5] = 9
				if got := m.Data[5]; got != 9 {
					t.Errorf("Data reads %d after a write through the alias before any private copy, want 9", got)
				}
			}
			if err := m.Drop(ps, ps); err != nil {
				t.Fatal(err)
			}
			if got := m.Data[ps+1]; got != 0 {
				t.Errorf("byte reads %d after Drop, want 0", got)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if err := m.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestMapBadSize(t *testing.T) {
	for _, size := range []int{0, -4096, mem.PageSize() + 1} {
		if m, err := mem.Map(mem.Anonymous, size); err == nil {
			m.Close()
			t.Errorf("Map(anon, %d) succeeded", size)
		}
	}
}

// TestHugePagesAvailable: a hugetlb mapping reserves its pages when it is
// mapped, before any is touched; HugePages counts them out of what is
// available, as many as HugePagesFor says.
func TestHugePagesAvailable(t *testing.T) {
	hps, err := mem.HugePageSize()
	if err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	for _, k := range []mem.Kind{mem.Hugetlb, mem.HugetlbPrivate} {
		t.Run(k.String(), func(t *testing.T) {
			need, err := mem.HugePagesFor(k, 3*hps)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[mem.Kind]int{mem.Hugetlb: 3, mem.HugetlbPrivate: 6}[k]; need != want {
				t.Errorf("HugePagesFor(%v, 3 huge pages) = %d, want %d", k, need, want)
			}
			testutil.ReserveHugePages(t, need)
			_, before, err := mem.HugePages()
			if err != nil {
				t.Fatal(err)
			}
			m, err := mem.Map(k, 3*hps)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if _, after, _ := mem.HugePages(); before-after != need {
				t.Errorf("mapping 3 huge pages of %v: %d available before, %d after; want %d fewer", k, before, after, need)
			}
		})
	}
	if n, err := mem.HugePagesFor(mem.Shmem, 1<<20); n != 0 || err != nil {
		t.Errorf("HugePagesFor(shmem) = %d, %v", n, err)
	}
}

// TestHugeHint: a hugetlb mapping the pool cannot hold fails with a hint
// whose figures agree: the pages it needs, and fewer available.
func TestHugeHint(t *testing.T) {
	hps, err := mem.HugePageSize()
	if err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	testutil.ReserveHugePages(t, 1) // holds the pool still
	_, avail, err := mem.HugePages()
	if err != nil {
		t.Fatal(err)
	}
	pages := avail/2 + 1 // a private mapping takes twice its pages
	m, err := mem.Map(mem.HugetlbPrivate, pages*hps)
	if err == nil {
		m.Close()
		t.Fatalf("mapping %d private huge pages with %d available succeeded", pages, avail)
	}
	want := fmt.Sprintf("needs %d huge pages of %d bytes, %d are free and unreserved", 2*pages, hps, avail)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}
