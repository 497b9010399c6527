package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
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
	for _, tc := range []struct {
		args []string
		cmd  string // whose usage follows the error: "" for the top level
		want string
	}{
		{nil, "", "no command given"},
		{[]string{"bogus"}, "", `unknown command "bogus"`},
		{[]string{"help", "bogus"}, "", `help: unknown command "bogus"`},
		{[]string{"demo"}, "demo", "demo: want one argument, N"},
		{[]string{"demo", "x"}, "demo", "demo: N x: not a number; want at least 1"},
		{[]string{"demo", "0"}, "demo", "demo: N 0: want at least 1"},
		{[]string{"demo", "-1"}, "demo", "flag provided but not defined: -1"},
		{[]string{"demo", "1", "2"}, "demo", "got 2"},
		{[]string{"demo", "99999999999999999999"}, "demo", "demo: N 99999999999999999999: not a number"},
		{[]string{"demo", "999999999999999999"}, "demo", "more pages than an address space holds"},
		{[]string{"demo", "-delay", "-1s", "1"}, "demo", "demo: --delay -1s: want at least 0s"},
		{[]string{"demo", "1", "--delay", "soon"}, "demo", "demo: --delay soon: not a duration"},
		{[]string{"demo", "-bogus", "1"}, "demo", "flag provided but not defined: -bogus"},
		{[]string{"features", "extra"}, "features", `features: unexpected argument "extra"`},
		{[]string{"features", "--bogus"}, "features", "flag provided but not defined"},
		{[]string{"version", "x"}, "version", `unexpected argument "x"`},
		{[]string{"stress", "anon", "1"}, "stress", "want TYPE MiB BOUNCES"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			stdout, stderr, err := runCmd(context.Background(), tc.args...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a usage error saying %q", err, tc.want)
			}
			wantUsage := "Usage: uffd <command>"
			if tc.cmd != "" {
				wantUsage = "Usage: uffd " + tc.cmd
			}
			first, rest, _ := strings.Cut(stderr, "\n")
			if first != "uffd: "+err.Error() || !strings.HasPrefix(strings.TrimPrefix(rest, "\n"), wantUsage) {
				t.Errorf("stderr is not the error and then %q:\n%s", wantUsage, stderr)
			}
			if tc.cmd != "" && strings.Contains(stderr, "Commands:") {
				t.Errorf("an error in %s printed the top-level usage:\n%s", tc.cmd, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		stdout, _, err := runCmd(context.Background(), args...)
		if err != nil || stdout != topUsage() {
			t.Errorf("%v: err %v, stdout:\n%s", args, err, stdout)
		}
	}
	for _, c := range commands() {
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {"help", c.name}} {
			stdout, stderr, err := runCmd(context.Background(), args...)
			if err != nil || stdout != c.usage() || stderr != "" {
				t.Errorf("%v: err %v, stdout:\n%s\nstderr:\n%s", args, err, stdout, stderr)
			}
		}
	}
}

// TestHelpNamesArguments: each command's help names its positional
// arguments, and stress's the memory types.
func TestHelpNamesArguments(t *testing.T) {
	for name, want := range map[string][]string{
		"demo":   {"Usage: uffd demo [--delay duration] N\n", "\n  N  the number of pages"},
		"stress": {"TYPE MiB BOUNCES\n", "\n  TYPE     ", "\n  MiB      ", "\n  BOUNCES  ", "anon, shmem, shmem-private, hugetlb or hugetlb-private"},
	} {
		u := lookup(name).usage()
		for _, w := range want {
			if !strings.Contains(u, w) {
				t.Errorf("uffd %s -h lacks %q:\n%s", name, w, u)
			}
		}
	}
}

// flagLine is a flag's line in a command's help: --name and its type.
var flagLine = regexp.MustCompile(`(?m)^  --([a-z-]+)(?: (\S+))?$`)

// TestHelpTypes: help names each flag's value by its type, never by an
// example value (as "-op copy" did), and lists every flag.
func TestHelpTypes(t *testing.T) {
	types := []string{"int", "duration", "size", "string", "path", "addr", "perm", "list", "flags"}
	for _, c := range commands() {
		fs, _ := c.flags()
		u := c.usage()
		listed := map[string]bool{}
		for _, m := range flagLine.FindAllStringSubmatch(u, -1) {
			listed[m[1]] = true
			f := fs.Lookup(m[1])
			if f == nil {
				t.Errorf("%s -h lists --%s, which it does not have", c.name, m[1])
				continue
			}
			_, isBool := f.Value.(interface{ IsBoolFlag() bool })
			if isBool != (m[2] == "") || !isBool && !slices.Contains(types, m[2]) {
				t.Errorf("%s -h: --%s %s: want one of the types %v (none for a boolean flag)", c.name, m[1], m[2], types)
			}
		}
		fs.VisitAll(func(f *flag.Flag) {
			if !listed[f.Name] {
				t.Errorf("%s -h does not list --%s", c.name, f.Name)
			}
		})
	}
}

// TestTopUsage: the top-level usage names every command, and the flags it
// shows for a command are that command's: all of them when it has few,
// the required ones otherwise.
func TestTopUsage(t *testing.T) {
	u := topUsage()
	for _, c := range commands() {
		fs, _ := c.flags()
		line := regexp.MustCompile(`(?m)^  ` + c.name + `( .*)?$`).FindString(u)
		if line == "" {
			t.Errorf("the usage has no line for %s:\n%s", c.name, u)
			continue
		}
		if !strings.HasSuffix(line, " "+c.args) && c.args != "" {
			t.Errorf("usage line %q lacks the arguments %s", line, c.args)
		}
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		n := len(names)
		for _, name := range names {
			if (n <= 3 || slices.Contains(c.required, name)) && !strings.Contains(line, "--"+name) {
				t.Errorf("usage line %q lacks --%s", line, name)
			}
		}
		for _, m := range regexp.MustCompile(`--([a-z-]+)`).FindAllStringSubmatch(line, -1) {
			if fs.Lookup(m[1]) == nil {
				t.Errorf("usage line %q names --%s, which %s does not have", line, m[1], c.name)
			}
		}
		if n > 3 && !strings.Contains(line, "[flags]") {
			t.Errorf("usage line %q does not say [flags]", line)
		}
	}
}

// TestREADME: the README shows the top-level usage and the help of the
// commands it documents as the program prints them.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	indent := func(s string) string {
		var sb strings.Builder
		for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
			if l == "" {
				sb.WriteString("\n")
			} else {
				sb.WriteString("    " + l + "\n")
			}
		}
		return sb.String()
	}
	for what, text := range map[string]string{
		"uffd -h":             topUsage(),
		"uffd stress -h":      stressCmd.usage(),
		"uffd firecracker -h": firecrackerCmd.usage(),
	} {
		if !strings.Contains(readme, indent(text)) {
			t.Errorf("README.md does not show %s as it prints (indented by 4 spaces):\n%s", what, indent(text))
		}
	}
}

