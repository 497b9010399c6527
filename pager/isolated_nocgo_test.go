//go:build linux && !cgo

package pager_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// Without cgo there is no isolated engine: Serve says so.
func TestIsolatedNeedsCgo(t *testing.T) {
	u, m := setup(t, mem.Anonymous, 64<<10, 0)
	p := pager.New(u, pager.Config{Isolated: true})
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Zero(64 << 10)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Serve(context.Background()); !errors.Is(err, pager.ErrNoIsolation) {
		t.Fatalf("Serve: %v, want ErrNoIsolation", err)
	}
}
