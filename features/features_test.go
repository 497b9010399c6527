package features

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// kernelAtLeast compares a uname release ("6.18.44-foo") with "major.minor".
func kernelAtLeast(t *testing.T, release, since string) bool {
	t.Helper()
	parse := func(s string) (int, int) {
		maj, rest, _ := strings.Cut(s, ".")
		min := strings.FieldsFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		a, err1 := strconv.Atoi(maj)
		b, err2 := strconv.Atoi(min[0])
		if err1 != nil || err2 != nil {
			t.Fatalf("cannot parse kernel version %q", s)
		}
		return a, b
	}
	rm, rn := parse(release)
	sm, sn := parse(since)
	return rm > sm || rm == sm && rn >= sn
}

func collect(t *testing.T) Report {
	t.Helper()
	r, err := Collect()
	if err != nil {
		testutil.Skipf(t, "no userfaultfd for this process: %v", err)
	}
	return r
}

func TestCollect(t *testing.T) {
	// The hugetlb rows map one huge page at a time: a private one with
	// its alias takes two.
	testutil.ReserveHugePages(t, 2)
	r := collect(t)
	if r.Kernel.Release == "" || r.PageSize != os.Getpagesize() || r.API != 0xAA {
		t.Errorf("kernel %q, page size %d, API %#x", r.Kernel.Release, r.PageSize, r.API)
	}
	if len(r.Features) != len(uffd.Features()) {
		t.Fatalf("%d features, want %d", len(r.Features), len(uffd.Features()))
	}
	for _, f := range r.Features {
		// A feature the running kernel should have is a failure, not a skip.
		if !f.Supported && kernelAtLeast(t, r.Kernel.Release, f.Since) {
			t.Errorf("feature %s (%s, Linux %s) missing on %s", f.Name, f.KernelName, f.Since, r.Kernel.Release)
		}
	}
	if want := len(mem.Kinds) * len(Modes); len(r.Registrations) != want {
		t.Fatalf("%d registrations, want %d", len(r.Registrations), want)
	}
	byKey := map[string]Registration{}
	for _, reg := range r.Registrations {
		byKey[reg.Memory+"/"+reg.Mode] = reg
	}
	for key, want := range map[string][]string{
		"anon/Missing":      {"Wake", "Copy", "ZeroPage", "Move"},
		"anon/WriteProtect": {"WriteProtect"},
		"shmem/Minor":       {"Continue"},
	} {
		reg := byKey[key]
		if !reg.OK {
			t.Errorf("%s: not registered: %s", key, reg.Error)
			continue
		}
		for _, w := range want {
			if !slices.Contains(reg.Ioctls, w) {
				t.Errorf("%s: ioctls %v lack %s", key, reg.Ioctls, w)
			}
		}
	}
	if reg := byKey["anon/Minor"]; reg.OK || reg.Errno != "EINVAL" {
		t.Errorf("anon/Minor: ok %v errno %q, want a refusal with EINVAL", reg.OK, reg.Errno)
	}
	for _, kind := range []string{"hugetlb", "hugetlb-private"} {
		reg := byKey[kind+"/Missing"]
		switch {
		case reg.Skipped != "":
			t.Errorf("%s/Missing skipped with huge pages reserved: %s", kind, reg.Skipped)
		case !reg.OK:
			t.Errorf("%s/Missing: %s", kind, reg.Error)
		case slices.Contains(reg.Ioctls, "ZeroPage"):
			t.Errorf("%s/Missing: ioctls %v include ZeroPage, which hugetlbfs lacks", kind, reg.Ioctls)
		}
	}
}

// With no free huge pages, the hugetlb rows say so instead of failing.
func TestCollectNoHugePages(t *testing.T) {
	if _, err := mem.HugePageSize(); err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	hugePages = func() (int, int, error) { return 4, 0, nil }
	defer func() { hugePages = mem.HugePages }()
	r := collect(t)
	for _, reg := range r.Registrations {
		if strings.HasPrefix(reg.Memory, "hugetlb") && (reg.Skipped == "" || reg.OK) {
			t.Errorf("%s/%s: %+v, want skipped", reg.Memory, reg.Mode, reg)
		}
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^hugetlb +Missing +skipped +needs 1 free and unreserved .* huge pages, 0 are`).MatchString(text.String()) {
		t.Errorf("text report does not say hugetlb was skipped:\n%s", text.String())
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := collect(t)
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r, back) {
		t.Errorf("JSON round trip changed the report:\n%+v\n%+v", r, back)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &fields); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kernel", "euid", "cap_sys_ptrace", "open_paths", "api", "features", "fd_ioctls",
		"registrations", "page_size", "huge_pages", "unprivileged_userfaultfd", "device", "pagemap_scan"} {
		if _, ok := fields[name]; !ok {
			t.Errorf("JSON lacks %q", name)
		}
	}
	if len(fields) != 13 {
		t.Errorf("JSON has %d fields, the documentation lists 13", len(fields))
	}
}

func TestText(t *testing.T) {
	r := collect(t)
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"Kernel ", "Page size ", "vm.unprivileged_userfaultfd ", "/dev/userfaultfd ", "Open path syscall ",
		"FEATURE ", "UFFD_FEATURE_MOVE ", "MEMORY ", "hugetlb-private "} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

func TestLsMode(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{
		{os.ModeDevice | os.ModeCharDevice | 0o600, "crw-------"},
		{os.ModeDevice | 0o660, "brw-rw----"},
		{os.ModeDir | 0o755, "drwxr-xr-x"},
		{0o644, "-rw-r--r--"},
	} {
		if got := lsMode(tc.mode); got != tc.want {
			t.Errorf("lsMode(%v) = %q, want %q", tc.mode, got, tc.want)
		}
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int]string{4096: "4 KiB", 2 << 20: "2 MiB", 1 << 30: "1 GiB", 1000: "1000 B", 3 << 19: "1536 KiB"} {
		if got := sizeString(n); got != want {
			t.Errorf("sizeString(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestHugePoolReserved: the report counts the pool's reserved pages, which
// a mapping takes when it is made, before any page is touched.
func TestHugePoolReserved(t *testing.T) {
	hps, err := mem.HugePageSize()
	if err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	testutil.ReserveHugePagesFor(t, mem.Hugetlb, 2*hps)
	pool := func() HugePagePool {
		for _, p := range hugePagePools() {
			if p.Default {
				return p
			}
		}
		t.Fatal("no default huge page pool in the report")
		return HugePagePool{}
	}
	before := pool()
	m, err := mem.Map(mem.Hugetlb, 2*hps)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if after := pool(); after.Reserved-before.Reserved != 2 || after.Free != before.Free {
		t.Errorf("mapping 2 huge pages: reserved %d -> %d, free %d -> %d; want 2 more reserved, as many free", before.Reserved, after.Reserved, before.Free, after.Free)
	}
}
