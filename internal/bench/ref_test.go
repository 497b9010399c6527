//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/internal/testutil"
)

// testCache holds the C references the tests built (removed by TestMain).
var (
	testCache     string
	testCacheOnce sync.Once
)

// builtRef builds the C reference name once for the package's tests.
func builtRef(t *testing.T, name string) string {
	t.Helper()
	testCacheOnce.Do(func() {
		d, err := os.MkdirTemp("", "uffd-bench-ref")
		if err != nil {
			t.Fatal(err)
		}
		testCache = d
	})
	path, err := BuildRef(context.Background(), name, testCache)
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	return path
}

// TestBuildRef builds each reference with the system compiler and the
// project's flags, once per set of sources, and names the compiler when
// there is none.
func TestBuildRef(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatalf("the C references need a C compiler: %v", err)
	}
	dir := t.TempDir()
	// A compiler that records its arguments, then compiles.
	argsFile := filepath.Join(dir, "args")
	wrapper := filepath.Join(dir, "cc-wrapper")
	script := fmt.Sprintf("#!/bin/sh\necho \"$@\" >> %s\nexec %s \"$@\"\n", argsFile, cc)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CC", wrapper)
	cache := filepath.Join(dir, "cache")
	for _, name := range []string{RefBench, RefFirecracker} {
		path, err := BuildRef(context.Background(), name, cache)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm()&0o100 == 0 || filepath.Base(path) != name {
			t.Fatalf("BuildRef(%s) = %s (%v): not an executable named %s", name, path, err, name)
		}
		again, err := BuildRef(context.Background(), name, cache)
		if err != nil || again != path {
			t.Errorf("second BuildRef(%s) = %s, %v; want %s from the cache", name, again, err, path)
		}
	}
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("the compiler ran %d times, want once per reference:\n%s", len(lines), b)
	}
	for _, l := range lines {
		for _, f := range []string{"-O2", "-Wall", "-Wextra", "-Werror", "-pthread"} {
			if !strings.Contains(" "+l+" ", " "+f+" ") {
				t.Errorf("compiled without %s: %s", f, l)
			}
		}
	}

	t.Setenv("CC", "no-such-compiler-here")
	_, err = BuildRef(context.Background(), RefBench, filepath.Join(dir, "other"))
	var nc *NoCompilerError
	if !errors.As(err, &nc) || !strings.Contains(err.Error(), "no-such-compiler-here") || !strings.Contains(err.Error(), "install gcc or clang, or set CC") {
		t.Errorf("without a compiler: %v", err)
	}
	t.Setenv("CC", "false")
	if _, err := BuildRef(context.Background(), RefBench, filepath.Join(dir, "other")); err == nil || !strings.Contains(err.Error(), "build the C reference refbench") {
		t.Errorf("with a failing compiler: %v", err)
	}
	if _, err := BuildRef(context.Background(), "nothing", cache); err == nil {
		t.Error("BuildRef of an unknown reference succeeded")
	}
}

// refOutput is refbench's JSON line.
type refOutput struct {
	Op           string  `json:"op"`
	Chunk        int     `json:"chunk"`
	Faulters     int     `json:"faulters"`
	Handlers     int     `json:"handlers"`
	MiB          int     `json:"mib"`
	MedianNS     int64   `json:"median_ns"`
	Faults       float64 `json:"faults"`
	FaultsPerS   float64 `json:"faults_per_s"`
	NSPerPage    float64 `json:"ns_per_page"`
	GBPerS       float64 `json:"gb_per_s"`
	TouchP50NS   int64   `json:"touch_p50_ns"`
	TouchP99NS   int64   `json:"touch_p99_ns"`
	Pinned       bool    `json:"pinned"`
	CrossProcess bool    `json:"cross_process"`
	Measure      string  `json:"measure"`
	Impl         string  `json:"impl"`
	CPUNS        int64   `json:"cpu_ns"`
	RunsNS       []int64 `json:"runs_ns"`
}

// refShape is what a refbench run says it did.
type refShape struct {
	Op                        string
	Chunk, Faulters, Handlers int
	MiB                       int
	Pinned, CrossProcess      bool
	Measure                   string
}

