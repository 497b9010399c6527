//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/gouffd/uffd/internal/testutil"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

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
	Reader          string  `json:"reader"`
	SpinReads       int     `json:"spin_reads"`
	Read            bool    `json:"read"`
	Random          bool    `json:"random"`
	Runs            int     `json:"runs"`
	GOMAXPROCS      int     `json:"gomaxprocs"`
	PagerFaults     uint64  `json:"pager_faults"`
	PagerPages      uint64  `json:"pager_pages"`
	PagerPrefetched uint64  `json:"pager_prefetched"`
	PagerExists     uint64  `json:"pager_exists"`
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
	stdout, stderr, err := runBenchCmd(context.Background(), "--mib", "8", "--runs", "3", "--chunk", "65536", "--read", "--random", "--reader", "thread", "--json")
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
	want := benchJSON{Op: "copy", Chunk: 65536, Faulters: 1, Handlers: 1, MiB: 8, Faults: 128, Impl: "go", Prefetch: "fixed",
		Reader: "thread", Read: true, Random: true, Runs: 3, PagerFaults: 128, PagerPages: 2048, PagerPrefetched: 2048 - 128}
	got := j
	got.MedianNS, got.FaultsPerS, got.NSPerPage, got.GBPerS, got.TouchP50NS, got.TouchP99NS, got.RunsNS, got.GOMAXPROCS = 0, 0, 0, 0, 0, 0, nil, 0
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
	if lines := regexp.MustCompile(`(?m)^go  run [12]/2: .*touch p50 .* p99 `).FindAllString(stderr, -1); len(lines) != 2 {
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
		{[]string{"--mib", "0"}, "--mib 0: want 1 to 1048576"},
		{[]string{"--mib", "-3"}, "--mib -3: want 1 to 1048576"},
		{[]string{"--faulters", "0"}, "--faulters 0"},
		{[]string{"--faulters", "65"}, "--faulters 65: want 1 to 64"},
		{[]string{"--workers", "0"}, "--workers 0"},
		{[]string{"--runs", "0"}, "--runs 0"},
		{[]string{"--runs", "100"}, "--runs 100"},
		{[]string{"--op", "move"}, `--op move: want copy or zero`},
		{[]string{"--reader", "epoll"}, `--reader epoll: want poller or thread`},
		{[]string{"--prefetch", "greedy"}, `--prefetch greedy: want fixed or adaptive`},
		{[]string{"--prefetch", "adaptive", "--chunk", "65536"}, "with --prefetch adaptive"},
		{[]string{"--ref-chunk", "65536"}, "--ref-chunk without --ref"},
		{[]string{"--ref", exe, "--ref-chunk", "12288"}, "ref chunk 12288: want a power of two"},
		{[]string{"--ref", exe, "--chunk", "12288"}, "ref chunk 12288"},
		{[]string{"--ref", exe, "--ref-chunk", "0"}, "--ref-chunk 0: want 4KiB to 1GiB"},
		{[]string{"--ref", filepath.Join(t.TempDir(), "none")}, "no such file"},
		{[]string{"--mib", "x"}, "--mib x: not a number"},
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{"8"}, `unexpected argument "8"`},
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

func TestBenchHelp(t *testing.T) {
	stdout, _, err := runBenchCmd(context.Background(), "-h")
	if err == nil || !strings.Contains(stdout, "--faulters") || !strings.Contains(stdout, "--ref-chunk") {
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

// TestBenchRef compares with the real ref_handler, built from the project's
// shared C source when a C compiler is at hand.
func TestBenchRef(t *testing.T) {
	src, err := filepath.Abs("../../../shared/bench/ref_handler.c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); err != nil {
		testutil.Skipf(t, "no ref_handler source: %v", err)
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		testutil.Skipf(t, "no C compiler: %v", err)
	}
	exe := filepath.Join(t.TempDir(), "ref_handler")
	if out, err := exec.Command(cc, "-O2", "-pthread", "-o", exe, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	stdout, stderr, err := runBenchCmd(context.Background(), "--mib", "8", "--runs", "2", "--faulters", "2", "--read", "--ref", exe, "--json")
	if err != nil {
		t.Fatalf("bench --ref: %v\n%s", err, stderr)
	}
	var j map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &j); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	if len(j) != 3 || j["go"] == nil || j["ref"] == nil || j["ratio"] == nil {
		t.Fatalf(`want keys "go", "ref", "ratio":\n%s`, stdout)
	}
	for _, impl := range []string{"go", "ref"} {
		if !refFields.Match(j[impl]) {
			t.Errorf("%q lacks ref_handler's fields: %s", impl, j[impl])
		}
	}
	checkFigures(t, decodeBench(t, j["go"]))
	var ref benchJSON
	if err := json.Unmarshal(j["ref"], &ref); err != nil || ref.Impl != "" || ref.Faulters != 2 || ref.MiB != 8 {
		t.Errorf(`"ref" = %s (%v), want ref_handler's own line`, j["ref"], err)
	}
	checkFigures(t, ref)
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
