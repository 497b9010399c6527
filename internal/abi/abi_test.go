package abi

import (
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/gouffd/uffd/internal/abi/internal/cdefs"
	"github.com/gouffd/uffd/internal/testutil"
)

// goValues maps every C constant, struct size, and field offset, size and
// signedness (spelled as in package cdefs) to what this package says it is.
func goValues() map[string]uint64 {
	m := map[string]uint64{
		"UFFD_API":            API,
		"USERFAULTFD_IOC":     DevIoctlType,
		"USERFAULTFD_IOC_NEW": uint64(USERFAULTFD_IOC_NEW),
		"UFFDIO":              IoctlType,
		"UFFD_USER_MODE_ONLY": UserModeOnly,

		"_UFFDIO_REGISTER":     NrRegister,
		"_UFFDIO_UNREGISTER":   NrUnregister,
		"_UFFDIO_WAKE":         NrWake,
		"_UFFDIO_COPY":         NrCopy,
		"_UFFDIO_ZEROPAGE":     NrZeropage,
		"_UFFDIO_MOVE":         NrMove,
		"_UFFDIO_WRITEPROTECT": NrWriteprotect,
		"_UFFDIO_CONTINUE":     NrContinue,
		"_UFFDIO_POISON":       NrPoison,
		"_UFFDIO_API":          NrAPI,

		"UFFDIO_API":          uint64(UFFDIO_API),
		"UFFDIO_REGISTER":     uint64(UFFDIO_REGISTER),
		"UFFDIO_UNREGISTER":   uint64(UFFDIO_UNREGISTER),
		"UFFDIO_WAKE":         uint64(UFFDIO_WAKE),
		"UFFDIO_COPY":         uint64(UFFDIO_COPY),
		"UFFDIO_ZEROPAGE":     uint64(UFFDIO_ZEROPAGE),
		"UFFDIO_MOVE":         uint64(UFFDIO_MOVE),
		"UFFDIO_WRITEPROTECT": uint64(UFFDIO_WRITEPROTECT),
		"UFFDIO_CONTINUE":     uint64(UFFDIO_CONTINUE),
		"UFFDIO_POISON":       uint64(UFFDIO_POISON),

		"UFFD_EVENT_PAGEFAULT":      EventPagefault,
		"UFFD_EVENT_FORK":           EventFork,
		"UFFD_EVENT_REMAP":          EventRemap,
		"UFFD_EVENT_REMOVE":         EventRemove,
		"UFFD_EVENT_UNMAP":          EventUnmap,
		"UFFD_PAGEFAULT_FLAG_WRITE": PagefaultFlagWrite,
		"UFFD_PAGEFAULT_FLAG_WP":    PagefaultFlagWP,
		"UFFD_PAGEFAULT_FLAG_MINOR": PagefaultFlagMinor,

		"UFFD_FEATURE_PAGEFAULT_FLAG_WP":  FeaturePagefaultFlagWP,
		"UFFD_FEATURE_EVENT_FORK":         FeatureEventFork,
		"UFFD_FEATURE_EVENT_REMAP":        FeatureEventRemap,
		"UFFD_FEATURE_EVENT_REMOVE":       FeatureEventRemove,
		"UFFD_FEATURE_MISSING_HUGETLBFS":  FeatureMissingHugetlbfs,
		"UFFD_FEATURE_MISSING_SHMEM":      FeatureMissingShmem,
		"UFFD_FEATURE_EVENT_UNMAP":        FeatureEventUnmap,
		"UFFD_FEATURE_SIGBUS":             FeatureSigbus,
		"UFFD_FEATURE_THREAD_ID":          FeatureThreadID,
		"UFFD_FEATURE_MINOR_HUGETLBFS":    FeatureMinorHugetlbfs,
		"UFFD_FEATURE_MINOR_SHMEM":        FeatureMinorShmem,
		"UFFD_FEATURE_EXACT_ADDRESS":      FeatureExactAddress,
		"UFFD_FEATURE_WP_HUGETLBFS_SHMEM": FeatureWPHugetlbfsShmem,
		"UFFD_FEATURE_WP_UNPOPULATED":     FeatureWPUnpopulated,
		"UFFD_FEATURE_POISON":             FeaturePoison,
		"UFFD_FEATURE_WP_ASYNC":           FeatureWPAsync,
		"UFFD_FEATURE_MOVE":               FeatureMove,

		"UFFDIO_REGISTER_MODE_MISSING":      RegisterModeMissing,
		"UFFDIO_REGISTER_MODE_WP":           RegisterModeWP,
		"UFFDIO_REGISTER_MODE_MINOR":        RegisterModeMinor,
		"UFFDIO_COPY_MODE_DONTWAKE":         CopyModeDontwake,
		"UFFDIO_COPY_MODE_WP":               CopyModeWP,
		"UFFDIO_ZEROPAGE_MODE_DONTWAKE":     ZeropageModeDontwake,
		"UFFDIO_WRITEPROTECT_MODE_WP":       WriteprotectModeWP,
		"UFFDIO_WRITEPROTECT_MODE_DONTWAKE": WriteprotectModeDontwake,
		"UFFDIO_CONTINUE_MODE_DONTWAKE":     ContinueModeDontwake,
		"UFFDIO_CONTINUE_MODE_WP":           ContinueModeWP,
		"UFFDIO_POISON_MODE_DONTWAKE":       PoisonModeDontwake,
		"UFFDIO_MOVE_MODE_DONTWAKE":         MoveModeDontwake,
		"UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES":  MoveModeAllowSrcHoles,

		"PROCFS_IOCTL_MAGIC":    PagemapIoctlType,
		"PAGEMAP_SCAN":          uint64(PAGEMAP_SCAN),
		"PAGE_IS_WPALLOWED":     PageIsWPAllowed,
		"PAGE_IS_WRITTEN":       PageIsWritten,
		"PAGE_IS_FILE":          PageIsFile,
		"PAGE_IS_PRESENT":       PageIsPresent,
		"PAGE_IS_SWAPPED":       PageIsSwapped,
		"PAGE_IS_PFNZERO":       PageIsPFNZero,
		"PAGE_IS_HUGE":          PageIsHuge,
		"PAGE_IS_SOFT_DIRTY":    PageIsSoftDirty,
		"PAGE_IS_GUARD":         PageIsGuard,
		"PM_SCAN_WP_MATCHING":   PMScanWPMatching,
		"PM_SCAN_CHECK_WPASYNC": PMScanCheckWPAsync,
	}
	for name, v := range msgLayout {
		m[name] = v
	}
	for _, l := range goLayouts {
		addLayout(m, l)
	}
	return m
}

