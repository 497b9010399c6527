//go:build !linux

package stress

import (
	"context"
	"runtime"

	"github.com/gouffd/uffd"
)

// Run fails outside Linux with an error matching uffd.ErrNotSupported.
func Run(ctx context.Context, cfg Config) (Result, error) {
	return Result{}, &uffd.NotSupportedError{What: "userfaultfd stress test", OS: runtime.GOOS}
}

// LockerMain returns at once outside Linux.
func LockerMain() {}
