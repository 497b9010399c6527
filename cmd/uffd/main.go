// Command uffd is the userfaultfd toolkit's command line.
//
// Usage:
//
//	uffd demo [--delay duration] N   the userfaultfd(2) example program on N pages
//	uffd features [--json]           what this kernel's userfaultfd supports
//	uffd bench [flags]               the pager against its C reference; bench firecracker
//	                                 the Firecracker handler against a C handler
//	uffd firecracker --socket path --mem-file path [flags]
//	                                 a Firecracker snapshot-restore page-fault handler
//	uffd stress [--cpus int] [--no-wp] [--pager] TYPE MiB BOUNCES
//	                                 the kernel's uffd-stress test
//	uffd bench snapshot [flags]      live snapshots against fork()
//	uffd image push|pull|stat|index|compact
//	                                 memory images in S3 and on HTTP servers; snapshot layers
//	uffd hazard [flags]              why the pager's engine is not Go's, shown
//	uffd version                     the module version and VCS revision
//
// 'uffd <command> -h' prints a command's arguments and flags. The
// subcommands are thin wiring over packages: internal/demo, features,
// internal/bench, firecracker/handler, internal/stress, remote and
// snapshot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/gouffd/uffd/features"
	"github.com/gouffd/uffd/internal/demo"
	"github.com/gouffd/uffd/mem"
)

func main() {
	// A child of `uffd bench` (a faulting process, a test VM) runs its own
	// program.
	if code, ok := benchChild(); ok {
		os.Exit(code)
	}
	if code, ok := hazardChild(); ok {
		os.Exit(code)
	}
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

// run runs the command line args (without the program name). It reports
// every error on stderr and returns it, to set the exit status; a usage
// error also prints the usage of the subcommand it is in (or the
// top-level one). A cancelled ctx (SIGINT, SIGTERM) stops the command and
// is not an error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, stdout, stderr)
	var ue *usageError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		return nil
	case errors.As(err, &ue):
		u := topUsage()
		if ue.cmd != nil {
			u = ue.cmd.usage()
		}
		fmt.Fprintf(stderr, "uffd: %v\n\n%s", err, u)
		return err
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return nil
	}
	fmt.Fprintf(stderr, "uffd: %v\n", err)
	return err
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{msg: "no command given"}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			if c := lookup(rest[0]); c != nil {
				fmt.Fprint(stdout, c.usage())
				return nil
			}
			return &usageError{msg: fmt.Sprintf("help: unknown command %q", rest[0])}
		}
		fmt.Fprint(stdout, topUsage())
		return nil
	case "-version", "--version":
		name = "version"
	}
	if c := lookup(name); c != nil {
		return c.execute(ctx, rest, stdout, stderr)
	}
	return &usageError{msg: fmt.Sprintf("unknown command %q", name)}
}

var demoCmd = &command{
	name:    "demo",
	args:    "N",
	summary: "the userfaultfd(2) example program: map N pages, serve their page faults from a second goroutine, and print what both sides see",
	about: `
Run the example program of userfaultfd(2): map N pages of anonymous memory,
register them, read from each page (every read of a new page faults), serve
the faults from a second goroutine with UFFDIO_COPY, and print what both sides
see, as the C program does.`,
	arguments: [][2]string{{"N", "the number of pages: decimal, 0x hex or 0 octal, at least 1"}},
	setup: func(fs *flag.FlagSet) runFunc {
		delay := durationFlag(fs, "delay", demo.DefaultDelay, 0, "pause after each read, as the C program does")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 1 {
				return usagef("want one argument, N, the number of pages; got %d", len(args))
			}
			// Like the C program's strtoul(argv[1], NULL, 0):
			// decimal, 0x hex or 0 octal.
			n, err := checkArg("N", args[0], 1, 0)
			if err != nil {
				return usagef("%v", err)
			}
			if n > int(^uint(0)>>1)/mem.PageSize() {
				return usagef("N %s: more pages than an address space holds", args[0])
			}
			return demo.Run(ctx, stdout, demo.Config{Pages: n, Delay: *delay})
		}
	},
}

// runDemo runs `uffd demo args...`.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return demoCmd.execute(ctx, args, stdout, stderr)
}

var featuresCmd = &command{
	name:    "features",
	summary: "what this kernel's userfaultfd supports: open paths, API, features, ioctls, and which registration modes work on which kind of memory",
	about: `
Report what this kernel's userfaultfd supports for this process: which ways of
creating one work (and why the others do not), the API version, every feature
and ioctl, the range ioctls of each memory kind in each registration mode, page
sizes, huge pages and the vm.unprivileged_userfaultfd sysctl.`,
	setup: func(fs *flag.FlagSet) runFunc {
		asJSON := fs.Bool("json", false, "print one JSON object (field names: see package features)")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 0 {
				return usagef("unexpected argument %q", args[0])
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
	},
}

var versionCmd = &command{
	name:    "version",
	summary: "the module version and VCS revision this uffd was built from (also --version)",
	about: `
Print the module version and the VCS revision this program was built from
(from its build information; a build outside a VCS checkout, or with
-buildvcs=false, has no revision), and the Go version that built it.`,
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 0 {
				return usagef("unexpected argument %q", args[0])
			}
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				return errors.New("version: no build information in this program")
			}
			_, err := io.WriteString(stdout, versionText(bi))
			return err
		}
	},
}

// versionText describes a build: module version, VCS revision, Go.
func versionText(bi *debug.BuildInfo) string {
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	version := bi.Main.Version
	if version == "" {
		version = "(unknown)"
	}
	path := bi.Main.Path
	if path == "" {
		path = bi.Path
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "uffd %s (module %s)\n", version, path)
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&sb, "revision %s", rev)
		var notes []string
		if t := settings["vcs.time"]; t != "" {
			notes = append(notes, "committed "+t)
		}
		if settings["vcs.modified"] == "true" {
			notes = append(notes, "with uncommitted changes")
		}
		if len(notes) > 0 {
			fmt.Fprintf(&sb, " (%s)", strings.Join(notes, ", "))
		}
		sb.WriteString("\n")
	} else {
		sb.WriteString("revision unknown (not built in a VCS checkout, or built with -buildvcs=false)\n")
	}
	fmt.Fprintf(&sb, "built with %s for %s/%s\n", bi.GoVersion, settings["GOOS"], settings["GOARCH"])
	return sb.String()
}
