//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RefMode is the configuration of the C reference's handlers.
type RefMode int

const (
	// RefPinned is the strongest configuration: one handler per CPU of the
	// allowed set, pinned to it, each blocking in read(2), so that every
	// fault is read on the CPU that raised it (refbench -n CPUS -p).
	RefPinned RefMode = iota
	// RefNaive is one unpinned handler blocking in read(2) (refbench -n 1),
	// what `uffd bench --ref` compared against before.
	RefNaive
)

func (m RefMode) String() string {
	switch m {
	case RefPinned:
		return "pinned"
	case RefNaive:
		return "naive"
	}
	return fmt.Sprintf("RefMode(%d)", int(m))
}

// ParseRefMode parses a RefMode's name.
func ParseRefMode(s string) (RefMode, error) {
	switch s {
	case "pinned":
		return RefPinned, nil
	case "naive":
		return RefNaive, nil
	}
	return 0, fmt.Errorf("ref-mode %q: want pinned or naive", s)
}

// AllowedCPUs is the number of CPUs this process may run on
// (sched_getaffinity(2): taskset and cpusets honoured).
func AllowedCPUs() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 1
	}
	return max(1, set.Count())
}

// Ref is the C reference to compare with.
type Ref struct {
	// Path is a program with refbench's options (ref/refbench.c, or the
	// older ref_handler.c, whose options it extends). Empty: the
	// repository's own, built with BuildRef.
	Path string
	// CacheDir is where BuildRef keeps the program (DefaultCacheDir when
	// empty).
	CacheDir string
	// Mode is the handlers' configuration.
	Mode RefMode
	// Chunk is its -c, the bytes resolved per fault: by default the Go
	// run's chunk, or one page with adaptive prefetch.
	Chunk int
	// Limits also measures the machine's limits in the same invocation
	// (the repository's reference only): the kernel's own first touch, with
	// no userfaultfd, and the region installed ahead of the faulters by
	// one pinned thread per CPU with no fault waiting (refbench -m touch,
	// -m prefill).
	Limits bool
}

// chunk is the -c to run with against cfg (with defaults).
func (r Ref) chunk(cfg Config) int {
	switch {
	case r.Chunk != 0:
		return r.Chunk
	case cfg.Adaptive:
		return PageSize
	}
	return cfg.Chunk
}

// handlers is the -n to run with.
func (r Ref) handlers() int {
	if r.Mode == RefNaive {
		return 1
	}
	return min(AllowedCPUs(), MaxThreads)
}

// Validate checks r for a run against cfg.
func (r Ref) Validate(cfg Config) error {
	cfg = cfg.withDefaults()
	if r.Mode != RefPinned && r.Mode != RefNaive {
		return fmt.Errorf("ref-mode %v: want pinned or naive", r.Mode)
	}
	c := r.chunk(cfg)
	if c < PageSize || c%PageSize != 0 {
		return fmt.Errorf("ref chunk %d: want a positive multiple of the page size %d", c, PageSize)
	}
	if c > cfg.MiB<<20 {
		return fmt.Errorf("ref chunk %d: larger than the region", c)
	}
	if r.Path == "" {
		return nil
	}
	if st, err := os.Stat(r.Path); err != nil {
		return fmt.Errorf("--ref %s: %w", r.Path, err)
	} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("--ref %s: not an executable file", r.Path)
	}
	if c&(c-1) != 0 {
		return fmt.Errorf("ref chunk %d: want a power of two with --ref-program (ref_handler aligns chunks with a mask; the repository's reference has no such limit)", c)
	}
	if r.Limits {
		return errors.New("--limit: needs the repository's reference (no --ref-program)")
	}
	return nil
}

// Measures of the reference beside the faults: the limits.
const (
	measureFaults  = "uffd"
	measureTouch   = "touch"
	measurePrefill = "prefill"
)

// layout is the bytes per fault, the handlers and whether they are pinned
// for a run measuring measure.
func (r Ref) layout(cfg Config, measure string) (chunk, handlers int, pin bool) {
	chunk, handlers, pin = r.chunk(cfg), r.handlers(), r.Mode == RefPinned
	switch measure {
	case measureTouch:
		chunk, pin = PageSize, false
	case measurePrefill:
		handlers, pin = min(AllowedCPUs(), MaxThreads), true
	}
	return chunk, handlers, pin
}

