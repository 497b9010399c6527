// Command uffd is the userfaultfd toolkit's command line.
//
// Usage:
//
//	uffd demo [-delay d] N      the userfaultfd(2) example program on N pages
//	uffd features [--json]      what this kernel's userfaultfd supports
//	uffd bench [flags]          the pager against ref_handler.c's workload
//	uffd firecracker [flags]    a Firecracker snapshot-restore page-fault handler
//	uffd stress TYPE MiB N      the kernel's uffd-stress test, N bounces
//	uffd image push|pull|stat|index  memory images in S3 and on HTTP servers
//	uffd image compact -o OUT LAYER... fold snapshot layers into one
//	uffd bench snapshot [flags]       live snapshots against fork()
//
// The subcommands are thin wiring over packages: internal/demo,
// features, bench, firecracker/handler, stress and remote.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/gouffd/uffd/features"
	"github.com/gouffd/uffd/internal/demo"
	"github.com/gouffd/uffd/mem"
)

const usage = `Usage: uffd <command> [arguments]

Commands:
  demo [-delay d] N     run the userfaultfd(2) example program: map N pages,
                        serve their page faults from a second goroutine, and
                        print what both sides see (-delay: pause between
                        reads, default 100ms as in the C program)
  features [--json]     report what this kernel's userfaultfd supports: open
                        paths, API, features, ioctls, and which registration
                        modes work on which kind of memory
  bench [flags]         measure the pager on ref_handler.c's workload (a
                        private anonymous region touched page by page);
                        --ref PATH runs the C reference in the same run and
                        prints the ratios
  bench snapshot [flags]
                        live snapshots (package snapshot) against fork():
                        writers' longest stall, throughput, duration, memory
  firecracker --socket PATH --mem-file FILE [flags]
                        serve the guest memory of Firecracker microVMs
                        restored from a snapshot (its UFFD backend)
  stress TYPE MiB BOUNCES
                        the kernel's uffd-stress test on memory TYPE (anon,
                        shmem, shmem-private, hugetlb, hugetlb-private)
  image push|pull|stat|index
                        memory images in S3 (s3://BUCKET/KEY) and on HTTP
                        servers: upload with an index of zero chunks and
                        checksums, download, describe
  image compact -o OUT LAYER...
                        fold a chain of snapshot layers into one

Run 'uffd <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		os.Exit(1)
	}
}

// errUsage marks errors in the command line (exit status 2).
var errUsage = errors.New("usage")

type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == errUsage }

// run runs the command line args (without the program name). It reports
// every error on stderr and returns it, to set the exit status; a usage
// error also prints the usage. A cancelled ctx (SIGINT, SIGTERM) stops the
// command and is not an error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, stdout, stderr)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return nil
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "uffd: %v\n\n%s", err, usage)
		return err
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil
	}
	fmt.Fprintf(stderr, "uffd: %v\n", err)
	return err
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{"no command given"}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "demo":
		return runDemo(ctx, rest, stdout, stderr)
	case "features":
		return runFeatures(rest, stdout, stderr)
	case "bench":
		if len(rest) > 0 && rest[0] == "snapshot" {
			return runBenchSnapshot(ctx, rest[1:], stdout, stderr)
		}
		return runBench(ctx, rest, stdout, stderr)
	case "firecracker":
		return runFirecracker(ctx, rest, stdout, stderr)
	case "stress":
		return runStress(ctx, rest, stdout, stderr)
	case "image":
		return runImage(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return &usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
}

// newFlags makes a subcommand's flag set. Errors come back to run, which
// prints them with the usage; -h prints the flags (see parse).
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stderr, "Usage of uffd %s:\n", fs.Name())
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return err
	}
	return &usageError{fs.Name() + ": " + err.Error()}
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo")
	delay := fs.Duration("delay", demo.DefaultDelay, "pause after each read")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{fmt.Sprintf("demo: want one argument, the number of pages; got %d", fs.NArg())}
	}
	// Like the C program's strtoul(argv[1], NULL, 0): decimal, 0x hex or
	// 0 octal.
	n, err := strconv.ParseInt(fs.Arg(0), 0, 64)
	switch {
	case err != nil:
		return &usageError{fmt.Sprintf("demo: %q is not a number of pages", fs.Arg(0))}
	case n <= 0:
		return &usageError{fmt.Sprintf("demo: %d pages: want at least 1", n)}
	case n > int64(^uint(0)>>1)/int64(mem.PageSize()):
		return &usageError{fmt.Sprintf("demo: %d pages: too many", n)}
	case *delay < 0:
		return &usageError{fmt.Sprintf("demo: negative delay %v", *delay)}
	}
	return demo.Run(ctx, stdout, demo.Config{Pages: int(n), Delay: *delay})
}

func runFeatures(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("features")
	asJSON := fs.Bool("json", false, "print one JSON object (field names: see package features)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{fmt.Sprintf("features: unexpected argument %q", fs.Arg(0))}
	}
	r, collectErr := features.Collect()
	var err error
	if *asJSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	return errors.Join(collectErr, err)
}
