//go:build !linux || !cgo

package main

import (
	"context"
	"io"

	"github.com/gouffd/uffd"
)

func runBenchSnapshot(context.Context, []string, io.Writer, io.Writer) error {
	return &uffd.NotSupportedError{What: "uffd bench snapshot (it needs cgo, on Linux)"}
}

func runImageCompact(context.Context, []string, io.Writer, io.Writer) error {
	return &uffd.NotSupportedError{What: "uffd image compact (it needs Linux)"}
}
