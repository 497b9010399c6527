//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/pager"
)

// TestMain runs the tests, or, in a process the tests started (a faulting
// process, a test VM), that child.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	code := testutil.Main(m)
	if testCache != "" {
		os.RemoveAll(testCache)
	}
	os.Exit(code)
}

// TestPermutation pins ref_handler's page order: the values were printed
// by its shuffle loop, compiled from ref_handler.c, for 16 pages.
func TestPermutation(t *testing.T) {
	for _, tc := range []struct {
		faulters int
		want     []int
	}{
		{1, []int{6, 2, 4, 5, 14, 1, 10, 12, 3, 7, 15, 8, 11, 0, 9, 13}},
		{3, []int{1, 3, 0, 2, 4, 7, 5, 9, 6, 8, 10, 13, 14, 15, 12, 11}},
	} {
		if got := permutation(16, tc.faulters); !slices.Equal(got, tc.want) {
			t.Errorf("permutation(16, %d) = %v, want %v", tc.faulters, got, tc.want)
		}
	}
	// Each faulter's slice is a permutation of itself.
	const pages, faulters = 1000, 7
	order := permutation(pages, faulters)
	for f := range faulters {
		lo, hi := pages*f/faulters, pages*(f+1)/faulters
		s := slices.Sorted(slices.Values(order[lo:hi]))
		for i, p := range s {
			if p != lo+i {
				t.Fatalf("faulter %d's slice [%d, %d) holds page %d at sorted position %d", f, lo, hi, p, i)
			}
		}
	}
}

func TestVerify(t *testing.T) {
	const pages = 4
	fill := func(want byte, written bool) []byte {
		b := bytes.Repeat([]byte{want}, pages*PageSize)
		if written {
			for off := 0; off < len(b); off += PageSize {
				b[off] = TouchByte
			}
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		want    byte
		written bool
		change  int // offset to alter, or -1
		errAt   int // offset reported, or -1
	}{
		{"copy written", ImageByte, true, -1, -1},
		{"copy read", ImageByte, false, -1, -1},
		{"zero written", 0, true, -1, -1},
		{"bad source byte", ImageByte, true, 2*PageSize + 7, 2*PageSize + 7},
		{"bad zero byte", 0, false, 3*PageSize + 7, 3*PageSize + 7},
		{"store lost", ImageByte, true, PageSize, PageSize},
		{"first byte read", ImageByte, false, 2 * PageSize, 2 * PageSize},
		{"second byte", ImageByte, true, PageSize + 1, PageSize + 1},
		{"last byte", 0, true, pages*PageSize - 1, pages*PageSize - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fill(tc.want, tc.written)
			if tc.change >= 0 {
				b[tc.change] ^= 0xff
			}
			err := verify(b, tc.want, tc.written)
			var ve *VerifyError
			switch {
			case tc.errAt < 0 && err != nil:
				t.Fatalf("verify: %v", err)
			case tc.errAt < 0:
			case !errors.As(err, &ve):
				t.Fatalf("verify = %v, want a *VerifyError", err)
			case ve.Offset != tc.errAt || ve.Got != b[tc.errAt] || ve.Touch:
				t.Fatalf("verify = %+v, want offset %d holding %#x", ve, tc.errAt, b[tc.errAt])
			}
		})
	}
}

// small is a quick configuration: 8 MiB, one run.
func small(c Config) Config {
	c.MiB, c.Runs = 8, 1
	return c
}

