//go:build !linux

package main

import (
	"context"
	"io"
	"runtime"

	"github.com/gouffd/uffd"
)

// runBench fails outside Linux: userfaultfd is Linux's.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return &uffd.NotSupportedError{What: "uffd bench", OS: runtime.GOOS}
}

// benchChild: the benchmark starts no children outside Linux.
func benchChild() (int, bool) { return 0, false }