// msgLayout is struct uffd_msg as the decoder reads it: by offset, with
// binary.NativeEndian, never through a Go struct.
var msgLayout = map[string]uint64{
	"sizeof(uffd_msg)":                            MsgSize,
	"offsetof(uffd_msg, event)":                   MsgOffEvent,
	"sizeof(uffd_msg.event)":                      1, // read as a byte
	"signed(uffd_msg.event)":                      0,
	"offsetof(uffd_msg, arg)":                     MsgOffArg,
	"sizeof(uffd_msg.arg)":                        MsgSize - MsgOffArg,
	"offsetof(uffd_msg, arg.pagefault.flags)":     MsgOffPFFlags,
	"sizeof(uffd_msg.arg.pagefault.flags)":        8, // Uint64
	"signed(uffd_msg.arg.pagefault.flags)":        0,
	"offsetof(uffd_msg, arg.pagefault.address)":   MsgOffPFAddress,
	"sizeof(uffd_msg.arg.pagefault.address)":      8,
	"signed(uffd_msg.arg.pagefault.address)":      0,
	"offsetof(uffd_msg, arg.pagefault.feat.ptid)": MsgOffPFPtid,
	"sizeof(uffd_msg.arg.pagefault.feat.ptid)":    4, // Uint32
	"signed(uffd_msg.arg.pagefault.feat.ptid)":    0,
	"offsetof(uffd_msg, arg.fork.ufd)":            MsgOffForkUfd,
	"sizeof(uffd_msg.arg.fork.ufd)":               4,
	"signed(uffd_msg.arg.fork.ufd)":               0,
	"offsetof(uffd_msg, arg.remap.from)":          MsgOffRemapFrom,
	"sizeof(uffd_msg.arg.remap.from)":             8,
	"signed(uffd_msg.arg.remap.from)":             0,
	"offsetof(uffd_msg, arg.remap.to)":            MsgOffRemapTo,
	"sizeof(uffd_msg.arg.remap.to)":               8,
	"signed(uffd_msg.arg.remap.to)":               0,
	"offsetof(uffd_msg, arg.remap.len)":           MsgOffRemapLen,
	"sizeof(uffd_msg.arg.remap.len)":              8,
	"signed(uffd_msg.arg.remap.len)":              0,
	"offsetof(uffd_msg, arg.remove.start)":        MsgOffRemoveStart,
	"sizeof(uffd_msg.arg.remove.start)":           8,
	"signed(uffd_msg.arg.remove.start)":           0,
	"offsetof(uffd_msg, arg.remove.end)":          MsgOffRemoveEnd,
	"sizeof(uffd_msg.arg.remove.end)":             8,
	"signed(uffd_msg.arg.remove.end)":             0,

	// Fields the decoder ignores, pinned all the same.
	"offsetof(uffd_msg, reserved1)":              1,
	"sizeof(uffd_msg.reserved1)":                 1,
	"signed(uffd_msg.reserved1)":                 0,
	"offsetof(uffd_msg, reserved2)":              2,
	"sizeof(uffd_msg.reserved2)":                 2,
	"signed(uffd_msg.reserved2)":                 0,
	"offsetof(uffd_msg, reserved3)":              4,
	"sizeof(uffd_msg.reserved3)":                 4,
	"signed(uffd_msg.reserved3)":                 0,
	"offsetof(uffd_msg, arg.reserved.reserved1)": MsgOffArg,
	"sizeof(uffd_msg.arg.reserved.reserved1)":    8,
	"signed(uffd_msg.arg.reserved.reserved1)":    0,
	"offsetof(uffd_msg, arg.reserved.reserved2)": MsgOffArg + 8,
	"sizeof(uffd_msg.arg.reserved.reserved2)":    8,
	"signed(uffd_msg.arg.reserved.reserved2)":    0,
	"offsetof(uffd_msg, arg.reserved.reserved3)": MsgOffArg + 16,
	"sizeof(uffd_msg.arg.reserved.reserved3)":    8,
	"signed(uffd_msg.arg.reserved.reserved3)":    0,
}

