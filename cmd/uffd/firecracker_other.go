//go:build !linux

package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"runtime"
)

// setupFirecracker: the Firecracker handler needs Linux (userfaultfd).
func setupFirecracker(fs *flag.FlagSet) runFunc { return runFirecracker }

func runFirecracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("firecracker: userfaultfd is Linux-only (this is " + runtime.GOOS + ")")
}
