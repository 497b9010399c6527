//go:build linux && cgo

package snapbench

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestRun runs both methods on a small region: the figures are there and
// the incremental snapshot saved exactly the pages written.
func TestRun(t *testing.T) {
	fs, err := Run(context.Background(), Config{Size: 64 << 20, Before: 100 * time.Millisecond, Dir: t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 {
		t.Fatalf("%d results, want 2", len(fs))
	}
	for _, f := range fs {
		t.Log(f)
		if f.Rate <= 0 || f.Ratio <= 0 || f.Duration <= 0 || f.Written != 64<<20 {
			t.Errorf("%s: figures missing: %+v", f.Method, f)
		}
	}
	if r := fs[0].IncrementalRatio; r <= 0 || r > 0.01 {
		t.Errorf("the incremental snapshot after 1%% of the pages were written wrote %.4f of the bytes", r)
	}
}