// goLayout pairs a C struct with its Go counterpart, field by field: C
// field (as cdefs spells it) and Go field path.
type goLayout struct {
	c      string
	goType reflect.Type
	fields [][2]string
}

var goLayouts = []goLayout{
	{"uffdio_api", reflect.TypeFor[UffdioAPI](), [][2]string{
		{"api", "API"}, {"features", "Features"}, {"ioctls", "Ioctls"}}},
	{"uffdio_range", reflect.TypeFor[UffdioRange](), [][2]string{
		{"start", "Start"}, {"len", "Len"}}},
	{"uffdio_register", reflect.TypeFor[UffdioRegister](), [][2]string{
		{"range", "Range"}, {"range.start", "Range.Start"}, {"range.len", "Range.Len"},
		{"mode", "Mode"}, {"ioctls", "Ioctls"}}},
	{"uffdio_copy", reflect.TypeFor[UffdioCopy](), [][2]string{
		{"dst", "Dst"}, {"src", "Src"}, {"len", "Len"}, {"mode", "Mode"}, {"copy", "Copy"}}},
	{"uffdio_zeropage", reflect.TypeFor[UffdioZeropage](), [][2]string{
		{"range", "Range"}, {"mode", "Mode"}, {"zeropage", "Zeropage"}}},
	{"uffdio_writeprotect", reflect.TypeFor[UffdioWriteprotect](), [][2]string{
		{"range", "Range"}, {"mode", "Mode"}}},
	{"uffdio_continue", reflect.TypeFor[UffdioContinue](), [][2]string{
		{"range", "Range"}, {"mode", "Mode"}, {"mapped", "Mapped"}}},
	{"uffdio_poison", reflect.TypeFor[UffdioPoison](), [][2]string{
		{"range", "Range"}, {"mode", "Mode"}, {"updated", "Updated"}}},
	{"uffdio_move", reflect.TypeFor[UffdioMove](), [][2]string{
		{"dst", "Dst"}, {"src", "Src"}, {"len", "Len"}, {"mode", "Mode"}, {"move", "Move"}}},
	{"pm_scan_arg", reflect.TypeFor[PMScanArg](), [][2]string{
		{"size", "Size"}, {"flags", "Flags"}, {"start", "Start"}, {"end", "End"},
		{"walk_end", "WalkEnd"}, {"vec", "Vec"}, {"vec_len", "VecLen"}, {"max_pages", "MaxPages"},
		{"category_inverted", "CategoryInverted"}, {"category_mask", "CategoryMask"},
		{"category_anyof_mask", "CategoryAnyofMask"}, {"return_mask", "ReturnMask"}}},
	{"page_region", reflect.TypeFor[PageRegion](), [][2]string{
		{"start", "Start"}, {"end", "End"}, {"categories", "Categories"}}},
}

