//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gouffd/uffd/internal/miniotest"
	"github.com/gouffd/uffd/pager"
)

// envMain makes a test binary started by the tests run the command's main
// instead of the tests: `uffd bench firecracker` starts `uffd firecracker`
// as its program (os.Executable) with arguments.
const envMain = "UFFD_TEST_MAIN"

// A test binary started as a child of the benchmark (a faulting process,
// a test VM), or as the command, runs that instead of the tests.
func init() {
	if os.Getenv(envMain) != "" {
		main()
		os.Exit(0)
	}
	if code, ok := benchChild(); ok {
		os.Exit(code)
	}
}

// runBenchCmd runs `uffd bench args...` in-process.
func runBenchCmd(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = runBench(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// refFields matches ref_handler's output format: its fields in its order
// with its number formats.
var refFields = regexp.MustCompile(`^\{"op":"(copy|zero)","chunk":\d+,"faulters":\d+,"handlers":\d+,"mib":\d+,"median_ns":\d+,` +
	`"faults":\d+,"faults_per_s":\d+,"ns_per_page":\d+\.\d,"gb_per_s":\d+\.\d{3},"touch_p50_ns":\d+,"touch_p99_ns":\d+[,}]`)

// benchJSON is the Go result's JSON, spelled out so that a renamed field
// fails the test.
type benchJSON struct {
	Op              string  `json:"op"`
	Chunk           int     `json:"chunk"`
	Faulters        int     `json:"faulters"`
	Handlers        int     `json:"handlers"`
	MiB             int     `json:"mib"`
	MedianNS        int64   `json:"median_ns"`
	Faults          float64 `json:"faults"`
	FaultsPerS      float64 `json:"faults_per_s"`
	NSPerPage       float64 `json:"ns_per_page"`
	GBPerS          float64 `json:"gb_per_s"`
	TouchP50NS      int64   `json:"touch_p50_ns"`
	TouchP99NS      int64   `json:"touch_p99_ns"`
	Impl            string  `json:"impl"`
	Prefetch        string  `json:"prefetch"`
	Engine          string  `json:"engine"`
	FaultersIn      string  `json:"faulters_in"`
	Read            bool    `json:"read"`
	Random          bool    `json:"random"`
	Runs            int     `json:"runs"`
	GOMAXPROCS      int     `json:"gomaxprocs"`
	PagerFaults     uint64  `json:"pager_faults"`
	PagerPages      uint64  `json:"pager_pages"`
	PagerPrefetched uint64  `json:"pager_prefetched"`
	PagerExists     uint64  `json:"pager_exists"`
	CPUNS           int64   `json:"cpu_ns"`
	RunsNS          []int64 `json:"runs_ns"`
}

func decodeBench(t *testing.T, b []byte) benchJSON {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j benchJSON
	if err := dec.Decode(&j); err != nil {
		t.Fatalf("decode: %v\n%s", err, b)
	}
	return j
}

// checkFigures checks that the derived figures agree with median_ns as
// ref_handler computes them, within the printed precision.
func checkFigures(t *testing.T, j benchJSON) {
	t.Helper()
	// The faults were served by threads of this process: it used CPU
	// while they ran.
	if j.CPUNS <= 0 {
		t.Errorf("cpu_ns %d, want the CPU time used while the faulters ran", j.CPUNS)
	}
	region := float64(j.MiB << 20)
	secs := float64(j.MedianNS) / 1e9
	for _, c := range []struct {
		name      string
		got, want float64
		tol       float64
	}{
		{"faults", j.Faults, region / float64(j.Chunk), 0.5},
		{"faults_per_s", j.FaultsPerS, region / float64(j.Chunk) / secs, 0.5},
		{"ns_per_page", j.NSPerPage, float64(j.MedianNS) / (region / 4096), 0.05},
		{"gb_per_s", j.GBPerS, region / float64(j.MedianNS), 0.0005},
	} {
		if math.Abs(c.got-c.want) > c.tol {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if j.TouchP50NS <= 0 || j.TouchP50NS > j.TouchP99NS || j.TouchP99NS > j.MedianNS {
		t.Errorf("touch p50 %d p99 %d, run %d ns", j.TouchP50NS, j.TouchP99NS, j.MedianNS)
	}
}

func TestBenchJSON(t *testing.T) {
	stdout, stderr, err := runBenchCmd(context.Background(), "--mib", "8", "--runs", "3", "--chunk", "65536", "--read", "--random", "--engine", "shared", "--json")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr with --json: %q", stderr)
	}
	if !refFields.MatchString(stdout) || strings.Count(stdout, "\n") != 1 {
		t.Errorf("output is not one line with ref_handler's fields first:\n%s", stdout)
	}
	j := decodeBench(t, []byte(stdout))
	checkFigures(t, j)
	cpus, _ := pager.AllowedCPUs()
	want := benchJSON{Op: "copy", Chunk: 65536, Faulters: 1, Handlers: len(cpus), MiB: 8, Faults: 128, Impl: "go", Prefetch: "fixed",
		Engine: "shared engine", FaultersIn: "process", Read: true, Random: true, Runs: 3, PagerFaults: 128, PagerPages: 2048, PagerPrefetched: 2048 - 128}
	got := j
	got.MedianNS, got.FaultsPerS, got.NSPerPage, got.GBPerS, got.TouchP50NS, got.TouchP99NS, got.RunsNS, got.GOMAXPROCS, got.CPUNS = 0, 0, 0, 0, 0, 0, nil, 0, 0
	// A fault whose wait a signal (Go's preemption) interrupted is sent
	// again: a few more messages, answered as pages that exist.
	if extra := got.PagerFaults - 128; got.PagerFaults >= 128 && extra <= 2 && got.PagerExists <= extra {
		got.PagerFaults, got.PagerExists = 128, 0
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if len(j.RunsNS) != 3 || !slices.Contains(j.RunsNS, j.MedianNS) {
		t.Errorf("runs_ns %v does not hold 3 runs with the median %d", j.RunsNS, j.MedianNS)
	}
}

func TestBenchText(t *testing.T) {
	stdout, stderr, err := runBenchCmd(context.Background(), "--mib", "8", "--runs", "2", "--prefetch", "adaptive", "--op", "zero")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	// Progress: one line per run.
	if lines := regexp.MustCompile(`(?m)^go +run [12]/2: .*touch p50 .* p99 `).FindAllString(stderr, -1); len(lines) != 2 {
		t.Errorf("stderr has %d progress lines, want 2:\n%s", len(lines), stderr)
	}
	for _, want := range []string{"zero, 8 MiB, adaptive prefetch", "faults_per_s", "touch_p50_ns", "pager_faults"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
}

func TestBenchBadArgs(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "ref")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--chunk", "5000"}, "--chunk 5000: want 4KiB to 1GiB, a multiple of 4KiB"},
		{[]string{"--chunk", "0"}, "--chunk 0"},
		{[]string{"--mib", "0"}, "--mib 0"},
		{[]string{"--mib", "-3"}, "--mib -3"},
		{[]string{"--faulters", "0"}, "--faulters 0"},
		{[]string{"--faulters", "65"}, "--faulters 65: want 1 to 64"},
		{[]string{"--faulters-in", "thread"}, "--faulters-in thread: want process or child"},
		{[]string{"--cpus", "0-x"}, "--cpus"},
		{[]string{"--cpus", "4095"}, "--cpus"},
		{[]string{"--runs", "0"}, "--runs 0"},
		{[]string{"--runs", "100"}, "--runs 100"},
		{[]string{"--op", "move"}, "--op move: want copy or zero"},
		{[]string{"--engine", "isolated"}, "--engine isolated: want own or shared"},
		{[]string{"--prefetch", "greedy"}, "--prefetch greedy: want fixed or adaptive"},
		{[]string{"--prefetch", "adaptive", "--chunk", "65536"}, "with --prefetch adaptive"},
		{[]string{"--ref-chunk", "65536"}, "--ref-chunk without --ref"},
		{[]string{"--ref-mode", "naive"}, "--ref-mode without --ref"},
		{[]string{"--limit"}, "--limit without --ref"},
		{[]string{"--ref", "--ref-mode", "fast"}, "--ref-mode fast: want pinned or naive"},
		{[]string{"--ref", "--ref-chunk", "5000"}, "--ref-chunk 5000: want 4KiB to 1GiB, a multiple of 4KiB"},
		{[]string{"--ref", "--ref-program", exe, "--ref-chunk", "12288"}, "ref chunk 12288: want a power of two"},
		{[]string{"--ref", "--ref-program=" + exe, "--chunk", "12288"}, "ref chunk 12288"},
		{[]string{"--ref", "--ref-program", exe, "--limit"}, "--limit with --ref-program"},
		{[]string{"--ref-program", exe}, "--ref-program without --ref"},
		{[]string{"--ref", "--ref-chunk", "0"}, "--ref-chunk 0"},
		{[]string{"--ref=x"}, `invalid boolean value "x" for -ref`},
		{[]string{"--ref", "--ref-program", filepath.Join(t.TempDir(), "none")}, "no such file"},
		{[]string{"--targets", "fast"}, `--targets "fast": want all or some of 4k-1,`},
		{[]string{"--targets", "all", "--mib", "8"}, "--mib with --targets"},
		{[]string{"--targets", "4k-1", "--faulters-in", "child"}, "--faulters-in with --targets"},
		{[]string{"--targets", "all", "--runs", "0"}, "--runs 0"},
		{[]string{"--mib", "x"}, "--mib x: not a number; want 1 to 1048576"},
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{"8"}, `unexpected argument "8"`},
		{[]string{"firecracker", "--vms", "0"}, "--vms 0: want a list of VM counts, each at least 1"},
		{[]string{"firecracker", "--vms", "1,x"}, "--vms 1,x: want a list of VM counts"},
		{[]string{"firecracker", "--vms", "65"}, "--vms 65: want 1 to 64"},
		{[]string{"firecracker", "--order", "seq,up"}, `--order "up": want seq or random`},
		{[]string{"firecracker", "--mib", "0"}, "--mib 0"},
		{[]string{"firecracker", "--mib", "5000"}, "--mib 5000: want 1 to 4096"},
		{[]string{"firecracker", "--runs", "100"}, "--runs 100"},
		{[]string{"firecracker", "--handler", filepath.Join(t.TempDir(), "none")}, "--handler"},
		{[]string{"firecracker", "extra"}, `unexpected argument "extra"`},
		{[]string{"remote", "--mib", "0"}, "--mib 0: want 1 to 16384"},
		{[]string{"remote", "--cases", "seq,fast"}, `--cases "fast": want some of seq,random,replay,shared`},
		{[]string{"remote", "--prefetch", "fixed"}, `--prefetch "fixed": want none or adaptive`},
		{[]string{"remote", "--rtt", "0,fast"}, "--rtt 0,fast: want a list of durations"},
		{[]string{"remote", "--rtt", "20s"}, "an RTT of 20s: want 0 to 10s"},
		{[]string{"remote", "--server", "ftp"}, "--server ftp: want s3 or http"},
		{[]string{"remote", "--chunk-size", "12KiB"}, "--chunk-size 12288: want a power of two"},
		{[]string{"remote", "--mib", "2", "--chunk-size", "4MiB"}, "larger than the 2 MiB image"},
		{[]string{"remote", "--bandwidth", "1KiB"}, "--bandwidth 1KiB: want 1MiB to 1TiB"},
		{[]string{"remote", "--random-rtt", "x"}, "--random-rtt x: not a duration"},
		{[]string{"remote", "--shared-vms", "0"}, "--shared-vms 0"},
		{[]string{"remote", "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"remote", "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			stdout, _, err := runBenchCmd(context.Background(), tc.args...)
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a usage error containing %q", err, tc.want)
			}
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
		})
	}
}

// TestBenchNoCompiler: --ref with no C compiler says which compiler is
// missing and what to do.
func TestBenchNoCompiler(t *testing.T) {
	t.Setenv("CC", "no-such-cc")
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	_, _, err := runBenchCmd(context.Background(), "--mib", "8", "--runs", "1", "--ref")
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "no C compiler") ||
		!strings.Contains(err.Error(), "no-such-cc") || !strings.Contains(err.Error(), "--ref-program PATH") {
		t.Errorf("err = %v", err)
	}
}