// TestRun runs the workload for real in its main variants and checks what
// the pager did against what the configuration asks.
func TestRun(t *testing.T) {
	const pages = 8 << 20 / 4096
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"copy", Config{}},
		{"zero read random", Config{Op: OpZero, ReadTouch: true, Random: true}},
		{"events", Config{Engine: Engine{Events: true}, Random: true}},
		{"shared engine", Config{Engine: Engine{Shared: true}, Random: true}},
		{"one CPU", Config{Engine: Engine{CPUs: []int{firstCPU()}}}},
		{"64KiB 2 faulters read", Config{Chunk: 64 << 10, Faulters: 2, ReadTouch: true}},
		{"adaptive", Config{Adaptive: true}},
		{"adaptive random", Config{Adaptive: true, Random: true, ReadTouch: true}},
		{"child events", Config{FaultersIn: Child, Engine: Engine{Events: true, Shared: true}}},
		{"child", Config{FaultersIn: Child}},
		{"child zero read random 2 faulters", Config{FaultersIn: Child, Op: OpZero, ReadTouch: true, Random: true, Faulters: 2}},
		{"child 64KiB", Config{FaultersIn: Child, Chunk: 64 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			procs := runtime.GOMAXPROCS(0)
			r, err := Run(context.Background(), small(tc.cfg), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := runtime.GOMAXPROCS(0); got != procs {
				t.Errorf("GOMAXPROCS %d after the run, was %d", got, procs)
			}
			want := max(procs, r.Faulters+1)
			if tc.cfg.FaultersIn == Child {
				want = procs
			}
			if r.GOMAXPROCS != want {
				t.Errorf("GOMAXPROCS during the run %d, want %d", r.GOMAXPROCS, want)
			}
			st := r.Median.Stats
			if st.Pages != pages {
				t.Errorf("pager installed %d pages, want %d", st.Pages, pages)
			}
			switch {
			case !tc.cfg.Adaptive:
				// One fault per chunk, as ref_handler counts them. The pager
				// may read a few more messages: a fault interrupted by a
				// signal (Go's preemption) is reported again.
				want := float64(8<<20) / float64(r.Chunk)
				if r.Faults() != want || st.Faults < uint64(want) || st.Faults > uint64(want)*5/4 {
					t.Errorf("%v faults (pager: %d messages), want %v", r.Faults(), st.Faults, want)
				}
			case tc.cfg.Random:
				if st.Faults < pages/2 {
					t.Errorf("adaptive prefetch on random access: %d faults for %d pages, want mostly single pages", st.Faults, pages)
				}
			default:
				if st.Faults > pages/16 {
					t.Errorf("adaptive prefetch on a sequential scan: %d faults for %d pages", st.Faults, pages)
				}
			}
			if tc.cfg.Op == OpZero && st.Zeroed != pages {
				t.Errorf("%d pages zeroed, want %d", st.Zeroed, pages)
			}
			if s := r.Median; s.Elapsed <= 0 || s.P50 <= 0 || s.P50 > s.P99 || s.P99 > s.Elapsed {
				t.Errorf("elapsed %v, p50 %v, p99 %v", s.Elapsed, s.P50, s.P99)
			}
		})
	}
}

// TestCorruptSource checks that a wrong byte served is caught: by the
// verification after a write-touch run, by the faulter on a read-touch.
func TestCorruptSource(t *testing.T) {
	const bad = 1000
	for _, tc := range []struct {
		read bool
		in   Placement
	}{{false, InProcess}, {true, InProcess}, {false, Child}, {true, Child}} {
		read := tc.read
		t.Run(fmt.Sprintf("read=%t/%v", read, tc.in), func(t *testing.T) {
			cfg := small(Config{ReadTouch: read, Random: true, FaultersIn: tc.in, corrupt: []int{bad}})
			_, err := Run(context.Background(), cfg, nil)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Run = %v, want a *VerifyError", err)
			}
			want := VerifyError{Offset: bad*PageSize + corruptOffset, Got: ^byte(ImageByte), Want: ImageByte}
			if read {
				want.Offset, want.Touch = bad*PageSize, true
			}
			if *ve != want {
				t.Errorf("error %+v, want %+v", *ve, want)
			}
			if !strings.Contains(err.Error(), "go run 1 of 1") {
				t.Errorf("error %q does not name the run", err)
			}
		})
	}
}

