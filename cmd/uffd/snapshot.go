//go:build linux && cgo

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gouffd/uffd/snapshot"
	"github.com/gouffd/uffd/snapshot/snapbench"
)

var benchSnapshotCmd = &command{
	name:    "bench snapshot",
	summary: "live snapshots (package snapshot) against fork() with a child writing its copy out, as Redis BGSAVE does: writers' longest stall, throughput, duration, extra memory, and an incremental snapshot",
	about: `
Take snapshots of memory that writer goroutines update at random 8-byte
words, at full speed: (a) with package snapshot (write-protect, copy before
write), (b) with fork() and a child writing its copy out, as Redis BGSAVE
does. Report the writers' longest stall, their throughput during the snapshot
against before it, the snapshot's duration and the peak extra memory, and,
for package snapshot, the bytes an incremental snapshot saves after a
fraction of the pages was written.`,
	setup: func(fs *flag.FlagSet) runFunc {
		size := sizeFlag(fs, "size", 4<<30, 2<<20, 1<<40, 2<<20, "memory to snapshot, a multiple of 2MiB")
		writers := intFlag(fs, "writers", 2, 1, 64, "goroutines updating random 8-byte words, each on its own thread")
		dir := stringFlag(fs, "dir", "", "path", "the directory of the images, removed after each run (default: the temporary directory)")
		thp := fs.Bool("thp", false, "transparent huge pages (MADV_HUGEPAGE) instead of 4KiB pages")
		methods := stringFlag(fs, "methods", "uffd,fork", "list", "uffd (package snapshot), fork (fork() and a child writing), or both")
		runs := intFlag(fs, "runs", 1, 1, 99, "runs of each method; with more than one, medians are printed too")
		before := durationFlag(fs, "before", time.Second, time.Millisecond, "how long the writers' throughput is measured before each snapshot")
		buffer := sizeFlag(fs, "buffer", 64<<20, 1<<20, 1<<40, 4096, "the snapshot's bounded buffer of copied pages")
		block := sizeFlag(fs, "block", 64<<10, 4096, 64<<20, 4096, "bytes a write fault saves around its page")
		dirty := fs.Float64("dirty", 0.01, "the fraction of the pages written before the incremental snapshot")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 0 {
				return usagef("unexpected argument %q", args[0])
			}
			if *dirty <= 0 || *dirty > 1 {
				return usagef("--dirty %v: want more than 0, at most 1", *dirty)
			}
			cfg := snapbench.Config{Size: int64(*size), Writers: *writers, Dir: *dir, THP: *thp, Methods: strings.Split(*methods, ","),
				Runs: *runs, Before: *before, Dirty: *dirty, Buffer: *buffer, Block: *block}
			_, err := snapbench.Run(ctx, cfg, stdout)
			return err
		}
	},
}

var imageCompactCmd = &command{
	name:      "image compact",
	args:      "LAYER...",
	summary:   "fold a chain of snapshot layers (a full one and its diffs, oldest first) into one full layer",
	arguments: [][2]string{{"LAYER...", "the chain's layer files, the full one first"}},
	required:  []string{"o"},
	setup: func(fs *flag.FlagSet) runFunc {
		out := stringFlag(fs, "o", "", "path", "the compacted layer (required)")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if *out == "" || len(args) == 0 {
				return usagef("want -o OUT and the chain's layers, the full one first")
			}
			h, err := snapshot.Compact(*out, args...)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: full layer %v of %d bytes, from %d layers\n", *out, h.ID, h.Size, len(args))
			return nil
		}
	},
}
