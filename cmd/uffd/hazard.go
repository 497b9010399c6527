//go:build linux

package main

import (
	"context"
	"flag"
	"io"
	"time"

	"github.com/gouffd/uffd/internal/hazard"
)

// hazardChild runs this process as a child of `uffd hazard` when it was
// started as one.
func hazardChild() (int, bool) {
	if !hazard.IsChild() {
		return 0, false
	}
	return hazard.ChildMain(), true
}

var hazardCmd = &command{
	name:    "hazard",
	summary: "show why the pager's engine is not Go's: the process's own faults, served by a goroutine, hang a garbage collection; served by the engine, they do not",
	about: `
Show the Go runtime hazard that decides the pager's design. Goroutines read
a served region page by page through copy, bytes.Equal and append (faults
inside runtime assembly, where a goroutine cannot be preempted) while
another calls runtime.GC in a loop, in a child process: served by a
goroutine (the library used simply: ReadMessages, then Copy), a collection's
stop-the-world waits for a reader that waits for the handler, which the
stop-the-world has stopped: the process hangs, and is reported so once it
has made no progress for --stall, and killed. Served by the pager's engine,
whose threads are not Go's, every round finishes.`,
	setup: func(fs *flag.FlagSet) runFunc {
		mib := intFlag(fs, "mib", 64, 1, 4096, "the region's size in MiB")
		stall := durationFlag(fs, "stall", 5*time.Second, 100*time.Millisecond, "how long a child may make no progress before it is reported hung")
		rounds := intFlag(fs, "rounds", 3, 1, 100, "rounds of each handler at most (the goroutine handler stops at its first hang)")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 0 {
				return usagef("unexpected argument %q", args[0])
			}
			_, err := hazard.Run(ctx, stdout, hazard.Config{MiB: *mib, Stall: *stall, Rounds: *rounds})
			return err
		}
	},
}
