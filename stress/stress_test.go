package stress

import (
	"bytes"
	"context"
	"os"
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
		t.Skipf("no userfaultfd: %v", err)
	}
}

// run runs a short stress test of kind and checks what it reports.
func run(t *testing.T, cfg Config) Result {
	t.Helper()
	requireUFFD(t)
	if cfg.Kind.Huge() {
		hps, err := mem.HugePageSize()
		if err != nil {
			t.Skipf("no huge pages: %v", err)
		}
		testutil.ReserveHugePages(t, 2*cfg.Size/hps)
	}
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