// TestRefBench runs each mode of the C reference briefly: every run checks
// every byte of its region, and a wrong byte fails it, in this process and
// across processes.
func TestRefBench(t *testing.T) {
	exe := builtRef(t, RefBench)
	cpus := AllowedCPUs()
	for _, tc := range []struct {
		args string
		want refShape
	}{
		{"-s 8 -r 2", refShape{Op: "copy", Chunk: 4096, Faulters: 1, Handlers: 1, MiB: 8, Measure: "uffd"}},
		{"-s 8 -r 2 -n 0 -p", refShape{Op: "copy", Chunk: 4096, Faulters: 1, Handlers: cpus, MiB: 8, Pinned: true, Measure: "uffd"}},
		{"-s 8 -r 2 -n 0 -p -X", refShape{Op: "copy", Chunk: 4096, Faulters: 1, Handlers: cpus, MiB: 8, Pinned: true, CrossProcess: true, Measure: "uffd"}},
		{"-s 8 -r 1 -X -f 3 -x -R -o zero", refShape{Op: "zero", Chunk: 4096, Faulters: 3, Handlers: 1, MiB: 8, CrossProcess: true, Measure: "uffd"}},
		{"-s 8 -r 1 -c 65536 -f 2 -n 3 -p -x", refShape{Op: "copy", Chunk: 65536, Faulters: 2, Handlers: 3, MiB: 8, Pinned: true, Measure: "uffd"}},
		{"-s 8 -r 1 -c 12288 -X", refShape{Op: "copy", Chunk: 12288, Faulters: 1, Handlers: 1, MiB: 8, CrossProcess: true, Measure: "uffd"}},
		{"-s 8 -r 1 -m touch -R", refShape{Op: "copy", Chunk: 4096, Faulters: 1, Handlers: 0, MiB: 8, Measure: "touch"}},
		{"-s 8 -r 1 -m prefill -c 2097152 -n 0 -p", refShape{Op: "copy", Chunk: 2 << 20, Faulters: 1, Handlers: cpus, MiB: 8, Pinned: true, Measure: "prefill"}},
		{"-s 8 -r 1 -m prefill -o zero -f 2", refShape{Op: "zero", Chunk: 4096, Faulters: 2, Handlers: 1, MiB: 8, Measure: "prefill"}},
	} {
		t.Run(strings.ReplaceAll(tc.args, " ", ""), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(exe, strings.Fields(tc.args)...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			if !refFields.Match(stdout.Bytes()) {
				t.Errorf("output does not begin with ref_handler's fields: %s", stdout.Bytes())
			}
			dec := json.NewDecoder(&stdout)
			dec.DisallowUnknownFields()
			var got refOutput
			if err := dec.Decode(&got); err != nil {
				t.Fatal(err)
			}
			runs, _ := strconv.Atoi(strings.Fields(tc.args)[3])
			if len(got.RunsNS) != runs || got.MedianNS <= 0 || got.Impl != "c" || got.TouchP50NS <= 0 || got.TouchP50NS > got.TouchP99NS || got.CPUNS <= 0 {
				t.Errorf("runs_ns %v, median %d, impl %q, p50 %d, p99 %d, cpu %d", got.RunsNS, got.MedianNS, got.Impl, got.TouchP50NS, got.TouchP99NS, got.CPUNS)
			}
			w := tc.want
			g := refShape{Op: got.Op, Chunk: got.Chunk, Faulters: got.Faulters, Handlers: got.Handlers, MiB: got.MiB,
				Pinned: got.Pinned, CrossProcess: got.CrossProcess, Measure: got.Measure}
			if g != w {
				t.Errorf("got  %+v\nwant %+v", g, w)
			}
			if want := math.Round(float64(8<<20) / float64(got.Chunk)); got.Faults != want {
				t.Errorf("faults %v, want %v", got.Faults, want)
			}
		})
	}
}