// TestFlagsAfterArguments: flags may follow the positional arguments;
// "--" ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	stdout, stderr, err := runCmd(context.Background(), "demo", "2", "-delay", "1ms")
	if err != nil || strings.Count(stdout, "Read address") != 8 {
		t.Fatalf("demo 2 -delay 1ms: %v\n%s%s", err, stdout, stderr)
	}
	fs, _ := stressCmd.flags()
	for _, tc := range []struct {
		args, pos []string
		cpus      string
	}{
		{[]string{"anon", "8", "1", "--cpus", "3"}, []string{"anon", "8", "1"}, "3"},
		{[]string{"--cpus=1", "anon", "-no-wp", "8", "1"}, []string{"anon", "8", "1"}, "1"},
		{[]string{"anon", "--", "-5", "--cpus", "2"}, []string{"anon", "-5", "--cpus", "2"}, "1"},
		{[]string{"--cpus", "--", "anon"}, []string{"anon"}, "--"},
	} {
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.pos) || fs.Lookup("cpus").Value.String() != tc.cpus {
			t.Errorf("parse %q: %q, --cpus %s, %v; want %q, --cpus %s", tc.args, pos, fs.Lookup("cpus").Value.String(), err, tc.pos, tc.cpus)
		}
	}
}

// TestRangeErrors: a value out of range reads the same whatever the value,
// and says what is wanted.
func TestRangeErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--mib", "0"}, "bench: --mib 0: want 1 to 1048576"},
		{[]string{"bench", "--mib", "-5"}, "bench: --mib -5: want 1 to 1048576"},
		{[]string{"bench", "--mib", "x"}, "bench: --mib x: not a number; want 1 to 1048576"},
		{[]string{"bench", "--chunk", "0"}, "bench: --chunk 0: want 4KiB to 1GiB, a multiple of 4KiB"},
		{[]string{"bench", "--chunk", "5000"}, "bench: --chunk 5000: want 4KiB to 1GiB, a multiple of 4KiB"},
		{[]string{"firecracker", "--prefetch", "1TiB"}, "firecracker: --prefetch 1TiB: want none, adaptive, or a size from 4KiB to 1GiB, a multiple of 4KiB"},
		{[]string{"firecracker", "--prefetch", "fast"}, "firecracker: --prefetch fast: not a size"},
		{[]string{"firecracker", "--fetch-concurrency", "5000"}, "firecracker: --fetch-concurrency 5000: want 0 to 4096"},
		{[]string{"firecracker", "--max-vms", "-1"}, "firecracker: --max-vms -1: want at least 1"},
		{[]string{"firecracker", "--handshake-timeout", "0s"}, "firecracker: --handshake-timeout 0s: want more than 0"},
		{[]string{"firecracker", "--record-for", "-1m"}, "firecracker: --record-for -1m: want more than 0"},
		{[]string{"firecracker", "--socket-mode", "999"}, "firecracker: --socket-mode 999: want octal permissions"},
		{[]string{"firecracker", "--log-level", "loud"}, "firecracker: --log-level loud: want debug, info, warn or error"},
		{[]string{"stress", "--cpus", "0", "anon", "1", "1"}, "stress: --cpus 0: want 1 to 1024"},
		{[]string{"stress", "anon", "0", "1"}, "stress: MiB 0: want 1 to 1048576"},
		{[]string{"stress", "anon", "-5", "1"}, "stress: flag provided but not defined: -5"},
		{[]string{"stress", "anon", "--", "-5", "1"}, "stress: MiB -5: want 1 to 1048576"},
		{[]string{"stress", "anon", "1", "0"}, "stress: BOUNCES 0: want at least 1"},
	} {
		_, _, err := runCmd(context.Background(), tc.args...)
		if !errors.Is(err, errUsage) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error %q", tc.args, err, tc.want)
		}
	}
}

