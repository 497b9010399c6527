package stress

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

func TestMain(m *testing.M) {
	LockerMain()
	os.Exit(testutil.Main(m))
}

// runTimeout bounds a run: a hang fails the test instead of the package.
const runTimeout = 2 * time.Minute

func TestModeOf(t *testing.T) {
	for left, want := range []string{
		0: "seq read", 1: "rnd read", 2: "seq racing read", 3: "rnd racing read",
		4: "seq ver read", 7: "rnd racing ver read", 8: "seq poll", 15: "rnd racing ver poll", 16: "seq read",
	} {
		if want == "" {
			continue
		}
		if got := ModeOf(left).String(); got != want {
			t.Errorf("ModeOf(%d) = %q, want %q", left, got, want)
		}
	}
}

func requireUFFD(t *testing.T) {
	t.Helper()
	if _, err := uffd.Probe(); err != nil {
		testutil.Skipf(t, "no userfaultfd: %v", err)
	}
}

// reserveFor reserves the huge pages a run of kind with areas of size
// bytes takes.
func reserveFor(t *testing.T, kind mem.Kind, size int) {
	t.Helper()
	if !kind.Huge() {
		return
	}
	if _, err := mem.HugePageSize(); err != nil {
		testutil.Skipf(t, "no huge pages: %v", err)
	}
	_, huge, err := needs(kind, size)
	if err != nil {
		t.Fatal(err)
	}
	testutil.ReserveHugePages(t, huge)
}

// run runs a short stress test of kind and checks what it reports.
func run(t *testing.T, cfg Config) Result {
	t.Helper()
	requireUFFD(t)
	reserveFor(t, cfg.Kind, cfg.Size)
	var stderr bytes.Buffer
	cfg.Stderr = &stderr
	var progress []Bounce
	cfg.Progress = func(b Bounce) { progress = append(progress, b) }
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\nlocker: %s", err, stderr.String())
	}
	if len(res.Bounces) != cfg.Bounces || len(progress) != cfg.Bounces {
		t.Fatalf("%d bounces reported, %d progress calls; want %d", len(res.Bounces), len(progress), cfg.Bounces)
	}
	ps := mem.PageSize()
	if cfg.Kind.Huge() {
		ps, _ = mem.HugePageSize()
	}
	if res.PageSize != ps || res.Pages != cfg.Size/ps/res.CPUs*res.CPUs {
		t.Errorf("%d pages of %d bytes, want %d of %d", res.Pages, res.PageSize, cfg.Size/ps, ps)
	}
	for i, b := range res.Bounces {
		// Every page is installed once per bounce, by a fault or in the
		// background.
		if b.Served != uint64(res.Pages) {
			t.Errorf("bounce %d (%v): %d pages installed (%d by faults, %d in the background), want each of the %d once",
				i, b.Mode, b.Served, b.Faults, b.Background, res.Pages)
		}
		if b.Index != i {
			t.Errorf("bounce %d has index %d", i, b.Index)
		}
	}
	// A bounce of a small area may end before the lockers got a page;
	// over the run they must have.
	var incs uint64
	for _, b := range res.Bounces {
		incs += b.Increments
	}
	if incs == 0 {
		t.Errorf("the lockers made no increment in %d bounces", len(res.Bounces))
	}
	if res.PagesPerSecond() <= 0 {
		t.Errorf("pages per second %v", res.PagesPerSecond())
	}
	t.Logf("%v %v: %d pages x %d bytes, wp %v: %v", cfg.Kind, cfg.Server, res.Pages, res.PageSize, res.WP, summary(res))
	return res
}

func summary(r Result) string {
	var sb strings.Builder
	for _, b := range r.Bounces {
		sb.WriteString(b.Mode.String())
		sb.WriteString(": ")
		sb.WriteString(time.Duration(b.Duration).Round(time.Millisecond).String())
		sb.WriteString("; ")
	}
	return sb.String()
}

// modes exercised by the short runs: three bounces cover random and
// sequential, racing, verify, read and poll.
var testModes = []Mode{Random | Poll, Racing | Verify, Racing | Verify | Poll}

// sizeFor is a short run's area size: a few MiB, at least two huge pages
// per CPU.
func sizeFor(kind mem.Kind) int {
	if kind.Huge() {
		return 8 << 20
	}
	return 2 << 20
}

func TestStress(t *testing.T) {
	for _, kind := range mem.Kinds {
		t.Run(kind.String(), func(t *testing.T) {
			res := run(t, Config{Kind: kind, Size: sizeFor(kind), Bounces: 3, CPUs: 2, modes: testModes})
			if sup, _ := uffd.Probe(); sup.Features.Has(uffd.FeatureWPFaults) && !res.WP && (kind == mem.Anonymous || sup.Features.Has(uffd.FeatureWPHugetlbfsShmem)) {
				t.Errorf("the run did not write-protect although the kernel can")
			}
		})
	}
}

func TestStressPager(t *testing.T) {
	for _, kind := range mem.Kinds {
		t.Run(kind.String(), func(t *testing.T) {
			res := run(t, Config{Kind: kind, Size: sizeFor(kind), Bounces: 3, CPUs: 2, Server: ServePager, modes: testModes})
			if res.WP {
				t.Errorf("the pager run write-protected")
			}
		})
	}
}

