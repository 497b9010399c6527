//go:build !linux || !cgo

package main

import (
	"context"
	"flag"
	"io"
	"runtime"

	"github.com/gouffd/uffd"
)

func notSupported(what string) func(fs *flag.FlagSet) runFunc {
	return func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return &uffd.NotSupportedError{What: what + " (it needs cgo, on Linux)", OS: runtime.GOOS}
		}
	}
}

var benchSnapshotCmd = &command{name: "bench snapshot", summary: "live snapshots against fork() (Linux, cgo)", setup: notSupported("uffd bench snapshot")}

var imageCompactCmd = &command{name: "image compact", args: "LAYER...", summary: "fold a chain of snapshot layers into one (Linux, cgo)", setup: notSupported("uffd image compact")}
