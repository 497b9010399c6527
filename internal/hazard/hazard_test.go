//go:build linux

package hazard

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gouffd/uffd/internal/testutil"
)

func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(ChildMain())
	}
	os.Exit(testutil.Main(m))
}

// TestRun: the engine finishes every round; the goroutine handler either
// hangs (it does most rounds, and then it is reported so and killed) or
// finishes, and both outcomes are reported in words.
func TestRun(t *testing.T) {
	var sb strings.Builder
	out, err := Run(context.Background(), &sb, Config{MiB: 16, Stall: 3 * time.Second, Rounds: 2, Exe: os.Args[0], Args: []string{"-test.run=^$"}})
	if err != nil {
		t.Fatal(err)
	}
	engine := 0
	for _, o := range out {
		if o.Err != nil {
			t.Errorf("%v", o)
		}
		if o.Handler == Engine {
			engine++
			if o.Hung || o.Pages != 16<<20/os.Getpagesize() {
				t.Errorf("the engine did not serve every page: %v", o)
			}
		}
	}
	if engine != 2 {
		t.Errorf("%d engine rounds, want 2:\n%s", engine, sb.String())
	}
	t.Logf("\n%s", sb.String())
}
