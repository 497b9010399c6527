package testutil

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Mallocs calls fn ten times to warm it up (the runtime makes the threads
// and structures that blocking calls need on their first uses), then runs
// more times, and returns exactly how many heap allocations the process
// made during those runs (the change in runtime.MemStats.Mallocs, less
// what reading the statistics itself allocates). Like testing.AllocsPerRun it runs with
// GOMAXPROCS at 1; unlike it, it does not divide: testing.AllocsPerRun
// reads 199 allocations in 200 runs as 0 per run.
//
// The count is the whole process's: before measuring, Mallocs collects
// garbage and waits (up to a second) until nothing allocates for a
// moment, so that finalizers and goroutines left by earlier tests are not
// counted.
func Mallocs(runs int, fn func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for range 10 {
		fn()
	}
	settle()
	var before, start, end runtime.MemStats
	runtime.ReadMemStats(&before)
	runtime.ReadMemStats(&start)
	for range runs {
		fn()
	}
	runtime.ReadMemStats(&end)
	measuring := start.Mallocs - before.Mallocs
	n := end.Mallocs - start.Mallocs
	if n < measuring {
		return 0
	}
	return n - measuring
}

// settle collects garbage and waits until the process allocates nothing
// for a few milliseconds, or a second has passed.
func settle() {
	deadline := time.Now().Add(time.Second)
	var a, b runtime.MemStats
	for {
		runtime.GC()
		runtime.ReadMemStats(&a)
		time.Sleep(5 * time.Millisecond)
		runtime.ReadMemStats(&b)
		if b.Mallocs == a.Mallocs || time.Now().After(deadline) {
			return
		}
	}
}

// NoAllocs fails the test unless runs calls of fn (after warm-up calls)
// allocate nothing at all, counted exactly (Mallocs). On failure it runs
// fn as many times again with every allocation profiled and reports where
// they were made.
func NoAllocs(tb testing.TB, what string, runs int, fn func()) {
	tb.Helper()
	if n := Mallocs(runs, fn); n != 0 {
		tb.Errorf("%s: %d heap allocations in %d runs, want none%s", what, n, runs, allocSites(runs, fn))
	}
}

// allocSites runs fn runs times with runtime.MemProfileRate at 1 and
// describes the stacks that allocated.
func allocSites(runs int, fn func()) string {
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	before := memProfile()
	func() {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
		for range runs {
			fn()
		}
	}()
	after := memProfile()
	type site struct {
		n     int64
		stack string
	}
	var sites []site
	for k, n := range after {
		if strings.Contains(k, "internal/testutil.memProfile") {
			continue // the profile's own
		}
		if d := n - before[k]; d > 0 {
			sites = append(sites, site{d, k})
		}
	}
	if len(sites) == 0 {
		return " (none seen when profiled: another goroutine's, or the runtime's)"
	}
	slices.SortFunc(sites, func(a, b site) int { return int(b.n - a.n) })
	var sb strings.Builder
	sb.WriteString("; allocated, when profiled, at:")
	for i, s := range sites {
		if i == 5 {
			fmt.Fprintf(&sb, "\n(and %d more sites)", len(sites)-i)
			break
		}
		fmt.Fprintf(&sb, "\n%d objects:\n%s", s.n, s.stack)
	}
	return sb.String()
}

// memProfile returns the objects allocated so far per stack. The profile
// is published by garbage collections: two make it current.
func memProfile() map[string]int64 {
	runtime.GC()
	runtime.GC()
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	out := map[string]int64{}
	for _, r := range recs {
		var sb strings.Builder
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			fmt.Fprintf(&sb, "\t%s\n\t\t%s:%d\n", f.Function, f.File, f.Line)
			if !more {
				break
			}
		}
		out[sb.String()] += r.AllocObjects
	}
	return out
}
