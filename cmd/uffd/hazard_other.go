//go:build !linux

package main

import (
	"context"
	"flag"
	"io"
	"runtime"

	"github.com/gouffd/uffd"
)

func hazardChild() (int, bool) { return 0, false }

var hazardCmd = &command{
	name:    "hazard",
	summary: "show why the pager's engine is not Go's (Linux only)",
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return &uffd.NotSupportedError{What: "uffd hazard", OS: runtime.GOOS}
		}
	},
}