// addLayout records a Go struct's size and each field's offset, size and
// signedness under cdefs' names. A field of a type whose size depends on
// the architecture (int, uintptr, pointers) panics: the ABI has none.
func addLayout(m map[string]uint64, l goLayout) {
	m["sizeof("+l.c+")"] = uint64(l.goType.Size())
	for _, f := range l.fields {
		cName, goPath := f[0], f[1]
		t, off := l.goType, uintptr(0)
		for _, name := range strings.Split(goPath, ".") {
			sf, ok := t.FieldByName(name)
			if !ok {
				panic(fmt.Sprintf("%v has no field %s", l.goType, goPath))
			}
			t, off = sf.Type, off+sf.Offset
		}
		m["offsetof("+l.c+", "+cName+")"] = uint64(off)
		m["sizeof("+l.c+"."+cName+")"] = uint64(t.Size())
		switch t.Kind() {
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			m["signed("+l.c+"."+cName+")"] = 1
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			m["signed("+l.c+"."+cName+")"] = 0
		case reflect.Struct:
		default:
			panic(fmt.Sprintf("%v.%s is a %v, not a fixed-size integer", l.goType, goPath, t))
		}
	}
}

// goSets maps the header's summary masks to this package's.
func goSets() map[string]uint64 {
	return map[string]uint64{
		"UFFD_API_FEATURES":       FeatureAll,
		"UFFD_API_REGISTER_MODES": RegisterModeAll,
		"UFFD_API_IOCTLS":         1<<NrRegister | 1<<NrUnregister | 1<<NrAPI,
		"UFFD_API_RANGE_IOCTLS": 1<<NrWake | 1<<NrCopy | 1<<NrZeropage | 1<<NrMove |
			1<<NrWriteprotect | 1<<NrContinue | 1<<NrPoison,
		"UFFD_API_RANGE_IOCTLS_BASIC": 1<<NrWake | 1<<NrCopy | 1<<NrWriteprotect |
			1<<NrContinue | 1<<NrPoison,
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestAgainstCHeaders compares every constant, struct size and field offset
// with the installed C headers. What the headers are too old to have must
// be in the Linux 6.18 table instead (checked by TestAgainstLinux618).
func TestAgainstCHeaders(t *testing.T) {
	if !cdefs.Available {
		testutil.Skipf(t, "needs cgo (CGO_ENABLED=1 and a C compiler, on Linux) to read <linux/userfaultfd.h> and <linux/fs.h>")
	}
	v := cdefs.Defs["LINUX_VERSION_CODE"].Value
	t.Logf("installed headers: Linux %d.%d.%d", v>>16, v>>8&0xff, v&0xff)

	goVals, sets := goValues(), goSets()
	var absent []string
	for _, name := range sortedKeys(goVals) {
		got := goVals[name]
		c, ok := cdefs.Defs[name]
		switch {
		case !ok:
			t.Errorf("%s: package cdefs does not report it", name)
		case !c.Present:
			absent = append(absent, name)
			_, inTable := linux618[name]
			_, inIoctls := linux618Ioctls[name]
			if !inTable && !inIoctls {
				t.Errorf("%s: missing from the installed headers and from the Linux 6.18 table", name)
			}
		case c.Value != got:
			t.Errorf("%s: Go has %#x, C has %#x", name, got, c.Value)
		}
	}
	if len(absent) > 0 {
		t.Logf("not in the installed headers, checked against Linux 6.18 instead: %v", absent)
	}

	// Newer headers only add to the summary masks.
	for _, name := range sortedKeys(sets) {
		c := cdefs.Defs[name]
		if !c.Present {
			continue
		}
		if extra := c.Value &^ sets[name]; extra != 0 {
			t.Errorf("%s: C has %#x, with bits %#x that Go does not know", name, c.Value, extra)
		}
	}

	// Nothing the headers define goes unchecked.
	for _, name := range sortedKeys(cdefs.Defs) {
		_, inGo := goVals[name]
		_, inSets := sets[name]
		if !inGo && !inSets && name != "LINUX_VERSION_CODE" {
			t.Errorf("%s: reported by cdefs but not checked", name)
		}
	}
}

// TestAgainstLinux618 checks what Linux 6.18 has beyond older headers
// against the values transcribed from its UAPI headers, and the
// transcription itself against the C headers where they have it too.
func TestAgainstLinux618(t *testing.T) {
	goVals := goValues()
	for _, name := range sortedKeys(linux618) {
		want := linux618[name]
		got, ok := goVals[name]
		if !ok {
			t.Errorf("%s: no Go counterpart", name)
			continue
		}
		if got != want {
			t.Errorf("%s: Go has %#x, Linux 6.18 has %#x", name, got, want)
		}
		if c := cdefs.Defs[name]; c.Present && c.Value != want {
			t.Errorf("%s: the 6.18 table says %#x, the installed headers %#x", name, want, c.Value)
		}
	}
	for _, name := range sortedKeys(linux618Ioctls) {
		io := linux618Ioctls[name]
		want := uint64(iocHost.iowr(io.typ, io.nr, uintptr(linux618[io.sizeOf])))
		if got := goVals[name]; got != want {
			t.Errorf("%s: Go has %#x, _IOWR(%#x, %#x, %d) is %#x", name, got, io.typ, io.nr, linux618[io.sizeOf], want)
		}
		if c := cdefs.Defs[name]; c.Present && c.Value != want {
			t.Errorf("%s: the 6.18 table gives %#x, the installed headers %#x", name, want, c.Value)
		}
	}
	sets := goSets()
	for _, name := range sortedKeys(linux618Sets) {
		if got, want := sets[name], linux618Sets[name]; got != want {
			t.Errorf("%s: Go has %#x, Linux 6.18 has %#x", name, got, want)
		}
	}
}

// TestStructSizes pins the size of every struct, independently of any
// header.
func TestStructSizes(t *testing.T) {
	for _, tt := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"uffd_msg", MsgSize, 32},
		{"uffdio_api", unsafe.Sizeof(UffdioAPI{}), 24},
		{"uffdio_range", unsafe.Sizeof(UffdioRange{}), 16},
		{"uffdio_register", unsafe.Sizeof(UffdioRegister{}), 32},
		{"uffdio_copy", unsafe.Sizeof(UffdioCopy{}), 40},
		{"uffdio_zeropage", unsafe.Sizeof(UffdioZeropage{}), 32},
		{"uffdio_writeprotect", unsafe.Sizeof(UffdioWriteprotect{}), 24},
		{"uffdio_continue", unsafe.Sizeof(UffdioContinue{}), 32},
		{"uffdio_poison", unsafe.Sizeof(UffdioPoison{}), 32},
		{"uffdio_move", unsafe.Sizeof(UffdioMove{}), 40},
		{"pm_scan_arg", unsafe.Sizeof(PMScanArg{}), 96},
		{"page_region", unsafe.Sizeof(PageRegion{}), 24},
	} {
		if tt.got != tt.want {
			t.Errorf("struct %s: %d bytes, want %d", tt.name, tt.got, tt.want)
		}
	}
}