// refFields matches ref_handler's output format: its fields in its order
// with its number formats.
var refFields = regexp.MustCompile(`^\{"op":"(copy|zero)","chunk":\d+,"faulters":\d+,"handlers":\d+,"mib":\d+,"median_ns":\d+,` +
	`"faults":\d+,"faults_per_s":\d+,"ns_per_page":\d+\.\d,"gb_per_s":\d+\.\d{3},"touch_p50_ns":\d+,"touch_p99_ns":\d+[,}]`)

// TestRefBenchFails checks that the reference's check catches a wrong
// byte, wherever the faulters are, and that bad arguments are refused.
func TestRefBenchFails(t *testing.T) {
	exe := builtRef(t, RefBench)
	for _, tc := range []struct {
		args string
		code int
		want string
	}{
		{"-s 4 -r 1 -k 12345", 1, "verify failed at offset 12345 (page 3): got 0xa5, want 0x5a"},
		{"-s 4 -r 1 -k 12345 -X -n 0 -p", 1, "verify failed at offset 12345 (page 3)"},
		{"-s 4 -r 1 -k 8192 -R -X", 1, "bad byte on read-touch at offset 8192 (page 2)"},
		{"-s 4 -r 1 -k 8193 -m prefill", 1, "verify failed at offset 8193"},
		{"-s 4 -c 5000", 2, "-c: want a multiple of the page size"},
		{"-s 0", 2, "-s: want 1 to 1048576"},
		{"-f 65", 2, "-f: want 1 to 64"},
		{"-o move", 2, "-o: want copy or zero"},
		{"-m touch -X", 2, "-X measures faults"},
		{"-r 100", 2, "-r: want 1 to 99"},
		{"-q", 2, "unknown option"},
		{"extra", 2, "unexpected operand"},
	} {
		var stderr bytes.Buffer
		cmd := exec.Command(exe, strings.Fields(tc.args)...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("refbench %s: %v, stderr %q; want exit %d and %q", tc.args, err, stderr.String(), tc.code, tc.want)
		}
	}
}

// TestCompareRef compares with the repository's reference in each
// configuration, faulters in this process and in a child, with the limits.
func TestCompareRef(t *testing.T) {
	builtRef(t, RefBench)
	for _, tc := range []struct {
		cfg Config
		ref Ref
	}{
		{Config{MiB: 8, Runs: 2}, Ref{Limits: true}},
		{Config{MiB: 8, Runs: 1, FaultersIn: Child, Random: true}, Ref{}},
		{Config{MiB: 8, Runs: 1, FaultersIn: Child, Faulters: 2}, Ref{Mode: RefNaive}},
		{Config{MiB: 8, Runs: 1, Adaptive: true}, Ref{Chunk: 2 << 20, Limits: true}},
	} {
		t.Run(fmt.Sprintf("%v-%v-limits=%t", tc.cfg.FaultersIn, tc.ref.Mode, tc.ref.Limits), func(t *testing.T) {
			tc.ref.CacheDir = testCache
			c, err := Compare(context.Background(), tc.cfg, tc.ref, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got refOutput
			if err := json.Unmarshal(c.Ref.Median.raw, &got); err != nil {
				t.Fatal(err)
			}
			handlers := AllowedCPUs()
			if tc.ref.Mode == RefNaive {
				handlers = 1
			}
			if got.CrossProcess != (tc.cfg.FaultersIn == Child) || got.Pinned != (tc.ref.Mode == RefPinned) || got.Handlers != handlers || got.Measure != "uffd" {
				t.Errorf("the reference ran as %s", c.Ref.Median.raw)
			}
			if (c.Touch != nil) != tc.ref.Limits || (c.Prefill != nil) != tc.ref.Limits {
				t.Fatalf("limits measured: %v %v, want %t", c.Touch != nil, c.Prefill != nil, tc.ref.Limits)
			}
			b, _ := c.MarshalJSON()
			if !json.Valid(b) || strings.Contains(string(b), `"limits"`) != tc.ref.Limits {
				t.Errorf("JSON %s", b)
			}
			var out bytes.Buffer
			c.WriteText(&out)
			if tc.ref.Limits {
				if !strings.Contains(out.String(), "the kernel's own first touch") {
					t.Errorf("text lacks the limits:\n%s", out.String())
				}
				var p refOutput
				json.Unmarshal(c.Prefill.Median.raw, &p)
				if p.Measure != "prefill" || !p.Pinned || p.Chunk != c.Ref.Chunk {
					t.Errorf("prefill ran as %s", c.Prefill.Median.raw)
				}
			}
		})
	}
}

// fcHandler is the C handler of Firecracker's protocol, started on a
// memory file.
type fcHandler struct {
	cmd    *exec.Cmd
	sock   string
	mem    string
	stderr *testutil.Buffer
}

func startFCHandler(t *testing.T, size int, args ...string) *fcHandler {
	t.Helper()
	exe := builtRef(t, RefFirecracker)
	dir, err := os.MkdirTemp("", "fch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &fcHandler{sock: filepath.Join(dir, "s"), mem: filepath.Join(dir, "mem"), stderr: &testutil.Buffer{}}
	if err := writeMemFile(h.mem, size); err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command(exe, append([]string{"-s", h.sock, "-m", h.mem}, args...)...)
	h.cmd.Stderr = h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		h.cmd.Wait()
		if t.Failed() {
			t.Logf("fchandler's stderr:\n%s", h.stderr.String())
		}
	})
	h.waitLog(t, regexp.MustCompile(`serving `))
	return h
}