// Args are the reference's flags for one run of the workload cfg,
// measuring the faults (measureFaults) or a limit.
func (r Ref) Args(cfg Config, measure string) []string {
	cfg = cfg.withDefaults()
	chunk, n, pin := r.layout(cfg, measure)
	args := []string{
		"-s", strconv.Itoa(cfg.MiB),
		"-c", strconv.Itoa(chunk),
		"-f", strconv.Itoa(cfg.Faulters),
		"-n", strconv.Itoa(n),
		"-o", cfg.Op.String(),
		"-r", "1",
	}
	if cfg.ReadTouch {
		args = append(args, "-R")
	}
	if cfg.Random {
		args = append(args, "-x")
	}
	if pin {
		args = append(args, "-p")
	}
	if cfg.FaultersIn == Child && measure == measureFaults {
		args = append(args, "-X")
	}
	if measure != measureFaults {
		args = append(args, "-m", measure)
	}
	return args
}

// refJSON is the reference's output: ref_handler's fields, then
// refbench's own (absent from ref_handler's).
type refJSON struct {
	Op           string   `json:"op"`
	Chunk        int      `json:"chunk"`
	Faulters     int      `json:"faulters"`
	Handlers     int      `json:"handlers"`
	MiB          int      `json:"mib"`
	MedianNS     int64    `json:"median_ns"`
	Faults       *float64 `json:"faults"`
	FaultsPerS   float64  `json:"faults_per_s"`
	TouchP50NS   *int64   `json:"touch_p50_ns"`
	TouchP99NS   *int64   `json:"touch_p99_ns"`
	Pinned       *bool    `json:"pinned"`
	CrossProcess *bool    `json:"cross_process"`
	Measure      *string  `json:"measure"`
	CPUNS        *int64   `json:"cpu_ns"`
}

// refWant is what a run of the reference must report having done.
type refWant struct {
	op                   string
	mib, chunk, faulters int
	handlers             int // -1: not reported (the kernel's own touch)
	pinned, cross        bool
	measure              string
}

// want is what the run of Args(cfg, measure) must report.
func (r Ref) want(cfg Config, measure string) refWant {
	cfg = cfg.withDefaults()
	chunk, n, pin := r.layout(cfg, measure)
	if measure == measureTouch {
		n = -1
	}
	return refWant{op: cfg.Op.String(), mib: cfg.MiB, chunk: chunk, faulters: cfg.Faulters, handlers: n, pinned: pin,
		cross: cfg.FaultersIn == Child && measure == measureFaults, measure: measure}
}

// parseRef decodes a line of the reference's output and checks that it
// describes the run asked for.
func parseRef(out []byte, want refWant) (Sample, error) {
	line := bytes.TrimSpace(out)
	var j refJSON
	if err := json.Unmarshal(line, &j); err != nil {
		return Sample{}, fmt.Errorf("output %q is not the reference's JSON: %w", line, err)
	}
	if j.MedianNS <= 0 || j.Faults == nil || j.TouchP50NS == nil || j.TouchP99NS == nil {
		return Sample{}, fmt.Errorf("output %q lacks median_ns, faults or touch percentiles", line)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"op", j.Op, want.op},
		{"mib", j.MiB, want.mib},
		{"chunk", j.Chunk, want.chunk},
		{"faulters", j.Faulters, want.faulters},
	}
	if want.handlers >= 0 {
		checks = append(checks, struct {
			name      string
			got, want any
		}{"handlers", j.Handlers, want.handlers})
	}
	for _, f := range checks {
		if f.got != f.want {
			return Sample{}, fmt.Errorf("reported %s %v, asked for %v", f.name, f.got, f.want)
		}
	}
	// ref_handler prints pinned (with -p) and none of the rest: a program
	// that does not say it did what was asked did not.
	if want.pinned && (j.Pinned == nil || !*j.Pinned) {
		return Sample{}, fmt.Errorf("output %q does not report its handlers pinned (-p)", line)
	}
	if want.cross && (j.CrossProcess == nil || !*j.CrossProcess) {
		return Sample{}, fmt.Errorf("output %q does not report faulters in another process (-X): use the repository's reference", line)
	}
	if want.measure != measureFaults && (j.Measure == nil || *j.Measure != want.measure) {
		return Sample{}, fmt.Errorf("output %q does not report measure %q (-m)", line, want.measure)
	}
	s := Sample{
		Elapsed: time.Duration(j.MedianNS),
		P50:     time.Duration(*j.TouchP50NS),
		P99:     time.Duration(*j.TouchP99NS),
		raw:     line,
	}
	if j.CPUNS != nil { // refbench's; ref_handler does not report it
		s.CPU = time.Duration(*j.CPUNS)
	}
	return s, nil
}

