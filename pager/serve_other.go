//go:build !linux

package pager

import (
	"context"
	"runtime"

	"github.com/gouffd/uffd"
)

// Serve fails outside Linux with an error matching uffd.ErrNotSupported.
func (p *Pager) Serve(ctx context.Context) error {
	return &uffd.NotSupportedError{What: "pager", OS: runtime.GOOS}
}