// waitLog waits for a line of the handler's stderr matching re, and
// returns its submatches.
func (h *fcHandler) waitLog(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(h.stderr.String()); m != nil {
			return m
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no line matching %v in fchandler's stderr:\n%s", re, h.stderr.String())
	return nil
}

// vm runs a test VM (this test binary, in another process) against h.
func (h *fcHandler) vm(t *testing.T, cfg fctest.Config) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cfg.Socket, cfg.MemFile = h.sock, h.mem
	cmd, err := fctest.Command(os.Args[0], cfg, "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out
}

// TestFCHandler serves test VMs with the C handler: several at once, in
// address and random order, reading and writing, two regions from offsets
// of the file, a balloon whose range must read back as zeroes; every byte
// checked by the VM against the memory file.
func TestFCHandler(t *testing.T) {
	const mib = 8
	h := startFCHandler(t, 2*mib<<20)
	cfgs := []fctest.Config{
		{Regions: []fctest.Region{{Size: mib << 20}}, Touch: []string{"seq-write"}, Verify: true, Balloon: true},
		{Regions: []fctest.Region{{Size: mib << 20, Offset: mib << 20}}, Touch: []string{"random"}, Verify: true, Balloon: true},
		{Regions: []fctest.Region{{Size: 4 << 20, Offset: 4 << 20}, {Size: 2 << 20, Offset: 12 << 20}}, Touch: []string{"random-write", "seq"}, Verify: true},
		{Regions: []fctest.Region{{Size: mib << 20}}, Touch: []string{"seq"}, Verify: true, Balloon: true, CheckBalloonLate: true},
	}
	hold := filepath.Join(t.TempDir(), "hold")
	cfgs[3].HoldFile = hold
	type proc struct {
		cmd *exec.Cmd
		out *bytes.Buffer
	}
	var procs []proc
	for _, c := range cfgs {
		cmd, out := h.vm(t, c)
		procs = append(procs, proc{cmd, out})
	}
	// The last VM ballooned and waits: its late check faults there after
	// this, into pages the handler must now serve as zeroes.
	time.Sleep(200 * time.Millisecond)
	os.WriteFile(hold, nil, 0o600)
	for i, p := range procs {
		res, err := fctest.Wait(p.cmd, p.out)
		if err != nil {
			t.Fatalf("VM %d: %v", i, err)
		}
		pages := 0
		for _, r := range cfgs[i].Regions {
			pages += int(r.Size) / PageSize
		}
		if res.Verified != pages || len(res.Passes) != len(cfgs[i].Touch) {
			t.Errorf("VM %d: verified %d pages of %d, %d passes", i, res.Verified, pages, len(res.Passes))
		}
		if cfgs[i].Balloon && res.Ballooned == 0 {
			t.Errorf("VM %d: no ballooned range checked", i)
		}
	}
	// Each VM's end is logged with its counters: the ballooned VMs saw
	// their REMOVE and were served zeroes where they touched after it.
	for i := range cfgs {
		h.waitLog(t, regexp.MustCompile(fmt.Sprintf(`VM %d ended faults=[1-9]\d* zeroed=\d+ removes=\d+ outside=0 errors=0`, i+1)))
	}
	// Which VM got which id depends on the order they connected: count.
	all := h.stderr.String()
	if n := len(regexp.MustCompile(`removes=1 `).FindAllString(all, -1)); n != 3 {
		t.Errorf("%d VMs ended with one REMOVE, want 3:\n%s", n, all)
	}
	if n := len(regexp.MustCompile(`zeroed=[1-9]\d* removes=1 `).FindAllString(all, -1)); n != 3 {
		t.Errorf("%d VMs were served zeroes after their REMOVE, want 3:\n%s", n, all)
	}
}

// TestFCHandlerHuge serves a guest of 2 MiB hugetlbfs pages, each fault
// resolved with one copy of the whole huge page.
func TestFCHandlerHuge(t *testing.T) {
	testutil.ReserveHugePages(t, 8)
	h := startFCHandler(t, 8<<20)
	cmd, out := h.vm(t, fctest.Config{Regions: []fctest.Region{{Size: 8 << 20, Huge: true}}, Touch: []string{"random-write"}, Verify: true})
	res, err := fctest.Wait(cmd, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != 8<<20/PageSize {
		t.Errorf("verified %d pages", res.Verified)
	}
	h.waitLog(t, regexp.MustCompile(`VM 1 ended faults=[1-9]\d* zeroed=0 removes=0 outside=0 errors=0`))
}

// TestFCHandlerRejects sends bad handshakes: each is refused with its
// reason, and the handler goes on serving.
func TestFCHandlerRejects(t *testing.T) {
	h := startFCHandler(t, 1<<20)
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventRemove})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ufd int
	rc.Control(func(fd uintptr) { ufd = int(fd) })
	send := func(msg string, fd int) {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var oob []byte
		if fd >= 0 {
			oob = unix.UnixRights(fd)
		}
		if _, _, err := c.WriteMsgUnix([]byte(msg), oob, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	good := `[{"base_host_virt_addr":1048576,"size":65536,"offset":0,"page_size":4096,"page_size_kib":4096}]`
	for i, tc := range []struct {
		msg    string
		fd     int
		reason string
	}{
		{good, -1, "fd"},
		{`{"not":"an array"}`, ufd, "json"},
		{`hello`, ufd, "json"},
		{`[]`, ufd, "json"},
		{`[{"base_host_virt_addr":1048576,"size":65536}]`, ufd, "json"},
		{`[{"base_host_virt_addr":1048576,"size":65536,"offset":1.5}]`, ufd, "json"},
		{strings.Replace(good, `"size":65536`, `"size":2097152`, 1), ufd, "region"},
		{strings.Replace(good, `"base_host_virt_addr":1048576`, `"base_host_virt_addr":1048577`, 1), ufd, "region"},
		{strings.Replace(good, `"page_size_kib":4096`, `"page_size_kib":8192`, 1), ufd, "page_size"},
		{good + `x`, ufd, "trailing"},
	} {
		send(tc.msg, tc.fd)
		h.waitLog(t, regexp.MustCompile(fmt.Sprintf(`connection %d rejected reason=%s: `, i+1, tc.reason)))
	}
	// A pipe is not a userfaultfd.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	send(good, p[0])
	unix.Close(p[0])
	unix.Close(p[1])
	h.waitLog(t, regexp.MustCompile(`connection 11 rejected reason=fd: not a userfaultfd`))
	// Still serving.
	cmd, out := h.vm(t, fctest.Config{Regions: []fctest.Region{{Size: 1 << 20}}, Touch: []string{"seq"}, Verify: true})
	if _, err := fctest.Wait(cmd, out); err != nil {
		t.Fatal(err)
	}
}