// TestIocFormula checks both _IOC encodings against request numbers the
// kernel headers give on real architectures (golang.org/x/sys/unix's
// zerrors_linux_{amd64,arm64,ppc64le,mips64,sparc64}.go, generated from
// them; the uffd ones from the amd64 C headers, and Linux 6.18's for MOVE,
// POISON and PAGEMAP_SCAN).
func TestIocFormula(t *testing.T) {
	type req struct {
		name          string
		dir           string // "IO", "IOR", "IOW" or "IOWR"
		typ, nr, size uintptr
	}
	encode := func(l iocLayout, r req) uint {
		switch r.dir {
		case "IO":
			return l.io(r.typ, r.nr)
		case "IOR":
			return l.ior(r.typ, r.nr, r.size)
		case "IOW":
			return l.iow(r.typ, r.nr, r.size)
		}
		return l.iowr(r.typ, r.nr, r.size)
	}
	for _, tt := range []struct {
		r                req
		generic, mipsPPC uint
	}{
		{req{"FS_IOC_GETFLAGS", "IOR", 'f', 1, 8}, 0x80086601, 0x40086601},
		{req{"FS_IOC_SETFLAGS", "IOW", 'f', 2, 8}, 0x40086602, 0x80086602},
		{req{"NS_GET_USERNS", "IO", 0xb7, 0x1, 0}, 0xb701, 0x2000b701},
		{req{"TUNSETIFF", "IOW", 'T', 202, 4}, 0x400454ca, 0x800454ca},
		{req{"PERF_EVENT_IOC_QUERY_BPF", "IOWR", '$', 10, 8}, 0xc008240a, 0xc008240a},
		{req{"FS_IOC_GET_ENCRYPTION_POLICY_EX", "IOWR", 'f', 22, 9}, 0xc0096616, 0xc0096616},
		// userfaultfd and PAGEMAP_SCAN; _IOWR encodes alike in both layouts.
		{req{"UFFDIO_API", "IOWR", 0xAA, 0x3F, 24}, 0xc018aa3f, 0xc018aa3f},
		{req{"UFFDIO_REGISTER", "IOWR", 0xAA, 0x00, 32}, 0xc020aa00, 0xc020aa00},
		{req{"UFFDIO_UNREGISTER", "IOR", 0xAA, 0x01, 16}, 0x8010aa01, 0x4010aa01},
		{req{"UFFDIO_WAKE", "IOR", 0xAA, 0x02, 16}, 0x8010aa02, 0x4010aa02},
		{req{"UFFDIO_COPY", "IOWR", 0xAA, 0x03, 40}, 0xc028aa03, 0xc028aa03},
		{req{"UFFDIO_ZEROPAGE", "IOWR", 0xAA, 0x04, 32}, 0xc020aa04, 0xc020aa04},
		{req{"UFFDIO_MOVE", "IOWR", 0xAA, 0x05, 40}, 0xc028aa05, 0xc028aa05},
		{req{"UFFDIO_WRITEPROTECT", "IOWR", 0xAA, 0x06, 24}, 0xc018aa06, 0xc018aa06},
		{req{"UFFDIO_CONTINUE", "IOWR", 0xAA, 0x07, 32}, 0xc020aa07, 0xc020aa07},
		{req{"UFFDIO_POISON", "IOWR", 0xAA, 0x08, 32}, 0xc020aa08, 0xc020aa08},
		{req{"USERFAULTFD_IOC_NEW", "IO", 0xAA, 0x00, 0}, 0xaa00, 0x2000aa00},
		{req{"PAGEMAP_SCAN", "IOWR", 'f', 16, 96}, 0xc0606610, 0xc0606610},
	} {
		if got := encode(iocGeneric, tt.r); got != tt.generic {
			t.Errorf("%s (asm-generic): %#x, want %#x", tt.r.name, got, tt.generic)
		}
		if got := encode(iocMIPSPPC, tt.r); got != tt.mipsPPC {
			t.Errorf("%s (mips/powerpc/sparc): %#x, want %#x", tt.r.name, got, tt.mipsPPC)
		}
	}
}

