//go:build !linux

package main

import (
	"context"
	"flag"
	"io"
	"runtime"

	"github.com/gouffd/uffd"
)

// setupBench: the benchmark needs Linux (userfaultfd).
func setupBench(fs *flag.FlagSet) runFunc { return runBench }

// runBench fails outside Linux: userfaultfd is Linux's.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return &uffd.NotSupportedError{What: "uffd bench", OS: runtime.GOOS}
}

// benchChild: the benchmark starts no children outside Linux.
func benchChild() (int, bool) { return 0, false }

// setupBenchFirecracker: the comparison needs Linux too.
func setupBenchFirecracker(fs *flag.FlagSet) runFunc { return runBench }

// setupBenchRemote: so does the remote images' benchmark.
func setupBenchRemote(fs *flag.FlagSet) runFunc { return runBench }