// TestCancel checks that a run whose context ends stops with the context's
// error, its faulters released (in this process or in a child).
func TestCancel(t *testing.T) {
	for _, in := range []Placement{InProcess, Child} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		_, err := Run(ctx, Config{MiB: 8, Runs: 1, FaultersIn: in}, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%v: Run = %v, want context.Canceled", in, err)
		}
		t.Logf("%v: returned after %v", in, time.Since(start))
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{MiB: -1}, "--mib -1"},
		{Config{MiB: MaxMiB + 1}, "--mib"},
		{Config{Chunk: 5000}, "--chunk 5000: want a positive multiple of the page size"},
		{Config{Chunk: -4096}, "--chunk -4096"},
		{Config{MiB: 1, Chunk: 2 << 20}, "larger than the 1 MiB region"},
		{Config{Adaptive: true, Chunk: 65536}, "--chunk 65536 with --prefetch adaptive"},
		{Config{Faulters: 65}, "--faulters 65: want 1 to 64"},
		{Config{Faulters: -1}, "--faulters -1"},
		{Config{MiB: 1, Faulters: 64, Chunk: 4096}, ""},
		{Config{Engine: Engine{CPUs: []int{4096}}}, "--cpus"},
		{Config{FaultersIn: 3}, "faulters-in Placement(3)"},
		{Config{Runs: 100}, "--runs 100: want 1 to 99"},
		{Config{Op: 7}, "op Op(7)"},
		{Config{GOMAXPROCS: -2}, "--gomaxprocs -2"},
		{Config{}, ""},
		{Config{Adaptive: true}, ""},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one containing %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := New(Config{Chunk: 4097}); err == nil {
		t.Error("New accepted a chunk of 4097 bytes")
	}
}

