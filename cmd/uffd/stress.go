package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/stress"
)

// The stress test's locker is this program started again: it must become
// the locker before anything else runs.
func init() { stress.LockerMain() }

// runStress runs `uffd stress [flags] <memory-type> <MiB> <bounces>`.
func runStress(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stress")
	usePager := fs.Bool("pager", false, "serve faults with package pager (no write-protection) instead of the kernel test's handler")
	cpus := fs.Int("cpus", 0, "lockers, fault readers and background copiers (default: the number of CPUs)")
	noWP := fs.Bool("no-wp", false, "do not write-protect pages even where the kernel can")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		return &usageError{fmt.Sprintf("stress: want <memory-type> <MiB> <bounces>; got %d arguments", fs.NArg())}
	}
	kind, err := mem.ParseKind(fs.Arg(0))
	if err != nil {
		return &usageError{"stress: " + err.Error()}
	}
	mib, err := strconv.Atoi(fs.Arg(1))
	if err != nil || mib <= 0 || mib > 1<<20 {
		return &usageError{fmt.Sprintf("stress: %q is not a size in MiB (1 to 1048576)", fs.Arg(1))}
	}
	bounces, err := strconv.Atoi(fs.Arg(2))
	if err != nil || bounces <= 0 {
		return &usageError{fmt.Sprintf("stress: %q is not a number of bounces (at least 1)", fs.Arg(2))}
	}
	if *cpus < 0 {
		return &usageError{fmt.Sprintf("stress: -cpus %d: want at least 1", *cpus)}
	}
	cfg := stress.Config{
		Kind:    kind,
		Size:    mib << 20,
		Bounces: bounces,
		CPUs:    *cpus,
		NoWP:    *noWP,
		Stderr:  stderr,
		Progress: func(b stress.Bounce) {
			fmt.Fprintf(stdout, "bounce %d/%d, mode: %s: %d faults, %d wp faults, %d background copies, %d exists, %d increments, %v, %.0f pages/s\n",
				b.Index+1, bounces, b.Mode, b.Faults, b.WPFaults, b.Background, b.Exists, b.Increments,
				b.Duration.Round(time.Microsecond), b.PagesPerSecond())
		},
	}
	if *usePager {
		cfg.Server = stress.ServePager
	}
	res, err := stress.Run(ctx, cfg)
	if err != nil {
		return err
	}
	wp := "on"
	if !res.WP {
		wp = "off"
	}
	fmt.Fprintf(stdout, "%s, %d MiB, %d bounces, %d CPUs, %s server, write-protect %s: %d pages of %d bytes per area; %d pages served in %v: %.0f pages/s (%.1f MiB/s); every counter verified\n",
		res.Kind, mib, len(res.Bounces), res.CPUs, res.Server, wp, res.Pages, res.PageSize,
		res.Served(), res.Duration().Round(time.Millisecond), res.PagesPerSecond(),
		res.PagesPerSecond()*float64(res.PageSize)/(1<<20))
	return nil
}