func TestBenchHelp(t *testing.T) {
	stdout, _, err := runBenchCmd(context.Background(), "-h")
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stdout, "--faulters-in") || !strings.Contains(stdout, "--ref-mode") || !strings.Contains(stdout, "--targets") ||
		!strings.Contains(stdout, "uffd bench firecracker") || !strings.Contains(stdout, "uffd bench remote") {
		t.Errorf("bench -h: err %v, stdout:\n%s", err, stdout)
	}
}

// A cancelled context (SIGINT) stops the benchmark with the context's
// error, which run does not report.
func TestBenchCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := runBenchCmd(ctx, "--mib", "8")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestBenchRef compares with the repository's C reference, built on
// demand, with the faulters in this process and in another.
func TestBenchRef(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	for _, args := range [][]string{
		{"--mib", "8", "--runs", "2", "--faulters", "2", "--read", "--ref", "--json"},
		{"--mib", "8", "--runs", "2", "--faulters-in", "child", "--random", "--ref", "--ref-mode", "naive", "--json"},
	} {
		stdout, stderr, err := runBenchCmd(context.Background(), args...)
		if err != nil {
			t.Fatalf("bench %v: %v\n%s", args, err, stderr)
		}
		var j map[string]json.RawMessage
		if err := json.Unmarshal([]byte(stdout), &j); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		child := slices.Contains(args, "child")
		if j["go"] == nil || j["ref"] == nil || j["ratio"] == nil || j["limits"] == nil {
			t.Fatalf(`want keys "go", "ref", "ratio", "limits":\n%s`, stdout)
		}
		for _, impl := range []string{"go", "ref"} {
			if !refFields.Match(j[impl]) {
				t.Errorf("%q lacks ref_handler's fields: %s", impl, j[impl])
			}
		}
		g := decodeBench(t, j["go"])
		checkFigures(t, g)
		var ref struct {
			benchJSON
			Pinned       bool   `json:"pinned"`
			CrossProcess bool   `json:"cross_process"`
			Measure      string `json:"measure"`
		}
		if err := json.Unmarshal(j["ref"], &ref); err != nil || ref.Impl != "c" || ref.MiB != 8 || ref.CrossProcess != child || ref.Pinned == child || ref.Measure != "uffd" {
			t.Errorf(`"ref" = %s (%v), want the C reference's own line`, j["ref"], err)
		}
		checkFigures(t, ref.benchJSON)
		if (g.FaultersIn == "child") != child {
			t.Errorf("go ran with faulters_in %q", g.FaultersIn)
		}
		var ratio struct {
			FaultsPerS float64 `json:"faults_per_s"`
			GBPerS     float64 `json:"gb_per_s"`
			TouchP50   float64 `json:"touch_p50_ns"`
			Pairs      []any   `json:"pairs"`
		}
		if err := json.Unmarshal(j["ratio"], &ratio); err != nil || len(ratio.Pairs) != 2 || ratio.FaultsPerS <= 0 || math.Abs(ratio.FaultsPerS-ratio.GBPerS) > 0.001 || ratio.TouchP50 <= 0 {
			t.Errorf(`"ratio" = %s (%v)`, j["ratio"], err)
		}
	}
}