// TestVersion: `uffd version` and --version print the module version and
// the VCS revision of the build.
func TestVersion(t *testing.T) {
	stdout, _, err := runCmd(context.Background(), "version")
	if err != nil || !strings.HasPrefix(stdout, "uffd ") || !strings.Contains(stdout, "\nrevision ") {
		t.Errorf("version: %v\n%s", err, stdout)
	}
	if alt, _, err := runCmd(context.Background(), "--version"); err != nil || alt != stdout {
		t.Errorf("--version: %v\n%s", err, alt)
	}
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Path: "github.com/gouffd/uffd/cmd/uffd",
		Main: debug.Module{Path: "github.com/gouffd/uffd", Version: "v0.1.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "8d32abe"}, {Key: "vcs.time", Value: "2026-12-01T21:00:00Z"},
			{Key: "vcs.modified", Value: "true"}, {Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"}}}
	want := "uffd v0.1.0 (module github.com/gouffd/uffd)\nrevision 8d32abe (committed 2026-12-01T21:00:00Z, with uncommitted changes)\nbuilt with go1.26.8 for linux/amd64\n"
	if got := versionText(bi); got != want {
		t.Errorf("versionText:\n%s\nwant:\n%s", got, want)
	}

	// A real build of this commit. Go stamps the revision in a clone,
	// not in a linked worktree (golang/go#58218), so build in a fresh
	// clone; and ask for stamping, which GOFLAGS may turn off.
	git, err := exec.LookPath("git")
	if err != nil {
		testutil.Skipf(t, "no git: %v", err)
	}
	head, err := exec.Command(git, "rev-parse", "HEAD").Output()
	if err != nil {
		testutil.Skipf(t, "not in a git checkout: %v", err)
	}
	rev := strings.TrimSpace(string(head))
	clone := filepath.Join(t.TempDir(), "clone")
	if out, err := exec.Command(git, "clone", "-q", "../..", clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	if out, err := exec.Command(git, "-C", clone, "checkout", "-q", rev).CombinedOutput(); err != nil {
		t.Fatalf("git checkout: %v\n%s", err, out)
	}
	exe := filepath.Join(t.TempDir(), "uffd")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", exe, "./cmd/uffd")
	build.Dir = clone
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(exe, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "uffd v0.0.0-") || !strings.Contains(string(out), rev[:12]+" (module github.com/gouffd/uffd)\nrevision "+rev+" (committed ") {
		t.Errorf("uffd --version: %v\n%s\nwant the module version and revision %s", err, out, rev)
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
		Size     int  `json:"size"`
		Total    int  `json:"total"`
		Free     int  `json:"free"`
		Reserved int  `json:"reserved"`
		Default  bool `json:"default"`
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
