package testutil

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// SetGOMAXPROCS sets GOMAXPROCS to n for the rest of the test and restores
// the old value when the test ends, whether it passes or fails.
func SetGOMAXPROCS(tb testing.TB, n int) {
	tb.Helper()
	old := runtime.GOMAXPROCS(n)
	tb.Cleanup(func() { runtime.GOMAXPROCS(old) })
}

// WriteSysctl writes value to the sysctl file path (under /proc/sys) for
// the rest of the test and writes the old value back when the test ends,
// whether it passes or fails. It skips the test through Skipf when the
// sysctl is missing or cannot be written.
func WriteSysctl(tb testing.TB, path, value string) {
	tb.Helper()
	old, err := os.ReadFile(path)
	if err != nil {
		Skipf(tb, "no sysctl %s: %v", path, err)
	}
	prev := strings.TrimSpace(string(old))
	if prev == value {
		return
	}
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		Skipf(tb, "cannot set %s to %s (needs root): %v", path, value, err)
	}
	tb.Cleanup(func() {
		if err := os.WriteFile(path, []byte(prev), 0); err != nil {
			tb.Errorf("restore %s to %s: %v", path, prev, err)
		}
	})
}