// TestBenchTargets runs one target, briefly, and checks its row.
func TestBenchTargets(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	stdout, stderr, err := runBenchCmd(context.Background(), "--targets", "4k-1,child-4k-random", "--runs", "1")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, re := range []string{`(?m)^target +go +C +ratio +want +met`, `(?m)^4k-1 +\d+ faults/s +\d+ +\d+\.\d{3} +>= 0\.95 +(yes|no) +4 KiB per fault, 1 faulter`,
		`(?m)^child-4k-random +\d+ faults/s +\d+ +\d+\.\d{3} +>= 0\.95 +(yes|no) +faulters in another process`} {
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("output lacks %s:\n%s", re, stdout)
		}
	}
}

// TestBenchFirecracker runs the Firecracker comparison briefly: the
// daemon (this test binary as the command) and the C handler, each under
// one and two test VMs.
func TestBenchFirecracker(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv(envMain, "1")
	stdout, stderr, err := runBenchCmd(context.Background(), "firecracker", "--mib", "8", "--vms", "1,2", "--runs", "1", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var rep struct {
		MiB    int      `json:"mib"`
		Pages  int      `json:"pages_per_vm"`
		Daemon []string `json:"daemon"`
		Cases  []struct {
			VMs   int    `json:"vms"`
			Order string `json:"order"`
			Go, C struct {
				Runs []struct {
					PassNS []int64 `json:"pass_ns"`
				} `json:"runs"`
				NSPerPage float64 `json:"ns_per_page"`
				PagesPerS float64 `json:"pages_per_s"`
			}
			PerPage    float64 `json:"per_page_ratio"`
			Throughput float64 `json:"throughput_ratio"`
		} `json:"cases"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if rep.MiB != 8 || rep.Pages != 2048 || len(rep.Cases) != 4 || !slices.Contains(rep.Daemon, "none") {
		t.Fatalf("report %s", stdout)
	}
	for i, c := range rep.Cases {
		if want := []int{1, 1, 2, 2}[i]; c.VMs != want || c.Order != []string{"seq", "random"}[i%2] {
			t.Errorf("case %d: %d VMs %s", i, c.VMs, c.Order)
		}
		for _, side := range [][]struct {
			PassNS []int64 `json:"pass_ns"`
		}{c.Go.Runs, c.C.Runs} {
			if len(side) != 1 || len(side[0].PassNS) != c.VMs {
				t.Errorf("case %d: runs %v, want one of %d VMs", i, side, c.VMs)
			}
		}
		if c.Go.NSPerPage <= 0 || c.C.NSPerPage <= 0 || c.PerPage <= 0 || c.Throughput <= 0 {
			t.Errorf("case %d: %+v", i, c)
		}
	}
}

// TestBenchRemote runs the remote images' benchmark briefly, every case,
// against an HTTP FileServer and against MinIO (when installed): the
// daemon is this test binary as the command.
func TestBenchRemote(t *testing.T) {
	t.Setenv(envMain, "1")
	for _, server := range []string{"http", "s3"} {
		t.Run(server, func(t *testing.T) {
			if _, err := miniotest.Find(); server == "s3" && err != nil {
				if os.Getenv("CI") != "" {
					t.Fatal(err)
				}
				t.Skip(err)
			}
			stdout, stderr, err := runBenchCmd(context.Background(), "remote", "--server", server, "--mib", "16", "--chunk-size", "1MiB",
				"--runs", "1", "--rtt", "0,1ms", "--random-rtt", "1ms", "--replay-rtt", "1ms", "--shared-rtt", "0", "--serial", "5", "--json")
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			var rep struct {
				MiB     int `json:"mib"`
				Targets []struct {
					Name    string  `json:"target"`
					Value   float64 `json:"value"`
					Ref     float64 `json:"reference"`
					Ratio   float64 `json:"ratio"`
					Control float64 `json:"control"`
				} `json:"targets"`
				Runs []struct {
					Case      string `json:"case"`
					PassNS    int64  `json:"pass_ns"`
					BytesDown int64  `json:"bytes_down"`
				} `json:"runs_detail"`
			}
			if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("%v\n%s", err, stdout)
			}
			var names []string
			for _, tg := range rep.Targets {
				names = append(names, tg.Name)
				// The handler's part of the first fault is a difference:
				// noise may make it negative.
				positive := tg.Value > 0 && tg.Ratio > 0 || strings.HasPrefix(tg.Name, "first-fault-handler/")
				if !positive || tg.Ref <= 0 || math.IsInf(tg.Ratio, 0) || math.IsNaN(tg.Ratio) {
					t.Errorf("target %+v", tg)
				}
			}
			want := []string{"first-fault/rtt=0s", "first-fault-handler/rtt=0s", "first-fault/rtt=1ms", "first-fault-handler/rtt=1ms",
				"seq/none/rtt=0s", "seq/adaptive/rtt=0s", "seq/none/rtt=1ms", "seq/adaptive/rtt=1ms",
				"random/none/rtt=1ms", "random/adaptive/rtt=1ms", "replay/rtt=1ms", "shared/vms=3/rtt=0s"}
			if rep.MiB != 16 || !slices.Equal(names, want) {
				t.Fatalf("targets %q, want %q", names, want)
			}
			for _, r := range rep.Runs {
				if r.PassNS <= 0 || r.Case != "local" && r.BytesDown <= 0 {
					t.Errorf("run %+v", r)
				}
			}
		})
	}
}
