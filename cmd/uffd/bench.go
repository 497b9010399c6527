//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/gouffd/uffd/internal/bench"
)

// benchChild runs this process as one of the benchmark's children (a
// faulting process, a test VM) when it was started as one.
func benchChild() (int, bool) {
	if !bench.IsChild() {
		return 0, false
	}
	return bench.ChildMain(), true
}

// refFlag is --ref: alone, the repository's C reference; --ref=PATH (or
// --ref PATH), a program with its options.
type refFlag struct {
	on   bool
	path string
}

func (f *refFlag) String() string   { return f.path }
func (f *refFlag) IsBoolFlag() bool { return true }
func (f *refFlag) Set(s string) error {
	switch s {
	case "true":
		f.on, f.path = true, ""
	case "false":
		f.on, f.path = false, ""
	case "":
		return errors.New("empty path")
	default:
		f.on, f.path = true, s
	}
	return nil
}

// joinRefPath turns "--ref PATH" into "--ref=PATH": --ref is also a flag
// alone, which the flag package would end at the space.
func joinRefPath(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if (a == "--ref" || a == "-ref") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			out = append(out, "--ref="+args[i+1])
			i++
			continue
		}
		out = append(out, a)
	}
	return out
}

// runBench is `uffd bench`: the benchmark's workload served by the pager,
// beside the C reference (--ref), or the engine's targets (--targets), or
// the Firecracker comparison (`uffd bench firecracker`).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "firecracker" {
		return runBenchFirecracker(ctx, args[1:], stdout, stderr)
	}
	fs := newFlags("bench")
	mib := fs.Int("mib", 256, "region size in MiB (refbench -s)")
	chunk := fs.Int("chunk", bench.PageSize, "bytes resolved per fault with fixed prefetch, a multiple of the page size (refbench -c)")
	faulters := fs.Int("faulters", 1, "faulting threads, each touching its own slice (refbench -f)")
	faultersIn := fs.String("faulters-in", "process", "`where` the faulters run: process (this one) or child (another process that hands its userfaultfd over, as a VM does; refbench -X)")
	op := fs.String("op", "copy", "resolve with `copy` from a 0x5a image or zero pages (refbench -o)")
	runs := fs.Int("runs", 5, "runs; the median run is reported (refbench -r)")
	read := fs.Bool("read", false, "read-touch, checking the served byte, instead of write-touch (refbench -R)")
	random := fs.Bool("random", false, "touch each faulter's pages in a fixed shuffled order (refbench -x)")
	prefetch := fs.String("prefetch", "fixed", "`fixed` (--chunk per fault) or adaptive (pager.Adaptive)")
	engineKind := fs.String("engine", "own", "the pager's `engine`: own (started by each run's Serve; readers block in read(2)) or shared (also serving another userfaultfd, as a daemon does; readers wait in epoll)")
	events := fs.Bool("events", false, "open the userfaultfd with EVENT_REMOVE, as Firecracker does: reads are ordered against installs, readers wait in epoll")
	cpus := fs.String("cpus", "", "the engine's CPUs, a reader and a worker pinned to each, as a `list` such as 0-3,6 (default: every CPU the process may run on)")
	gomaxprocs := fs.Int("gomaxprocs", 0, "GOMAXPROCS during the runs (0: at least faulters+1 with faulters in this process)")
	asJSON := fs.Bool("json", false, "print one JSON object (with --ref: {\"go\",\"ref\",\"ratio\",\"limits\"})")
	var ref refFlag
	fs.Var(&ref, "ref", "alternate with the C reference and print the ratios: alone, the repository's (internal/bench/ref/refbench.c, built with $CC or cc on first use); --ref=`PATH`, a program with its options (ref_handler.c's)")
	refMode := fs.String("ref-mode", "pinned", "the C reference's handlers, a `mode`: pinned (one per CPU of the allowed set, pinned, each blocking in read(2)) or naive (one unpinned)")
	refChunk := fs.Int("ref-chunk", 0, "the C reference's -c (default: --chunk, or a page with --prefetch adaptive)")
	limit := fs.Bool("limit", true, "with the repository's reference, also measure the machine's limits: the kernel's own first touch, and the region installed ahead with no fault waiting")
	targets := fs.String("targets", "", "run the engine's targets against the pinned C reference: all, or a `list` of "+strings.Join(bench.TargetNames(), ","))
	if err := parse(fs, joinRefPath(args), stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{fmt.Sprintf("bench: unexpected argument %q", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	usage := func(err error) error { return &usageError{"bench: " + err.Error()} }

	engine := bench.Engine{Events: *events}
	var err error
	if engine.Shared, err = bench.ParseEngine(*engineKind); err != nil {
		return usage(err)
	}
	if engine.CPUs, err = parseCPUList(*cpus); err != nil {
		return usage(fmt.Errorf("--cpus: %w", err))
	}
	mode, err := bench.ParseRefMode(*refMode)
	if err != nil {
		return usage(fmt.Errorf("--%w", err))
	}
	r := bench.Ref{Path: ref.path, Mode: mode, Chunk: *refChunk, Limits: *limit && ref.path == ""}
	if set["limit"] && *limit && ref.path != "" {
		return usage(errors.New("--limit with --ref PATH: the limits need the repository's reference"))
	}
	progress := func(p bench.Progress) { fmt.Fprintln(stderr, bench.ProgressLine(p)) }
	if *asJSON {
		progress = nil
	}

	if *targets != "" {
		for _, name := range []string{"mib", "chunk", "faulters", "faulters-in", "op", "read", "random", "prefetch", "ref-chunk", "gomaxprocs"} {
			if set[name] {
				return usage(fmt.Errorf("--%s with --targets: each target sets its own workload", name))
			}
		}
		ts, err := bench.SelectTargets(strings.Split(*targets, ","))
		if err != nil {
			return usage(err)
		}
		if *runs < 1 || *runs > bench.MaxRuns {
			return usage(fmt.Errorf("--runs %d: want 1 to %d", *runs, bench.MaxRuns))
		}
		var tp func(bench.Target, bench.Progress)
		if progress != nil {
			tp = func(t bench.Target, p bench.Progress) {
				fmt.Fprintf(stderr, "%-16s %s\n", t.Name, bench.ProgressLine(p))
			}
		}
		rs, err := bench.RunTargets(ctx, ts, engine, *runs, r, tp)
		if err != nil {
			return err
		}
		if *asJSON {
			return bench.WriteTargetsJSON(stdout, rs)
		}
		return bench.WriteTargetsText(stdout, rs)
	}

	cfg := bench.Config{
		MiB:        *mib,
		Chunk:      *chunk,
		Faulters:   *faulters,
		Engine:     engine,
		Runs:       *runs,
		ReadTouch:  *read,
		Random:     *random,
		GOMAXPROCS: *gomaxprocs,
	}
	if cfg.Op, err = bench.ParseOp(*op); err != nil {
		return usage(fmt.Errorf("--%w", err))
	}
	if cfg.FaultersIn, err = bench.ParsePlacement(*faultersIn); err != nil {
		return usage(fmt.Errorf("--%w", err))
	}
	switch *prefetch {
	case "fixed":
	case "adaptive":
		cfg.Adaptive = true
		if !set["chunk"] {
			cfg.Chunk = 0
		}
	default:
		return usage(fmt.Errorf("--prefetch %q: want fixed or adaptive", *prefetch))
	}
	// Zero means "default" in bench.Config: reject it here, where it was typed.
	for _, f := range []struct {
		name string
		v    int
	}{{"mib", *mib}, {"chunk", *chunk}, {"faulters", *faulters}, {"runs", *runs}, {"ref-chunk", *refChunk}} {
		if set[f.name] && f.v == 0 {
			return usage(fmt.Errorf("--%s 0: want at least 1", f.name))
		}
	}
	if err := cfg.Validate(); err != nil {
		return usage(err)
	}
	if !ref.on {
		for _, name := range []string{"ref-mode", "ref-chunk", "limit"} {
			if set[name] {
				return usage(fmt.Errorf("--%s without --ref", name))
			}
		}
		res, err := bench.Run(ctx, cfg, progress)
		if err != nil {
			return err
		}
		if *asJSON {
			return res.WriteJSON(stdout)
		}
		return res.WriteText(stdout)
	}
	if err := r.Validate(cfg); err != nil {
		return usage(err)
	}
	c, err := bench.Compare(ctx, cfg, r, progress)
	if err != nil {
		var nc *bench.NoCompilerError
		if errors.As(err, &nc) {
			return fmt.Errorf("%w (or give --ref=PATH)", err)
		}
		return err
	}
	if *asJSON {
		return c.WriteJSON(stdout)
	}
	return c.WriteText(stdout)
}

// runBenchFirecracker is `uffd bench firecracker`: `uffd firecracker
// --prefetch none` against the C handler of the protocol, under test VMs.
func runBenchFirecracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench firecracker")
	mib := fs.Int("mib", 64, "each guest's size in MiB")
	vms := fs.String("vms", "1,8", "`list` of VM counts, one case each: that many VMs fault at once (the C handler as one process per VM)")
	order := fs.String("order", "seq,random", "`list` of touch orders: seq (address order), random (shuffled)")
	runs := fs.Int("runs", 5, "runs of each case and handler, interleaved; medians are reported")
	handler := fs.String("handler", "", "the C handler's `path` (default: internal/bench/ref/fchandler.c, built with $CC or cc on first use)")
	daemonArgs := fs.String("daemon-args", "", "more `flags` for `uffd firecracker`, after --prefetch none (space-separated)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{fmt.Sprintf("bench firecracker: unexpected argument %q", fs.Arg(0))}
	}
	usage := func(err error) error { return &usageError{"bench firecracker: " + err.Error()} }
	cfg := bench.FirecrackerConfig{MiB: *mib, Runs: *runs, Handler: *handler, DaemonArgs: strings.Fields(*daemonArgs)}
	if *mib == 0 {
		return usage(errors.New("--mib 0: want at least 1"))
	}
	if *runs == 0 {
		return usage(errors.New("--runs 0: want at least 1"))
	}
	for _, s := range strings.Split(*vms, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return usage(fmt.Errorf("--vms %q: want a list of numbers such as 1,8", *vms))
		}
		if n == 0 {
			return usage(errors.New("--vms 0: want at least 1"))
		}
		cfg.VMs = append(cfg.VMs, n)
	}
	for _, s := range strings.Split(*order, ",") {
		cfg.Orders = append(cfg.Orders, strings.TrimSpace(s))
	}
	if err := cfg.Validate(); err != nil {
		return usage(err)
	}
	progress := func(p bench.FCProgress) { fmt.Fprintln(stderr, p.Line()) }
	if *asJSON {
		progress = nil
	}
	rep, err := bench.RunFirecracker(ctx, cfg, progress)
	if err != nil {
		return err
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteText(stdout)
}