// run runs the reference at path once, measuring measure for cfg.
func (r Ref) run(ctx context.Context, path string, cfg Config, measure string) (Sample, error) {
	args := r.Args(cfg, measure)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return Sample{}, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			msg = ": " + msg
		}
		return Sample{}, fmt.Errorf("%s %s: %w%s", path, strings.Join(args, " "), err, msg)
	}
	s, err := parseRef(stdout.Bytes(), r.want(cfg, measure))
	if err != nil {
		return Sample{}, fmt.Errorf("%s %s: %w", path, strings.Join(args, " "), err)
	}
	return s, nil
}

// program returns the reference's program, building the repository's own
// when r has no Path.
func (r Ref) program(ctx context.Context) (string, error) {
	if r.Path != "" {
		return r.Path, nil
	}
	return BuildRef(ctx, RefBench, r.CacheDir)
}

// Compare runs the workload cfg in Go and with the C reference,
// alternating one run of each cfg.Runs times (the Go run first in odd
// pairs, second in even ones, so that drift of the machine weighs on both
// alike), plus, with ref.Limits, one run of each limit after each pair;
// it reports the medians and the go/ref ratios over the pairs. progress,
// when not nil, is called after each run.
func Compare(ctx context.Context, cfg Config, ref Ref, progress func(Progress)) (*Comparison, error) {
	if err := ref.Validate(cfg); err != nil {
		return nil, err
	}
	b, err := New(cfg)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	cfg = b.cfg
	path, err := ref.program(ctx)
	if err != nil {
		return nil, err
	}
	defer setGOMAXPROCS(cfg.GOMAXPROCS)()
	measures := []string{measureFaults}
	if ref.Limits {
		measures = append(measures, measureTouch, measurePrefill)
	}
	var goSamples []Sample
	refSamples := map[string][]Sample{}
	for i := range cfg.Runs {
		impls := []string{"go", "ref"}
		if i%2 == 1 {
			impls = []string{"ref", "go"}
		}
		impls = append(impls, measures[1:]...)
		for _, impl := range impls {
			var s Sample
			var err error
			switch impl {
			case "go":
				s, err = b.Run(ctx)
			case "ref":
				s, err = ref.run(ctx, path, cfg, measureFaults)
			default:
				s, err = ref.run(ctx, path, cfg, impl)
			}
			if err != nil {
				return nil, runError(impl, i+1, cfg.Runs, err)
			}
			if impl == "go" {
				goSamples = append(goSamples, s)
			} else {
				refSamples[impl] = append(refSamples[impl], s)
			}
			if progress != nil {
				progress(Progress{Impl: impl, Run: i + 1, Runs: cfg.Runs, Sample: s})
			}
		}
	}
	g := b.result(goSamples)
	refResult := func(measure string, samples []Sample) *Result {
		chunk, n, _ := ref.layout(cfg, measure)
		if measure == measureTouch {
			n = 0
		}
		return &Result{
			Impl:       "ref",
			Op:         cfg.Op,
			Chunk:      chunk,
			Faulters:   cfg.Faulters,
			Handlers:   n,
			MiB:        cfg.MiB,
			Median:     samples[medianIndex(samples)],
			Samples:    samples,
			FaultersIn: cfg.FaultersIn,
			ReadTouch:  cfg.ReadTouch,
			Random:     cfg.Random,
			RefMode:    ref.Mode.String(),
			Measure:    measure,
			Program:    path,
		}
	}
	r := refResult(measureFaults, refSamples["ref"])
	c := &Comparison{Go: g, Ref: r, Ratio: ratio(g, r)}
	if ref.Limits {
		c.Touch = refResult(measureTouch, refSamples[measureTouch])
		c.Prefill = refResult(measurePrefill, refSamples[measurePrefill])
	}
	return c, nil
}