func TestParse(t *testing.T) {
	for _, o := range []Op{OpCopy, OpZero} {
		if got, err := ParseOp(o.String()); got != o || err != nil {
			t.Errorf("ParseOp(%q) = %v, %v", o, got, err)
		}
	}
	for _, k := range []string{"own", "shared"} {
		if got, err := ParseEngine(k); err != nil || got != (k == "shared") {
			t.Errorf("ParseEngine(%q) = %v, %v", k, got, err)
		}
	}
	if _, err := ParseOp("move"); err == nil {
		t.Error("ParseOp(move) succeeded")
	}
	if _, err := ParseEngine("isolated"); err == nil {
		t.Error("ParseEngine(isolated) succeeded")
	}
	for _, p := range []Placement{InProcess, Child} {
		if got, err := ParsePlacement(p.String()); got != p || err != nil {
			t.Errorf("ParsePlacement(%q) = %v, %v", p, got, err)
		}
	}
	for _, m := range []RefMode{RefPinned, RefNaive} {
		if got, err := ParseRefMode(m.String()); got != m || err != nil {
			t.Errorf("ParseRefMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParsePlacement("thread"); err == nil {
		t.Error("ParsePlacement(thread) succeeded")
	}
	if _, err := ParseRefMode("fast"); err == nil {
		t.Error("ParseRefMode(fast) succeeded")
	}
}

func TestRefArgs(t *testing.T) {
	n := strconv.Itoa(AllowedCPUs())
	for _, tc := range []struct {
		ref     Ref
		cfg     Config
		measure string
		want    string
	}{
		{Ref{}, Config{}, measureFaults, "-s 256 -c 4096 -f 1 -n " + n + " -o copy -r 1 -p"},
		{Ref{Mode: RefNaive}, Config{}, measureFaults, "-s 256 -c 4096 -f 1 -n 1 -o copy -r 1"},
		{Ref{Mode: RefNaive}, Config{MiB: 8, Chunk: 65536, Faulters: 2, Engine: Engine{Shared: true}, Op: OpZero, ReadTouch: true, Random: true, Runs: 7},
			measureFaults, "-s 8 -c 65536 -f 2 -n 1 -o zero -r 1 -R -x"},
		{Ref{}, Config{Adaptive: true}, measureFaults, "-s 256 -c 4096 -f 1 -n " + n + " -o copy -r 1 -p"},
		{Ref{Chunk: 2 << 20}, Config{Adaptive: true}, measureFaults, "-s 256 -c 2097152 -f 1 -n " + n + " -o copy -r 1 -p"},
		{Ref{}, Config{FaultersIn: Child, Random: true}, measureFaults, "-s 256 -c 4096 -f 1 -n " + n + " -o copy -r 1 -x -p -X"},
		{Ref{Mode: RefNaive}, Config{FaultersIn: Child}, measureFaults, "-s 256 -c 4096 -f 1 -n 1 -o copy -r 1 -X"},
		{Ref{Chunk: 2 << 20}, Config{FaultersIn: Child}, measureTouch, "-s 256 -c 4096 -f 1 -n " + n + " -o copy -r 1 -m touch"},
		{Ref{Mode: RefNaive, Chunk: 2 << 20}, Config{FaultersIn: Child}, measurePrefill, "-s 256 -c 2097152 -f 1 -n " + n + " -o copy -r 1 -p -m prefill"},
	} {
		if got := strings.Join(tc.ref.Args(tc.cfg, tc.measure), " "); got != tc.want {
			t.Errorf("%+v.Args(%+v, %s) = %q, want %q", tc.ref, tc.cfg, tc.measure, got, tc.want)
		}
	}
	exe := fakeRef(t, `{}`)
	for _, tc := range []struct {
		ref  Ref
		cfg  Config
		want string
	}{
		{Ref{Path: exe, Chunk: 12288}, Config{}, "ref chunk 12288: want a power of two"},
		{Ref{Path: exe}, Config{Chunk: 12288}, "ref chunk 12288"},
		{Ref{Path: exe, Limits: true}, Config{}, "--limit: needs the repository's reference"},
		{Ref{Chunk: 4 << 20}, Config{MiB: 2}, "larger than the region"},
		{Ref{Chunk: 5000}, Config{}, "ref chunk 5000: want a positive multiple of the page size"},
		{Ref{Mode: 5}, Config{}, "ref-mode RefMode(5)"},
		{Ref{Path: filepath.Join(t.TempDir(), "none")}, Config{}, "no such file"},
		{Ref{Path: t.TempDir()}, Config{}, "not an executable file"},
	} {
		if err := tc.ref.Validate(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v.Validate(%+v) = %v, want an error containing %q", tc.ref, tc.cfg, err, tc.want)
		}
	}
	// The repository's reference takes any multiple of the page size.
	if err := (Ref{Chunk: 12288, Limits: true}).Validate(Config{}); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// fakeRef writes a stand-in for ref_handler that prints out and appends
// its arguments to the file args in its directory.
func fakeRef(t *testing.T, out string) string {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, "ref_handler")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s/args\necho '%s'\n", dir, out)
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

const fakeLine = `{"op":"copy","chunk":4096,"faulters":1,"handlers":1,"mib":8,"median_ns":1000000000,"faults":2048,"faults_per_s":2048,"ns_per_page":488281.2,"gb_per_s":0.008,"touch_p50_ns":10000,"touch_p99_ns":20000}`

// TestCompare alternates with a stand-in for ref_handler whose figures are
// fixed, and checks the ratios against the Go runs' own figures.
func TestCompare(t *testing.T) {
	exe := fakeRef(t, fakeLine)
	var order []string
	c, err := Compare(context.Background(), Config{MiB: 8, Runs: 3}, Ref{Path: exe, Mode: RefNaive}, func(p Progress) {
		order = append(order, fmt.Sprintf("%s%d", p.Impl, p.Run))
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"go1", "ref1", "ref2", "go2", "go3", "ref3"}; !slices.Equal(order, want) {
		t.Errorf("runs in order %v, want %v", order, want)
	}
	args, err := os.ReadFile(filepath.Join(filepath.Dir(exe), "args"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Repeat("-s 8 -c 4096 -f 1 -n 1 -o copy -r 1\n", 3); string(args) != want {
		t.Errorf("ref_handler ran with\n%swant\n%s", args, want)
	}

	// The fake ran 1 s for 2048 faults, p50 10 us: the ratio of each pair
	// is the Go run's rate in faults per second / 2048.
	var fps, p50 []float64
	for _, s := range c.Go.Samples {
		fps = append(fps, 2048/s.Elapsed.Seconds()/2048)
		p50 = append(p50, float64(s.P50)/10000)
	}
	slices.Sort(fps)
	slices.Sort(p50)
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Abs(b) }
	if !near(c.Ratio.FaultsPerS, fps[1]) || !near(c.Ratio.GBPerS, fps[1]) || !near(c.Ratio.TouchP50, p50[1]) {
		t.Errorf("ratios %+v, want faults_per_s and gb_per_s %v, p50 %v", c.Ratio.PairRatio, fps[1], p50[1])
	}

	var out bytes.Buffer
	if err := c.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var j map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &j); err != nil {
		t.Fatalf("%v: %s", err, out.Bytes())
	}
	if string(j["ref"]) != fakeLine {
		t.Errorf(`"ref" = %s, want ref_handler's line %s`, j["ref"], fakeLine)
	}
	var g struct {
		Impl     string `json:"impl"`
		MedianNS int64  `json:"median_ns"`
	}
	var ratio struct {
		FaultsPerS float64           `json:"faults_per_s"`
		Pairs      []json.RawMessage `json:"pairs"`
	}
	if err := json.Unmarshal(j["go"], &g); err != nil || g.Impl != "go" || g.MedianNS != c.Go.Median.Elapsed.Nanoseconds() {
		t.Errorf(`"go" = %s (%v)`, j["go"], err)
	}
	if err := json.Unmarshal(j["ratio"], &ratio); err != nil || len(ratio.Pairs) != 3 || math.Abs(ratio.FaultsPerS-c.Ratio.FaultsPerS) > 0.001 {
		t.Errorf(`"ratio" = %s (%v)`, j["ratio"], err)
	}
	out.Reset()
	if err := c.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "faults_per_s") || !strings.Contains(out.String(), "go/ref") {
		t.Errorf("text output:\n%s", out.String())
	}
}

// TestCompareOtherChunk compares with ref_handler resolving another chunk
// size: faults of different sizes do not compare, bytes per second do.
func TestCompareOtherChunk(t *testing.T) {
	line := strings.Replace(fakeLine, `"chunk":4096`, `"chunk":65536`, 1)
	exe := fakeRef(t, line)
	c, err := Compare(context.Background(), Config{MiB: 8, Runs: 1, Adaptive: true}, Ref{Path: exe, Mode: RefNaive, Chunk: 65536}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(c.Ratio.FaultsPerS) {
		t.Errorf("faults_per_s ratio %v with 4 KiB against 64 KiB faults, want NaN", c.Ratio.FaultsPerS)
	}
	// The fake moved 8 MiB in 1 s.
	if want := float64(8<<20) / float64(c.Go.Median.Elapsed) / (float64(8<<20) / 1e9); math.Abs(c.Ratio.GBPerS-want) > 1e-9*want {
		t.Errorf("gb_per_s ratio %v, want %v", c.Ratio.GBPerS, want)
	}
	b, _ := c.MarshalJSON()
	if !json.Valid(b) || !strings.Contains(string(b), `"ratio":{"faults_per_s":null,"gb_per_s":`) {
		t.Errorf("JSON %s", b)
	}
	var out bytes.Buffer
	if err := c.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ *faults_per_s +\d+ +\d+ +- *$`).MatchString(out.String()) {
		t.Errorf("text output lacks a faults_per_s row without ratio:\n%s", out.String())
	}
}

// TestCompareBadRef checks that output that is not ref_handler's, or that
// describes another run, is an error naming the command.
func TestCompareBadRef(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"hello", "is not the reference's JSON"},
		{`{"op":"copy"}`, "lacks median_ns"},
		{strings.Replace(fakeLine, `"mib":8`, `"mib":256`, 1), "reported mib 256, asked for 8"},
		{strings.Replace(fakeLine, `"chunk":4096`, `"chunk":8192`, 1), "reported chunk 8192, asked for 4096"},
	} {
		exe := fakeRef(t, tc.out)
		_, err := Compare(context.Background(), Config{MiB: 8, Runs: 1}, Ref{Path: exe, Mode: RefNaive}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), exe+" -s 8") {
			t.Errorf("output %s: error %v, want one containing %q and the command", tc.out, err, tc.want)
		}
	}
	// A program that does not say it did what was asked did not.
	n := strconv.Itoa(AllowedCPUs())
	for _, tc := range []struct {
		out  string
		cfg  Config
		ref  Ref
		want string
	}{
		{fakeLine, Config{MiB: 8, Runs: 1, FaultersIn: Child}, Ref{Mode: RefNaive}, "does not report faulters in another process (-X)"},
		{strings.Replace(fakeLine, `"handlers":1`, `"handlers":`+n, 1), Config{MiB: 8, Runs: 1}, Ref{}, "does not report its handlers pinned (-p)"},
		{strings.Replace(fakeLine, `"handlers":1`, `"handlers":99`, 1), Config{MiB: 8, Runs: 1}, Ref{}, "reported handlers 99, asked for " + n},
	} {
		tc.ref.Path = fakeRef(t, tc.out)
		_, err := Compare(context.Background(), tc.cfg, tc.ref, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("output %s: error %v, want one containing %q", tc.out, err, tc.want)
		}
	}
	// A failing ref_handler: its stderr is in the error.
	dir := t.TempDir()
	exe := filepath.Join(dir, "ref_handler")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\necho 'ref_handler: bad arguments' >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Compare(context.Background(), Config{MiB: 8, Runs: 1}, Ref{Path: exe, Mode: RefNaive}, nil)
	if err == nil || !strings.Contains(err.Error(), "exit status 2: ref_handler: bad arguments") {
		t.Errorf("failing ref: error %v", err)
	}
}

func TestResultJSON(t *testing.T) {
	r := &Result{
		Impl: "go", Op: OpCopy, Chunk: 65536, Faulters: 2, Handlers: 2, MiB: 64,
		Median:   Sample{Elapsed: 100 * time.Millisecond, P50: 300, P99: 40000, Stats: pager.Stats{Faults: 1024, Pages: 16384, Prefetched: 15360, Exists: 3}, CPU: 150 * time.Millisecond},
		Prefetch: "fixed", Engine: "thread reader, 2 workers", FaultersIn: Child, ReadTouch: true, GOMAXPROCS: 4,
	}
	r.Samples = []Sample{r.Median, {Elapsed: 90 * time.Millisecond}}
	b, err := r.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"op":"copy","chunk":65536,"faulters":2,"handlers":2,"mib":64,"median_ns":100000000,` +
		`"faults":1024,"faults_per_s":10240,"ns_per_page":6103.5,"gb_per_s":0.671,"touch_p50_ns":300,"touch_p99_ns":40000,` +
		`"impl":"go","prefetch":"fixed","engine":"thread reader, 2 workers","faulters_in":"child","read":true,"random":false,"runs":2,"gomaxprocs":4,` +
		`"pager_faults":1024,"pager_pages":16384,"pager_prefetched":15360,"pager_exists":3,"cpu_ns":150000000,"runs_ns":[100000000,90000000]}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	if !json.Valid(b) {
		t.Error("not valid JSON")
	}
}

func TestMedianIndex(t *testing.T) {
	ms := func(d ...int) []Sample {
		var s []Sample
		for _, x := range d {
			s = append(s, Sample{Elapsed: time.Duration(x) * time.Millisecond})
		}
		return s
	}
	for _, tc := range []struct {
		s    []Sample
		want int
	}{
		{ms(5), 0},
		{ms(3, 1, 2), 2},
		{ms(4, 1, 3, 2), 2}, // ref_handler takes the upper middle
		{ms(9, 8, 7, 6, 5), 2},
	} {
		if got := medianIndex(tc.s); got != tc.want {
			t.Errorf("medianIndex(%v) = %d, want %d", tc.s, got, tc.want)
		}
	}
}

// firstCPU is a CPU this process may run on.
func firstCPU() int {
	cpus, err := pager.AllowedCPUs()
	if err != nil || len(cpus) == 0 {
		return 0
	}
	return cpus[0]
}
