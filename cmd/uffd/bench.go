//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/gouffd/uffd/internal/bench"
)

// runBench is `uffd bench`: ref_handler's workload served by the pager,
// optionally alternating with runs of ref_handler itself (--ref).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench")
	mib := fs.Int("mib", 256, "region size in MiB (ref_handler -s)")
	chunk := fs.Int("chunk", bench.PageSize, "bytes resolved per fault with fixed prefetch, a multiple of the page size (ref_handler -c)")
	faulters := fs.Int("faulters", 1, "faulting threads, each touching its own slice (ref_handler -f)")
	workers := fs.Int("workers", 1, "pager workers (ref_handler -n)")
	op := fs.String("op", "copy", "resolve with `copy` from a 0x5a image or zero pages (ref_handler -o)")
	runs := fs.Int("runs", 5, "runs; the median run is reported (ref_handler -r)")
	read := fs.Bool("read", false, "read-touch, checking the served byte, instead of write-touch (ref_handler -R)")
	random := fs.Bool("random", false, "touch each faulter's pages in ref_handler's fixed random order (ref_handler -x)")
	prefetch := fs.String("prefetch", "fixed", "`fixed` (--chunk per fault) or adaptive (pager.Adaptive)")
	reader := fs.String("reader", "poller", "how the pager waits for faults: `poller` or thread")
	spinReads := fs.Int("spin-reads", 0, "the pager's SpinReads: reads before parking after a fault (0: its default; -1: none)")
	gomaxprocs := fs.Int("gomaxprocs", 0, "GOMAXPROCS during the runs (0: at least faulters+1)")
	asJSON := fs.Bool("json", false, "print one JSON object with ref_handler's fields (with --ref: {\"go\",\"ref\",\"ratio\"})")
	refPath := fs.String("ref", "", "ref_handler binary `path`: alternate its runs with the Go runs and print the ratios")
	refChunk := fs.Int("ref-chunk", 0, "ref_handler's -c with --ref (default: --chunk, or a page with --prefetch adaptive)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{fmt.Sprintf("bench: unexpected argument %q", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := bench.Config{
		MiB:        *mib,
		Chunk:      *chunk,
		Faulters:   *faulters,
		Workers:    *workers,
		Runs:       *runs,
		ReadTouch:  *read,
		Random:     *random,
		SpinReads:  *spinReads,
		GOMAXPROCS: *gomaxprocs,
	}
	var err error
	if cfg.Op, err = bench.ParseOp(*op); err != nil {
		return &usageError{"bench: --" + err.Error()}
	}
	if cfg.Reader, err = bench.ParseReader(*reader); err != nil {
		return &usageError{"bench: --" + err.Error()}
	}
	switch *prefetch {
	case "fixed":
	case "adaptive":
		cfg.Adaptive = true
		if !set["chunk"] {
			cfg.Chunk = 0
		}
	default:
		return &usageError{fmt.Sprintf("bench: --prefetch %q: want fixed or adaptive", *prefetch)}
	}
	// Zero means "default" in bench.Config: reject it here, where it was typed.
	for _, f := range []struct {
		name string
		v    int
	}{{"mib", *mib}, {"chunk", *chunk}, {"faulters", *faulters}, {"workers", *workers}, {"runs", *runs}} {
		if set[f.name] && f.v == 0 {
			return &usageError{fmt.Sprintf("bench: --%s 0: want at least 1", f.name)}
		}
	}
	if err := cfg.Validate(); err != nil {
		return &usageError{"bench: " + err.Error()}
	}
	ref := bench.Ref{Path: *refPath, Chunk: *refChunk}
	switch {
	case *refPath == "" && set["ref-chunk"]:
		return &usageError{"bench: --ref-chunk without --ref"}
	case set["ref-chunk"] && *refChunk == 0:
		return &usageError{"bench: --ref-chunk 0: want at least 1"}
	case *refPath != "":
		if err := ref.Validate(cfg); err != nil {
			return &usageError{"bench: " + err.Error()}
		}
	}

	progress := func(p bench.Progress) { fmt.Fprintln(stderr, bench.ProgressLine(p)) }
	if *asJSON {
		progress = nil
	}
	if *refPath == "" {
		r, err := bench.Run(ctx, cfg, progress)
		if err != nil {
			return err
		}
		if *asJSON {
			return r.WriteJSON(stdout)
		}
		return r.WriteText(stdout)
	}
	c, err := bench.Compare(ctx, cfg, ref, progress)
	if err != nil {
		return err
	}
	if *asJSON {
		return c.WriteJSON(stdout)
	}
	return c.WriteText(stdout)
}
