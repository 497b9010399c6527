//go:build !linux

package testutil

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/gouffd/uffd/mem"
)

// NrHugepages is the sysctl of the default-size huge page pool.
const NrHugepages = "/proc/sys/vm/nr_hugepages"

// HugePageLockPath returns the lock file that test processes share around
// their use of huge pages.
func HugePageLockPath() string { return filepath.Join(os.TempDir(), "uffd-test-hugepages.lock") }

// ReserveHugePages skips the test outside Linux: hugetlbfs is Linux's.
func ReserveHugePages(tb testing.TB, n int) {
	tb.Helper()
	if n > 0 {
		Skipf(tb, "no huge pages: hugetlbfs is Linux-only (this is %s)", runtime.GOOS)
	}
}

// ReserveHugePagesFor skips the test outside Linux for the hugetlb kinds.
func ReserveHugePagesFor(tb testing.TB, kind mem.Kind, size int) {
	tb.Helper()
	if kind.Huge() {
		ReserveHugePages(tb, 1)
	}
}