// TestStressCatchesCorruption makes the fault path copy the wrong page
// into one page: the run must fail, naming the page.
func TestStressCatchesCorruption(t *testing.T) {
	requireUFFD(t)
	corruptPage = 5
	defer func() { corruptPage = -1 }()
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	_, err := Run(ctx, Config{Kind: mem.Anonymous, Size: 1 << 20, Bounces: 2, CPUs: 2, Stderr: &stderr, modes: []Mode{Verify, Verify}})
	if err == nil {
		t.Fatal("a run that copied page 4's contents into page 5 succeeded")
	}
	if !strings.Contains(err.Error(), "page 5") && !strings.Contains(err.Error(), "page 4") {
		t.Errorf("error %q does not name the page", err)
	}
	t.Logf("%v", err)
}

func TestConfigErrors(t *testing.T) {
	requireUFFD(t)
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Kind: mem.Anonymous, Size: 1 << 20, Bounces: 0}, "want at least 1"},
		{Config{Kind: mem.Anonymous, Size: mem.PageSize(), Bounces: 1, CPUs: 2}, "less than one"},
	} {
		if _, err := Run(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v): %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Run(cctx, Config{Kind: mem.Anonymous, Size: 1 << 20, Bounces: 1}); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Run with a cancelled context: %v", err)
	}
}

// TestNeeds: two areas of hugetlb memory take as many huge pages as they
// have pages; private ones twice as many (with their aliases); the other
// kinds take memory for the source and one area.
func TestNeeds(t *testing.T) {
	hps, err := mem.HugePageSize()
	if err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	for _, tc := range []struct {
		kind        mem.Kind
		size        int
		bytes, huge int
	}{
		{mem.Anonymous, 8 << 20, 16 << 20, 0},
		{mem.ShmemPrivate, 8 << 20, 16 << 20, 0},
		{mem.Hugetlb, 4 * hps, 4 * hps, 8},
		// uffd stress hugetlb-private 8 1: 16 huge pages.
		{mem.HugetlbPrivate, 4 * hps, 4 * hps, 16},
	} {
		b, h, err := needs(tc.kind, tc.size)
		if err != nil || b != tc.bytes || h != tc.huge {
			t.Errorf("needs(%v, %d) = %d bytes, %d huge pages, %v; want %d, %d", tc.kind, tc.size, b, h, err, tc.bytes, tc.huge)
		}
	}
}

// TestTooBig: a run larger than the memory available is refused before
// anything starts, saying what it needs and what there is, instead of the
// locker being killed by the kernel's OOM killer.
func TestTooBig(t *testing.T) {
	requireUFFD(t)
	avail, err := mem.Available()
	if err != nil {
		t.Fatal(err)
	}
	size := (avail/2 + 64<<20) &^ (1<<20 - 1)
	_, err = Run(context.Background(), Config{Kind: mem.Anonymous, Size: size, Bounces: 1, Exe: "/nonexistent/locker"})
	if err == nil || !strings.Contains(err.Error(), "MemAvailable") || !strings.Contains(err.Error(), fmt.Sprintf("need about %d MiB", 2*size>>20)) {
		t.Errorf("Run of 2 x %d MiB with %d MiB available: %v; want an error naming the memory needed and MemAvailable", size>>20, avail>>20, err)
	}
}

// TestTooManyHugePages: a hugetlb run that the pool cannot hold is
// refused with figures that agree: what it needs, and fewer available.
func TestTooManyHugePages(t *testing.T) {
	requireUFFD(t)
	hps, err := mem.HugePageSize()
	if err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	testutil.ReserveHugePages(t, 1) // holds the pool still
	_, avail, err := mem.HugePages()
	if err != nil {
		t.Fatal(err)
	}
	pages := avail/4 + 2 // two private areas with aliases: four times
	pages += pages % 2
	_, err = Run(context.Background(), Config{Kind: mem.HugetlbPrivate, Size: pages * hps, CPUs: 2, Bounces: 1, Exe: "/nonexistent/locker"})
	want := fmt.Sprintf("need %d huge pages of %d bytes, and %d are free and unreserved", 4*pages, hps, avail)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run of 2 x %d private huge pages with %d available: %v; want an error saying %q", pages, avail, err, want)
	}
}

// TestLockerFails: a locker that cannot set up says why, and Run reports
// that as the locker's error rather than as a malformed handoff. The
// locker here is a script that fails as the real one does.
func TestLockerFails(t *testing.T) {
	requireUFFD(t)
	exe := filepath.Join(t.TempDir(), "locker")
	script := "#!/bin/sh\necho '" + lockerErrorPrefix + "mem: mmap 8388608 bytes of hugetlb-private: cannot allocate memory' >&3\nexit 1\n"
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	_, err := Run(ctx, Config{Kind: mem.Anonymous, Size: 1 << 20, Bounces: 1, CPUs: 2, Exe: exe})
	if err == nil || !strings.Contains(err.Error(), "the locker failed: mem: mmap 8388608 bytes of hugetlb-private: cannot allocate memory") || strings.Contains(err.Error(), "handoff") {
		t.Errorf("Run with a failing locker: %v; want the locker's own error", err)
	}

	// A locker that exits without a word.
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Run(ctx, Config{Kind: mem.Anonymous, Size: 1 << 20, Bounces: 1, CPUs: 2, Exe: exe})
	if err == nil || !strings.Contains(err.Error(), "exit status 3 before handing over") {
		t.Errorf("Run with a locker that exits: %v; want an error naming its exit", err)
	}
}
