//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/gouffd/uffd/bench"
)

// runBench runs `uffd bench args...`.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return benchCmd.execute(ctx, args, stdout, stderr)
}

// setupBench defines `uffd bench`'s flags: ref_handler's workload served
// by the pager, optionally alternating with runs of ref_handler itself
// (--ref).
func setupBench(fs *flag.FlagSet) runFunc {
	mib := intFlag(fs, "mib", 256, 1, bench.MaxMiB, "region size in MiB (ref_handler -s)")
	chunk := sizeFlag(fs, "chunk", bench.PageSize, bench.PageSize, 1<<30, bench.PageSize, "bytes resolved per fault with fixed prefetch (ref_handler -c)")
	faulters := intFlag(fs, "faulters", 1, 1, bench.MaxThreads, "faulting threads, each touching its own slice (ref_handler -f)")
	workers := intFlag(fs, "workers", 1, 1, bench.MaxThreads, "pager workers (ref_handler -n)")
	op := choiceFlag(fs, "op", "copy", []string{"copy", "zero"}, "resolve with copy (from a 0x5a image) or zero (zero pages) (ref_handler -o)")
	runs := intFlag(fs, "runs", 5, 1, bench.MaxRuns, "runs; the median run is reported (ref_handler -r)")
	read := fs.Bool("read", false, "read-touch, checking the served byte, instead of write-touch (ref_handler -R)")
	random := fs.Bool("random", false, "touch each faulter's pages in ref_handler's fixed random order (ref_handler -x)")
	prefetch := choiceFlag(fs, "prefetch", "fixed", []string{"fixed", "adaptive"}, "fixed (--chunk per fault) or adaptive (pager.Adaptive)")
	reader := choiceFlag(fs, "reader", "poller", []string{"poller", "thread"}, "how the pager waits for faults: poller or thread")
	spinReads := intFlag(fs, "spin-reads", 0, -1, 0, "the pager's SpinReads: reads before parking after a fault (0: its default; -1: none)")
	gomaxprocs := intFlag(fs, "gomaxprocs", 0, 0, 0, "GOMAXPROCS during the runs (0: at least faulters+1)")
	asJSON := fs.Bool("json", false, "print one JSON object with ref_handler's fields (with --ref: {\"go\",\"ref\",\"ratio\"})")
	refPath := stringFlag(fs, "ref", "", "path", "the ref_handler binary: alternate its runs with the Go runs and print the ratios")
	refChunk := sizeFlag(fs, "ref-chunk", 0, bench.PageSize, 1<<30, bench.PageSize, "ref_handler's -c with --ref (default: --chunk, or a page with --prefetch adaptive)")
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) != 0 {
			return usagef("unexpected argument %q", args[0])
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		return benchRun(ctx, set, bench.Config{
			MiB:        *mib,
			Chunk:      *chunk,
			Faulters:   *faulters,
			Workers:    *workers,
			Runs:       *runs,
			ReadTouch:  *read,
			Random:     *random,
			SpinReads:  *spinReads,
			GOMAXPROCS: *gomaxprocs,
		}, *op, *reader, *prefetch, *asJSON, *refPath, *refChunk, stdout, stderr)
	}
}

func benchRun(ctx context.Context, set map[string]bool, cfg bench.Config, op, reader, prefetch string, asJSON bool, refPath string, refChunk int, stdout, stderr io.Writer) error {
	var err error
	if cfg.Op, err = bench.ParseOp(op); err != nil {
		return usagef("--%v", err)
	}
	if cfg.Reader, err = bench.ParseReader(reader); err != nil {
		return usagef("--%v", err)
	}
	switch prefetch {
	case "fixed":
	case "adaptive":
		cfg.Adaptive = true
		if !set["chunk"] {
			cfg.Chunk = 0
		}
	}
	if err := cfg.Validate(); err != nil {
		return usagef("%v", err)
	}
	ref := bench.Ref{Path: refPath, Chunk: refChunk}
	switch {
	case refPath == "" && set["ref-chunk"]:
		return usagef("--ref-chunk without --ref")
	case refPath != "":
		if err := ref.Validate(cfg); err != nil {
			return usagef("%v", err)
		}
	}

	progress := func(p bench.Progress) { fmt.Fprintln(stderr, bench.ProgressLine(p)) }
	if asJSON {
		progress = nil
	}
	if refPath == "" {
		r, err := bench.Run(ctx, cfg, progress)
		if err != nil {
			return err
		}
		if asJSON {
			return r.WriteJSON(stdout)
		}
		return r.WriteText(stdout)
	}
	c, err := bench.Compare(ctx, cfg, ref, progress)
	if err != nil {
		return err
	}
	if asJSON {
		return c.WriteJSON(stdout)
	}
	return c.WriteText(stdout)
}
