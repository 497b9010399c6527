//go:build !linux

package main

import (
	"context"
	"errors"
	"io"
	"runtime"
)

// runFirecracker: the Firecracker handler needs Linux (userfaultfd).
func runFirecracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("firecracker: userfaultfd is Linux-only (this is " + runtime.GOOS + ")")
}
