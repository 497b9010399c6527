package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// runCmd runs the command in-process.
func runCmd(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestDemo checks `uffd demo 3` line by line against the transcript in
// userfaultfd(2): a blank line and the handler's four lines before each
// page's four reads, the exact faulting address (mmap base + page + 0xf),
// and the letters A, B, C.
func TestDemo(t *testing.T) {
	stdout, stderr, err := runCmd(context.Background(), "demo", "3")
	if err != nil {
		t.Fatalf("demo 3: %v\nstderr:\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	const pages, perPage = 3, 4
	if want := 1 + pages*(5+perPage); len(lines) != want {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), want, stdout)
	}
	first := regexp.MustCompile(`^Address returned by mmap\(\) = 0x([0-9a-f]+)$`).FindStringSubmatch(lines[0])
	if first == nil {
		t.Fatalf("line 1 = %q, want the mmap address", lines[0])
	}
	base, err := strconv.ParseUint(first[1], 16, 64)
	if err != nil || base%uint64(os.Getpagesize()) != 0 {
		t.Fatalf("mmap address %s is not a page address (%v)", first[1], err)
	}

	var want []*regexp.Regexp
	exact := func(format string, args ...any) {
		want = append(want, regexp.MustCompile("^"+regexp.QuoteMeta(fmt.Sprintf(format, args...))+"$"))
	}
	ps := uint64(os.Getpagesize())
	for p := range uint64(pages) {
		fault := base + p*ps + 0xf
		exact("")
		exact("fault_handler_thread():")
		exact("    poll() returns: nready = 1; POLLIN = 1; POLLERR = 0")
		exact("    UFFD_EVENT_PAGEFAULT event: flags = 0; address = %x", fault)
		exact("        (uffdio_copy.copy returned %d)", ps)
		for r := range uint64(perPage) {
			exact("Read address %#x in main(): %c", fault+r*1024, 'A'+p)
		}
	}
	for i, re := range want {
		if !re.MatchString(lines[i+1]) {
			t.Errorf("line %d = %q, want %s", i+2, lines[i+1], re)
		}
	}
	if stderr != "" {
		t.Errorf("stderr: %q", stderr)
	}
}

func TestBadArgs(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"demo"},
		{"demo", "x"},
		{"demo", "0"},
		{"demo", "-1"},
		{"demo", "1", "2"},
		{"demo", "99999999999999999999"},
		{"demo", "-delay", "-1s", "1"},
		{"demo", "-bogus", "1"},
		{"features", "extra"},
		{"features", "--bogus"},
	} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			stdout, stderr, err := runCmd(context.Background(), args...)
			if !errors.Is(err, errUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if !strings.HasPrefix(stderr, "uffd: ") || !strings.Contains(stderr, "Usage: uffd") ||
				!strings.Contains(stderr, "demo") || !strings.Contains(stderr, "features") {
				t.Errorf("stderr lacks the error or the usage:\n%s", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	stdout, _, err := runCmd(context.Background(), "help")
	if err != nil || !strings.Contains(stdout, "Usage: uffd") {
		t.Errorf("help: err %v, stdout:\n%s", err, stdout)
	}
	if _, stderr, err := runCmd(context.Background(), "demo", "-h"); err != nil || !strings.Contains(stderr, "-delay") {
		t.Errorf("demo -h: err %v, stderr:\n%s", err, stderr)
	}
}

// Cancellation (SIGINT, SIGTERM) stops the demo, even blocked in a pause,
// and is not an error.
func TestDemoCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	stdout, stderr, err := runCmd(ctx, "demo", "-delay", "1h", "3")
	if err != nil {
		t.Fatalf("cancelled demo: %v (stderr %q)", err, stderr)
	}
	if !strings.HasPrefix(stdout, "Address returned by mmap()") {
		t.Errorf("stdout:\n%s", stdout)
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, _, err := runCmd(ctx, "demo", "3"); err != nil {
		t.Errorf("demo with a cancelled context: %v", err)
	}
}

// jsonReport is the JSON schema of `uffd features --json`, spelled out
// here so that a renamed field fails the test.
type jsonReport struct {
	Kernel struct {
		Release string `json:"release"`
	} `json:"kernel"`
	Paths []struct {
		Path string `json:"path"`
		OK   bool   `json:"ok"`
	} `json:"open_paths"`
	API      uint64 `json:"api"`
	Features []struct {
		Name       string `json:"name"`
		KernelName string `json:"kernel_name"`
		Since      string `json:"since"`
		Supported  bool   `json:"supported"`
	} `json:"features"`
	FdIoctls      []string `json:"fd_ioctls"`
	Registrations []struct {
		Memory string   `json:"memory"`
		Mode   string   `json:"mode"`
		OK     bool     `json:"ok"`
		Ioctls []string `json:"ioctls"`
	} `json:"registrations"`
	PageSize  int `json:"page_size"`
	HugePages []struct {
		Size int `json:"size"`
	} `json:"huge_pages"`
	Unprivileged struct {
		Value *int `json:"value"`
	} `json:"unprivileged_userfaultfd"`
	Device struct {
		Exists bool `json:"exists"`
	} `json:"device"`
	PagemapScan struct {
		Supported bool `json:"supported"`
	} `json:"pagemap_scan"`
}

func TestFeaturesJSON(t *testing.T) {
	stdout, stderr, err := runCmd(context.Background(), "features", "--json")
	if err != nil {
		t.Fatalf("features --json: %v\n%s", err, stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	var r jsonReport
	if err := dec.Decode(&r); err != nil {
		// Unknown fields are fine for consumers, but this test should
		// know them all: update jsonReport.
		if !strings.Contains(err.Error(), "unknown field") {
			t.Fatalf("decode: %v\n%s", err, stdout)
		}
		r = jsonReport{}
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatal(err)
		}
	}
	if dec.More() {
		t.Error("more than one JSON value")
	}

	if r.API != 0xAA {
		t.Errorf("api = %#x, want 0xaa", r.API)
	}
	if len(r.Features) != len(uffd.Features()) || len(r.Features) != 17 {
		t.Errorf("%d features listed, want 17", len(r.Features))
	}
	for _, f := range r.Features {
		// Everything through UFFD_FEATURE_MOVE (6.8) is in 6.18.
		if !f.Supported {
			t.Errorf("feature %s (%s, %s) not supported on %s", f.Name, f.KernelName, f.Since, r.Kernel.Release)
		}
	}
	if len(r.Paths) != 3 || !r.Paths[0].OK || !r.Paths[2].OK || r.Paths[2].Path != "user-mode-only" {
		t.Errorf("open paths: %+v", r.Paths)
	}
	if !slices.Equal(r.FdIoctls, []string{"Register", "Unregister", "API"}) {
		t.Errorf("fd ioctls %v", r.FdIoctls)
	}
	found := false
	for _, reg := range r.Registrations {
		if reg.Memory != "anon" || reg.Mode != "Missing" {
			continue
		}
		found = true
		if !reg.OK {
			t.Errorf("anon Missing registration failed")
		}
		for _, want := range []string{"Copy", "ZeroPage", "Wake", "Move"} {
			if !slices.Contains(reg.Ioctls, want) {
				t.Errorf("anon Missing ioctls %v lack %s", reg.Ioctls, want)
			}
		}
	}
	if !found {
		t.Error("no anon Missing registration reported")
	}
	if r.PageSize != os.Getpagesize() {
		t.Errorf("page_size %d", r.PageSize)
	}
}

func TestFeaturesText(t *testing.T) {
	stdout, stderr, err := runCmd(context.Background(), "features")
	if err != nil {
		t.Fatalf("features: %v\n%s", err, stderr)
	}
	for _, f := range uffd.Features() {
		if !regexp.MustCompile(`(?m)^` + f.String() + ` +yes +` + f.KernelName() + ` +` + regexp.QuoteMeta(f.Since()) + `$`).MatchString(stdout) {
			t.Errorf("no row for %s:\n%s", f, stdout)
		}
	}
	if !regexp.MustCompile(`(?m)^anon +Missing +yes +.*\bCopy\b`).MatchString(stdout) {
		t.Errorf("no anon Missing row:\n%s", stdout)
	}
}
