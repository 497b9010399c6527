package firecracker_test

import (
	"reflect"
	"testing"

	"github.com/gouffd/uffd/firecracker"
)

// A hotpluggable region as Firecracker maps it: one mapping, the plugged
// part read-write and the unplugged part PROT_NONE (mprotect splits it).
const hotplugMaps = `7f0000000000-7f0000400000 rw-p 00000000 00:00 0
7f0000400000-7f0000600000 ---p 00000000 00:00 0
7f0000600000-7f0000700000 rw-p 00000000 00:00 0
7f0000800000-7f0000900000 r--p 00000000 08:02 1234                       /usr/lib/x.so
`

func TestParseMaps(t *testing.T) {
	m, err := firecracker.ParseMemoryMap([]byte(hotplugMaps))
	if err != nil {
		t.Fatal(err)
	}
	want := firecracker.MemoryMap{
		{Start: 0x7f0000000000, End: 0x7f0000400000, Perms: "rw-p"},
		{Start: 0x7f0000400000, End: 0x7f0000600000, Perms: "---p"},
		{Start: 0x7f0000600000, End: 0x7f0000700000, Perms: "rw-p"},
		{Start: 0x7f0000800000, End: 0x7f0000900000, Perms: "r--p"},
	}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", m, want)
	}
	if m[1].Accessible() || !m[0].Accessible() || !m[3].Accessible() {
		t.Error("Accessible: want false for ---p only")
	}
	// From maps (no flags, no page sizes) Check judges addresses only.
	r := firecracker.Mapping{BaseHostVirtAddr: 0x7f0000000000, Size: 0x700000, PageSize: 4096, PageSizeKiB: 4096}
	if unreg, err := m.Check([]firecracker.Mapping{r}); err != nil || len(unreg) != 0 {
		t.Errorf("Check of the whole hotpluggable region: %v, %v", unreg, err)
	}
}

func TestAccessible(t *testing.T) {
	m, err := firecracker.ParseMemoryMap([]byte(hotplugMaps))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		start, end uint64
		want       [][2]uint64
	}{
		{"all plugged", 0x7f0000100000, 0x7f0000200000, [][2]uint64{{0x7f0000100000, 0x7f0000200000}}},
		{"across the unplugged part", 0x7f0000000000, 0x7f0000700000, [][2]uint64{{0x7f0000000000, 0x7f0000400000}, {0x7f0000600000, 0x7f0000700000}}},
		{"inside the unplugged part", 0x7f0000410000, 0x7f0000420000, nil},
		{"into a hole", 0x7f0000680000, 0x7f0000880000, [][2]uint64{{0x7f0000680000, 0x7f0000700000}, {0x7f0000800000, 0x7f0000880000}}},
		{"nothing mapped", 0x1000, 0x2000, nil},
	} {
		if got := m.Accessible(tc.start, tc.end); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Accessible(%#x, %#x) = %#x, want %#x", tc.name, tc.start, tc.end, got, tc.want)
		}
	}
	// Adjacent accessible mappings (different permissions) merge.
	m2 := firecracker.MemoryMap{{Start: 0x1000, End: 0x2000, Perms: "rw-p"}, {Start: 0x2000, End: 0x3000, Perms: "r--p"}}
	if got := m2.Accessible(0, 0x10000); !reflect.DeepEqual(got, [][2]uint64{{0x1000, 0x3000}}) {
		t.Errorf("adjacent mappings: %#x", got)
	}
}
