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
	"time"

	"github.com/gouffd/uffd/internal/bench"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/remote"
)

// benchChild runs this process as one of the benchmark's children (a
// faulting process, a test VM) when it was started as one.
func benchChild() (int, bool) {
	if !bench.IsChild() {
		return 0, false
	}
	return bench.ChildMain(), true
}

// runBench runs `uffd bench args...`.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return benchCmd.execute(ctx, args, stdout, stderr)
}

// setupBench defines `uffd bench`'s flags: the benchmark's workload served
// by the pager, beside the C reference (--ref), or the engine's targets
// (--targets).
func setupBench(fs *flag.FlagSet) runFunc {
	mib := intFlag(fs, "mib", 256, 1, bench.MaxMiB, "region size in MiB (refbench -s)")
	chunk := sizeFlag(fs, "chunk", bench.PageSize, bench.PageSize, 1<<30, bench.PageSize, "bytes resolved per fault with fixed prefetch (refbench -c)")
	faulters := intFlag(fs, "faulters", 1, 1, bench.MaxThreads, "faulting threads, each touching its own slice (refbench -f)")
	faultersIn := choiceFlag(fs, "faulters-in", "process", []string{"process", "child"}, "where the faulters run: process (this one) or child (another process that hands its userfaultfd over, as a VM does; refbench -X)")
	op := choiceFlag(fs, "op", "copy", []string{"copy", "zero"}, "resolve with copy (from a 0x5a image) or zero (zero pages) (refbench -o)")
	runs := intFlag(fs, "runs", 5, 1, bench.MaxRuns, "runs; the median run is reported (refbench -r)")
	read := fs.Bool("read", false, "read-touch, checking the served byte, instead of write-touch (refbench -R)")
	random := fs.Bool("random", false, "touch each faulter's pages in a fixed shuffled order (refbench -x)")
	prefetch := choiceFlag(fs, "prefetch", "fixed", []string{"fixed", "adaptive"}, "fixed (--chunk per fault) or adaptive (pager.Adaptive)")
	engineKind := choiceFlag(fs, "engine", "own", []string{"own", "shared"}, "the pager's engine: own (started by each run's Serve; its readers read the one userfaultfd) or shared (also serving another userfaultfd, as a daemon does; its readers wait in epoll)")
	events := fs.Bool("events", false, "open the userfaultfd with EVENT_REMOVE, as Firecracker does: reads are ordered against installs, readers wait in epoll")
	cpus := cpusFlag(fs, "cpus", "the engine's CPUs, a reader and a worker pinned to each, as a list such as 0-3,6 (default: every CPU the process may run on)")
	spin := spinFlag(fs, pager.DefaultSpin.String())
	gomaxprocs := intFlag(fs, "gomaxprocs", 0, 0, 0, "GOMAXPROCS during the runs (0: at least faulters+1 with faulters in this process)")
	asJSON := fs.Bool("json", false, "print one JSON object (with --ref: {\"go\",\"ref\",\"ratio\",\"limits\"})")
	ref := fs.Bool("ref", false, "alternate with the repository's C reference (internal/bench/ref/refbench.c, built with $CC or cc on first use) and print the ratios")
	refProgram := stringFlag(fs, "ref-program", "", "path", "with --ref, another reference program taking refbench's (and ref_handler.c's) options")
	refMode := choiceFlag(fs, "ref-mode", "pinned", []string{"pinned", "naive"}, "the C reference's handlers: pinned (one per CPU of the allowed set, pinned, each blocking in read(2)) or naive (one unpinned)")
	refChunk := sizeFlag(fs, "ref-chunk", 0, bench.PageSize, 1<<30, bench.PageSize, "the C reference's -c (default: --chunk, or a page with --prefetch adaptive)")
	limit := fs.Bool("limit", true, "with the repository's reference, also measure the machine's limits: the kernel's own first touch, and the region installed ahead with no fault waiting")
	targets := stringFlag(fs, "targets", "", "list", "run the engine's targets against the pinned C reference: all, or a list of "+strings.Join(bench.TargetNames(), ","))
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) != 0 {
			return usagef("unexpected argument %q", args[0])
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		engine := bench.Engine{Events: *events, Shared: *engineKind == "shared", CPUs: *cpus, Spin: flagSpin(*spin)}
		mode, err := bench.ParseRefMode(*refMode)
		if err != nil {
			return usagef("--%v", err)
		}
		r := bench.Ref{Path: *refProgram, Mode: mode, Chunk: *refChunk, Limits: *limit && *refProgram == ""}
		switch {
		case set["limit"] && *limit && *refProgram != "":
			return usagef("--limit with --ref-program: the limits need the repository's reference")
		case set["ref-program"] && !*ref:
			return usagef("--ref-program without --ref")
		}
		progress := func(p bench.Progress) { fmt.Fprintln(stderr, bench.ProgressLine(p)) }
		if *asJSON {
			progress = nil
		}

		if *targets != "" {
			for _, name := range []string{"mib", "chunk", "faulters", "faulters-in", "op", "read", "random", "prefetch", "ref-chunk", "gomaxprocs"} {
				if set[name] {
					return usagef("--%s with --targets: each target sets its own workload", name)
				}
			}
			ts, err := bench.SelectTargets(strings.Split(*targets, ","))
			if err != nil {
				return usagef("%v", err)
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
			MiB: *mib, Chunk: *chunk, Faulters: *faulters, Engine: engine, Runs: *runs,
			ReadTouch: *read, Random: *random, GOMAXPROCS: *gomaxprocs,
		}
		if cfg.Op, err = bench.ParseOp(*op); err != nil {
			return usagef("--%v", err)
		}
		if cfg.FaultersIn, err = bench.ParsePlacement(*faultersIn); err != nil {
			return usagef("--%v", err)
		}
		if *prefetch == "adaptive" {
			cfg.Adaptive = true
			if !set["chunk"] {
				cfg.Chunk = 0
			}
		}
		if err := cfg.Validate(); err != nil {
			return usagef("%v", err)
		}
		if !*ref {
			for _, name := range []string{"ref-mode", "ref-chunk", "limit"} {
				if set[name] {
					return usagef("--%s without --ref", name)
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
			return usagef("%v", err)
		}
		c, err := bench.Compare(ctx, cfg, r, progress)
		if err != nil {
			var nc *bench.NoCompilerError
			if errors.As(err, &nc) {
				return fmt.Errorf("%w (or give --ref-program PATH)", err)
			}
			return err
		}
		if *asJSON {
			return c.WriteJSON(stdout)
		}
		return c.WriteText(stdout)
	}
}

// setupBenchFirecracker defines `uffd bench firecracker`: `uffd
// firecracker --prefetch none` against the C handler of the protocol,
// under test VMs.
func setupBenchFirecracker(fs *flag.FlagSet) runFunc {
	mib := intFlag(fs, "mib", 64, 1, bench.MaxMiB, "each guest's size in MiB")
	vms := stringFlag(fs, "vms", "1,8", "list", "VM counts, one case each: that many VMs fault at once (the C handler as one process per VM)")
	order := stringFlag(fs, "order", "seq,random", "list", "touch orders: seq (address order), random (shuffled)")
	runs := intFlag(fs, "runs", 5, 1, bench.MaxRuns, "runs of each case and handler, interleaved; medians are reported")
	handler := stringFlag(fs, "handler", "", "path", "the C handler (default: internal/bench/ref/fchandler.c, built with $CC or cc on first use)")
	daemonArgs := stringFlag(fs, "daemon-args", "", "flags", "more flags for `uffd firecracker`, after --prefetch none (space-separated)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) != 0 {
			return usagef("unexpected argument %q", args[0])
		}
		cfg := bench.FirecrackerConfig{MiB: *mib, Runs: *runs, Handler: *handler, DaemonArgs: strings.Fields(*daemonArgs)}
		for _, s := range strings.Split(*vms, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return usagef("--vms %s: want a list of VM counts, each at least 1, such as 1,8", *vms)
			}
			cfg.VMs = append(cfg.VMs, n)
		}
		for _, s := range strings.Split(*order, ",") {
			cfg.Orders = append(cfg.Orders, strings.TrimSpace(s))
		}
		if err := cfg.Validate(); err != nil {
			return usagef("%v", err)
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
}

// setupBenchRemote defines `uffd bench remote`: remote images served by
// `uffd firecracker --mem-file URL` under test VMs, through the proxy,
// against their targets.
func setupBenchRemote(fs *flag.FlagSet) runFunc {
	mib := intFlag(fs, "mib", 1024, 1, bench.MaxRemoteMiB, "the guests' and the images' size in MiB")
	runs := intFlag(fs, "runs", 3, 1, bench.MaxRuns, "runs of each case; medians are reported")
	cases := stringFlag(fs, "cases", strings.Join(bench.RemoteCases, ","), "list", "what to measure: some of "+strings.Join(bench.RemoteCases, ","))
	rtts := stringFlag(fs, "rtt", "0,1ms,10ms", "list", "round-trip times of the seq case (and of the first fault's latency)")
	prefetch := stringFlag(fs, "prefetch", "none,adaptive", "list", "the daemon's --prefetch in the seq and random cases: none, adaptive or both")
	server := choiceFlag(fs, "server", "s3", []string{"s3", "http"}, "the server: s3 (MinIO, from $UFFD_MINIO, $PATH or ~/.cache/uffd-ci/bin) or http (net/http's FileServer)")
	concurrency := intFlag(fs, "concurrency", remote.DefaultConcurrency, 1, 4096, "the daemon's --fetch-concurrency, and the whole-object download's")
	chunk := sizeFlag(fs, "chunk-size", remote.DefaultChunkSize, bench.PageSize, 1<<30, bench.PageSize, "the images' chunk size (in their index), and the download's part size")
	randomRTT := durationFlag(fs, "random-rtt", 10*time.Millisecond, 0, "the round-trip time of the random case")
	replayRTT := durationFlag(fs, "replay-rtt", 10*time.Millisecond, 0, "the round-trip time of the replay case")
	sharedRTT := durationFlag(fs, "shared-rtt", 10*time.Millisecond, 0, "the round-trip time of the shared case")
	bandwidth := sizeFlag(fs, "bandwidth", 100<<20, 1<<20, 1<<40, 1, "the link's cap in the replay case, in bytes per second")
	sharedVMs := intFlag(fs, "shared-vms", 3, 1, bench.MaxVMs, "VMs restored at once in the shared case")
	serial := intFlag(fs, "serial", 200, 1, 100000, "single-page requests sampled for the random case's baseline")
	daemonArgs := stringFlag(fs, "daemon-args", "", "flags", "more flags for the daemon, uffd firecracker (space-separated)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) != 0 {
			return usagef("unexpected argument %q", args[0])
		}
		for _, d := range []*time.Duration{randomRTT, replayRTT, sharedRTT} {
			if *d == 0 {
				*d = -1 // none, in RemoteConfig
			}
		}
		cfg := bench.RemoteConfig{
			MiB: *mib, Runs: *runs, Server: *server, Concurrency: *concurrency, ChunkSize: int64(*chunk),
			RandomRTT: *randomRTT, ReplayRTT: *replayRTT, SharedRTT: *sharedRTT, Bandwidth: int64(*bandwidth),
			SharedVMs: *sharedVMs, Serial: *serial, DaemonArgs: strings.Fields(*daemonArgs),
			RTTs: []time.Duration{},
		}
		for _, s := range strings.Split(*cases, ",") {
			cfg.Cases = append(cfg.Cases, strings.TrimSpace(s))
		}
		for _, s := range strings.Split(*prefetch, ",") {
			cfg.Prefetch = append(cfg.Prefetch, strings.TrimSpace(s))
		}
		for _, s := range strings.Split(*rtts, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return usagef("--rtt %s: want a list of durations, such as 0,1ms,10ms", *rtts)
			}
			cfg.RTTs = append(cfg.RTTs, d)
		}
		if err := cfg.Validate(); err != nil {
			return usagef("%v", err)
		}
		progress := func(r bench.RemoteRun) { fmt.Fprintln(stderr, r.Line()) }
		if *asJSON {
			progress = nil
		}
		rep, err := bench.RunRemote(ctx, cfg, progress)
		if err != nil {
			return err
		}
		if *asJSON {
			return rep.WriteJSON(stdout)
		}
		return rep.WriteText(stdout)
	}
}
