// Package testutil holds what the project's tests share: skips that name
// the missing privilege or kernel feature, huge-page reservation, and leak
// checks for descriptors and goroutines.
package testutil

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gouffd/uffd/mem"
)

const nrHugepages = "/proc/sys/vm/nr_hugepages"

// ReserveHugePages makes sure at least n default-size huge pages are free,
// raising vm.nr_hugepages if needed, and restores the old setting when the
// test ends. It skips the test, naming the reason, when huge pages are not
// available or the pool cannot be raised (no privilege, or the kernel could
// not find the memory).
func ReserveHugePages(tb testing.TB, n int) {
	tb.Helper()
	if _, err := mem.HugePageSize(); err != nil {
		tb.Skipf("kernel has no hugetlbfs (CONFIG_HUGETLBFS): %v", err)
	}
	total, free, err := mem.HugePages()
	if err != nil {
		tb.Fatalf("read huge page pool: %v", err)
	}
	if free >= n {
		return
	}
	old, err := os.ReadFile(nrHugepages)
	if err != nil {
		tb.Fatalf("read %s: %v", nrHugepages, err)
	}
	want := total + (n - free)
	if err := os.WriteFile(nrHugepages, []byte(strconv.Itoa(want)), 0); err != nil {
		tb.Skipf("need %d free huge pages, have %d, and cannot raise %s (needs root): %v", n, free, nrHugepages, err)
	}
	tb.Cleanup(func() {
		if err := os.WriteFile(nrHugepages, []byte(strings.TrimSpace(string(old))), 0); err != nil {
			tb.Errorf("restore %s: %v", nrHugepages, err)
		}
	})
	if _, free, _ = mem.HugePages(); free < n {
		tb.Skipf("need %d free huge pages; the kernel found memory for only %d", n, free)
	}
}

// RequireRoot skips a test that needs root (CAP_SYS_ADMIN and friends).
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root")
	}
}

func fuzzing() bool {
	f := flag.Lookup("test.fuzz")
	return f != nil && f.Value.String() != ""
}

// FdCount counts the open descriptors of this process.
func FdCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// Main runs the tests and then fails the run if descriptors or goroutines
// leaked. Use it from TestMain: os.Exit(testutil.Main(m)).
func Main(m *testing.M) int {
	// Start the runtime's poller first: its descriptors live for good.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	fds := FdCount()
	goroutines := runtime.NumGoroutine()
	code := m.Run()
	if code != 0 || fuzzing() {
		// The fuzzing engine keeps goroutines and descriptors of its own.
		return code
	}
	// Let finished goroutines exit and unreachable files be finalized.
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		nfd, ng := FdCount(), runtime.NumGoroutine()
		if nfd <= fds && ng <= goroutines {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "leak check: %d descriptors open (%d before the tests), %d goroutines (%d before)\n", nfd, fds, ng, goroutines)
			if ng > goroutines {
				buf := make([]byte, 1<<20)
				fmt.Fprintf(os.Stderr, "%s\n", buf[:runtime.Stack(buf, true)])
			}
			if nfd > fds {
				ents, _ := os.ReadDir("/proc/self/fd")
				for _, e := range ents {
					link, _ := os.Readlink("/proc/self/fd/" + e.Name())
					fmt.Fprintf(os.Stderr, "fd %s -> %s\n", e.Name(), link)
				}
			}
			return 1
		}
		time.Sleep(50 * time.Millisecond)
	}
}
