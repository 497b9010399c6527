package abi

// The parts of the ABI that the installed C headers may be too old to have
// (the build hosts' are Linux 6.1), transcribed from the Linux 6.18 UAPI
// headers. Sources, as stored by the search index used to write them:
//
//   - include/uapi/linux/userfaultfd.h: linux-mm/linux-mm@53a3fbf261dbc4aa8fd74404457fc8c1dad11ac1
//     and roypat/linux@7b9d0141ede5557c7609b2fadf79be7e103c0917, which
//     agree on every value below (both carry later, unmerged additions,
//     UFFD_FEATURE_MINOR_ANON/MINOR_GUEST_MEMFD (1<<17) and _UFFDIO_DEACTIVATE,
//     which are not in 6.18 and not used here). _UFFDIO_MOVE, UFFDIO_MOVE,
//     struct uffdio_move and its modes also match torvalds/linux@5025ad140e977654afb4896e2882bfc7fd6e48a5.
//   - include/uapi/linux/fs.h (PAGEMAP_SCAN, Linux 6.7; PAGE_IS_GUARD,
//     Linux 6.15): ColinIanKing/linux-next@7ecb8cc735af2ac045aa58a622c7d9f3b9d10e25;
//     PAGE_IS_GUARD also in Andrei Vagin's patch "fs/proc: extend the
//     PAGEMAP_SCAN ioctl to report guard regions" (lkml, 2025-03-24).
//
// Keys are spelled as in internal/abi/internal/cdefs, so that a build with
// newer headers also checks this transcription against them.

// linux618 holds constants; init adds the layouts of linux618Structs.
var linux618 = map[string]uint64{
	// userfaultfd.h
	"UFFD_FEATURE_WP_UNPOPULATED":      1 << 13,
	"UFFD_FEATURE_POISON":              1 << 14,
	"UFFD_FEATURE_WP_ASYNC":            1 << 15,
	"UFFD_FEATURE_MOVE":                1 << 16,
	"_UFFDIO_MOVE":                     0x05,
	"_UFFDIO_POISON":                   0x08,
	"UFFDIO_CONTINUE_MODE_WP":          1 << 1,
	"UFFDIO_POISON_MODE_DONTWAKE":      1 << 0,
	"UFFDIO_MOVE_MODE_DONTWAKE":        1 << 0,
	"UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES": 1 << 1,

	// fs.h
	"PROCFS_IOCTL_MAGIC":    'f',
	"PAGE_IS_WPALLOWED":     1 << 0,
	"PAGE_IS_WRITTEN":       1 << 1,
	"PAGE_IS_FILE":          1 << 2,
	"PAGE_IS_PRESENT":       1 << 3,
	"PAGE_IS_SWAPPED":       1 << 4,
	"PAGE_IS_PFNZERO":       1 << 5,
	"PAGE_IS_HUGE":          1 << 6,
	"PAGE_IS_SOFT_DIRTY":    1 << 7,
	"PAGE_IS_GUARD":         1 << 8,
	"PM_SCAN_WP_MATCHING":   1 << 0,
	"PM_SCAN_CHECK_WPASYNC": 1 << 1,
}

// linux618Structs are the structs 6.18 adds, field by field as declared.
var linux618Structs = []cStruct{
	{"uffdio_poison", []cField{{"range", "struct uffdio_range"}, {"mode", "__u64"}, {"updated", "__s64"}}},
	{"uffdio_move", []cField{{"dst", "__u64"}, {"src", "__u64"}, {"len", "__u64"}, {"mode", "__u64"}, {"move", "__s64"}}},
	{"page_region", []cField{{"start", "__u64"}, {"end", "__u64"}, {"categories", "__u64"}}},
	{"pm_scan_arg", []cField{
		{"size", "__u64"}, {"flags", "__u64"}, {"start", "__u64"}, {"end", "__u64"},
		{"walk_end", "__u64"}, {"vec", "__u64"}, {"vec_len", "__u64"}, {"max_pages", "__u64"},
		{"category_inverted", "__u64"}, {"category_mask", "__u64"},
		{"category_anyof_mask", "__u64"}, {"return_mask", "__u64"},
	}},
}

type cStruct struct {
	name   string
	fields []cField
}

type cField struct{ name, typ string }

// cTypes are the C types these structs use: size (and alignment), and
// whether they are signed integers (-1 for a struct).
var cTypes = map[string]struct{ size, signed int }{
	"__u64":               {8, 0},
	"__s64":               {8, 1},
	"struct uffdio_range": {16, -1},
}

// init lays the structs out as a C compiler does (every field here is
// 8-byte aligned, so no padding) under cdefs' names.
func init() {
	for _, s := range linux618Structs {
		var off uint64
		for _, f := range s.fields {
			ct, ok := cTypes[f.typ]
			if !ok {
				panic("linux618Structs: unknown C type " + f.typ)
			}
			linux618["offsetof("+s.name+", "+f.name+")"] = off
			linux618["sizeof("+s.name+"."+f.name+")"] = uint64(ct.size)
			if ct.signed >= 0 {
				linux618["signed("+s.name+"."+f.name+")"] = uint64(ct.signed)
			}
			off += uint64(ct.size)
		}
		linux618["sizeof("+s.name+")"] = off
	}
}

// linux618Ioctls holds the request numbers 6.18 adds, as the arguments of
// their _IOWR macro; the test evaluates them with the running
// architecture's formula.
var linux618Ioctls = map[string]struct {
	typ, nr uintptr
	sizeOf  string // the struct, a key of linux618
}{
	"UFFDIO_MOVE":   {0xAA, 0x05, "sizeof(uffdio_move)"},   // _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
	"UFFDIO_POISON": {0xAA, 0x08, "sizeof(uffdio_poison)"}, // _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
	"PAGEMAP_SCAN":  {'f', 16, "sizeof(pm_scan_arg)"},      // _IOWR(PROCFS_IOCTL_MAGIC, 16, struct pm_scan_arg)
}

// linux618Sets holds the header's summary masks, which grow with every
// release: the Go side must know exactly the 6.18 sets, and any older
// header's must be a subset.
var linux618Sets = map[string]uint64{
	// Every UFFD_FEATURE_* through UFFD_FEATURE_MOVE.
	"UFFD_API_FEATURES": 1<<17 - 1,
	// MISSING | WP | MINOR
	"UFFD_API_REGISTER_MODES": 0x7,
	// REGISTER | UNREGISTER | API
	"UFFD_API_IOCTLS": 1<<0x00 | 1<<0x01 | 1<<0x3F,
	// WAKE | COPY | ZEROPAGE | MOVE | WRITEPROTECT | CONTINUE | POISON
	"UFFD_API_RANGE_IOCTLS": 1<<0x02 | 1<<0x03 | 1<<0x04 | 1<<0x05 | 1<<0x06 | 1<<0x07 | 1<<0x08,
	// WAKE | COPY | WRITEPROTECT | CONTINUE | POISON (hugetlbfs: no ZEROPAGE, MOVE)
	"UFFD_API_RANGE_IOCTLS_BASIC": 1<<0x02 | 1<<0x03 | 1<<0x06 | 1<<0x07 | 1<<0x08,
}