// TestHostRequests checks that the exported request numbers use the
// running architecture's encoding, and pins them on amd64 and arm64.
func TestHostRequests(t *testing.T) {
	want := iocGeneric
	switch runtime.GOARCH {
	case "mips", "mipsle", "mips64", "mips64le", "ppc", "ppc64", "ppc64le", "sparc", "sparc64":
		want = iocMIPSPPC
	}
	if iocHost != want {
		t.Fatalf("GOARCH=%s uses _IOC layout %+v, want %+v", runtime.GOARCH, iocHost, want)
	}
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		return
	}
	for _, tt := range []struct {
		name string
		got  uint
		want uint
	}{
		{"UFFDIO_API", UFFDIO_API, 0xc018aa3f},
		{"UFFDIO_REGISTER", UFFDIO_REGISTER, 0xc020aa00},
		{"UFFDIO_UNREGISTER", UFFDIO_UNREGISTER, 0x8010aa01},
		{"UFFDIO_WAKE", UFFDIO_WAKE, 0x8010aa02},
		{"UFFDIO_COPY", UFFDIO_COPY, 0xc028aa03},
		{"UFFDIO_ZEROPAGE", UFFDIO_ZEROPAGE, 0xc020aa04},
		{"UFFDIO_MOVE", UFFDIO_MOVE, 0xc028aa05},
		{"UFFDIO_WRITEPROTECT", UFFDIO_WRITEPROTECT, 0xc018aa06},
		{"UFFDIO_CONTINUE", UFFDIO_CONTINUE, 0xc020aa07},
		{"UFFDIO_POISON", UFFDIO_POISON, 0xc020aa08},
		{"USERFAULTFD_IOC_NEW", USERFAULTFD_IOC_NEW, 0xaa00},
		{"PAGEMAP_SCAN", PAGEMAP_SCAN, 0xc0606610},
	} {
		if tt.got != tt.want {
			t.Errorf("%s on %s: %#x, want %#x", tt.name, runtime.GOARCH, tt.got, tt.want)
		}
	}
}
