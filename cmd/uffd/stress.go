package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/gouffd/uffd/internal/stress"
	"github.com/gouffd/uffd/mem"
)

// The stress test's locker is this program started again: it must become
// the locker before anything else runs.
func init() { stress.LockerMain() }

var stressCmd = &command{
	name:    "stress",
	args:    "TYPE MiB BOUNCES",
	summary: "the kernel's uffd-stress test on memory TYPE (anon, shmem, shmem-private, hugetlb, hugetlb-private) between two processes",
	about: `
Run the kernel's uffd-stress test (tools/testing/selftests/mm/uffd-stress.c)
between two processes: a locker process takes locks and counters in two areas
of memory TYPE, MiB each, whose faults this process serves, copying every page
in the background meanwhile; the areas swap each bounce, and every counter is
checked. The run needs memory for the source and one area (about twice MiB)
and, for the hugetlb kinds, huge pages for both areas (hugetlb-private twice
as many, for the areas' aliases): it is refused before it starts when there is
not as much available.`,
	arguments: [][2]string{
		{"TYPE", "the memory: anon, shmem, shmem-private, hugetlb or hugetlb-private"},
		{"MiB", "the size of each area in MiB, 1 to 1048576 (rounded down to whole pages per CPU)"},
		{"BOUNCES", "how many times the areas swap, at least 1 (the modes of each follow from the bounces left)"},
	},
	setup: setupStress,
}

// runStress runs `uffd stress args...`.
func runStress(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return stressCmd.execute(ctx, args, stdout, stderr)
}

func setupStress(fs *flag.FlagSet) runFunc {
	cpus := intFlag(fs, "cpus", runtime.NumCPU(), 1, 1024, "lockers, fault readers and background copiers (default: the number of CPUs)")
	fs.Lookup("cpus").DefValue = "" // the machine's: said in the usage
	noWP := fs.Bool("no-wp", false, "do not write-protect pages, even where the kernel can")
	usePager := fs.Bool("pager", false, "serve faults with package pager (background copies through Pager.Resolve; no write-protection) instead of the kernel test's handler")
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) != 3 {
			return usagef("want TYPE MiB BOUNCES; got %d arguments", len(args))
		}
		kind, err := mem.ParseKind(args[0])
		if err != nil {
			return usagef("TYPE %s: want anon, shmem, shmem-private, hugetlb or hugetlb-private", args[0])
		}
		mib, err := checkArg("MiB", args[1], 1, 1<<20)
		if err != nil {
			return usagef("%v", err)
		}
		bounces, err := checkArg("BOUNCES", args[2], 1, 0)
		if err != nil {
			return usagef("%v", err)
		}
		return stressRun(ctx, kind, mib, bounces, *cpus, *noWP, *usePager, stdout, stderr)
	}
}

func stressRun(ctx context.Context, kind mem.Kind, mib, bounces, cpus int, noWP, usePager bool, stdout, stderr io.Writer) error {
	cfg := stress.Config{
		Kind:    kind,
		Size:    mib << 20,
		Bounces: bounces,
		CPUs:    cpus,
		NoWP:    noWP,
		Stderr:  stderr,
		Progress: func(b stress.Bounce) {
			fmt.Fprintf(stdout, "bounce %d/%d, mode: %s: %d faults, %d wp faults, %d background copies, %d exists, %d increments, %v, %.0f pages/s\n",
				b.Index+1, bounces, b.Mode, b.Faults, b.WPFaults, b.Background, b.Exists, b.Increments,
				b.Duration.Round(time.Microsecond), b.PagesPerSecond())
		},
	}
	if usePager {
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
