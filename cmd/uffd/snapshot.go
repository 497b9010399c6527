//go:build linux && cgo

package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gouffd/uffd/snapshot"
	"github.com/gouffd/uffd/snapshot/snapbench"
)

// runBenchSnapshot is `uffd bench snapshot`: live snapshots (package
// snapshot) against fork() with a child writing its copy out.
func runBenchSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench snapshot")
	size := fs.String("size", "4GiB", "memory to snapshot (a multiple of 2 MiB)")
	writers := fs.Int("writers", 2, "goroutines updating random 8-byte words, each on its own thread")
	dir := fs.String("dir", "", "directory of the images, removed after each run (default: the temporary directory)")
	thp := fs.Bool("thp", false, "transparent huge pages (MADV_HUGEPAGE) instead of 4 KiB pages")
	methods := fs.String("methods", "uffd,fork", "comma-separated: uffd (package snapshot), fork (fork() and a child writing)")
	runs := fs.Int("runs", 1, "runs of each method; with more than one, medians are printed too")
	before := fs.Duration("before", time.Second, "how long the writers' throughput is measured before each snapshot")
	buffer := fs.String("buffer", "64MiB", "the snapshot's bounded buffer of copied pages")
	block := fs.String("block", "64KiB", "bytes a write fault saves around its page")
	dirty := fs.Float64("dirty", 0.01, "fraction of the pages written before the incremental snapshot")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{fmt.Sprintf("bench snapshot: unexpected argument %q", fs.Arg(0))}
	}
	cfg := snapbench.Config{Writers: *writers, Dir: *dir, THP: *thp, Methods: strings.Split(*methods, ","), Runs: *runs, Before: *before, Dirty: *dirty}
	var err error
	for _, f := range []struct {
		name string
		s    string
		dst  *int64
	}{{"size", *size, &cfg.Size}} {
		if *f.dst, err = parseByteSize(f.s); err != nil {
			return &usageError{"bench snapshot: --" + f.name + ": " + err.Error()}
		}
	}
	if cfg.Size <= 0 || cfg.Size%(2<<20) != 0 {
		return &usageError{fmt.Sprintf("bench snapshot: --size %s: want a positive multiple of 2 MiB", *size)}
	}
	b, err := parseByteSize(*buffer)
	if err != nil {
		return &usageError{"bench snapshot: --buffer: " + err.Error()}
	}
	k, err := parseByteSize(*block)
	if err != nil {
		return &usageError{"bench snapshot: --block: " + err.Error()}
	}
	cfg.Buffer, cfg.Block = int(b), int(k)
	_, err = snapbench.Run(ctx, cfg, stdout)
	return err
}

// runImageCompact is `uffd image compact`: fold a chain of snapshot
// layers (a full one and its diffs, oldest first) into one full layer.
func runImageCompact(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image compact")
	out := fs.String("o", "", "the compacted layer's `path` (required)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		return &usageError{"image compact: want -o OUT and the chain's layers, the full one first"}
	}
	h, err := snapshot.Compact(*out, fs.Args()...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: full layer %v of %d bytes, from %d layers\n", *out, h.ID, h.Size, fs.NArg())
	return nil
}
