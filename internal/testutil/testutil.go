// Package testutil holds what the project's tests share: skips that name
// the missing privilege or kernel feature (and fail where everything is
// required), huge-page reservation shared by parallel test processes, exact
// allocation counts, faults taken inside system calls, machine state
// restored after a test, and leak checks for descriptors and goroutines.
package testutil

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

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
