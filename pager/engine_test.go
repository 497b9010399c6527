//go:build cgo && linux

package pager_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// threadTicks returns the CPU time (user+system, in clock ticks) that
// thread tid of this process used.
func threadTicks(t *testing.T, tid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which ends at the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return ut + st
}

func engineTicks(t *testing.T, e *pager.Engine) (total int) {
	for _, tid := range pager.EngineThreads(e) {
		total += threadTicks(t, tid)
	}
	return total
}

// TestEngineIdle: readers waiting for faults, in read(2) and in epoll,
// use no CPU.
func TestEngineIdle(t *testing.T) {
	for _, features := range []uffd.Feature{0, uffd.FeatureEventRemove} {
		t.Run(fmt.Sprint(features), func(t *testing.T) {
			e := newEngine(t, pager.EngineConfig{})
			u, m := setup(t, mem.Anonymous, 4096, features)
			p := newPager(t, u, pager.Config{Engine: e})
			add(t, p, m, pager.Image(pattern(4096)), pager.PoisonOnError)
			stop := serving(t, p)
			if load(m.Data, 0) != pattern(1)[0] {
				t.Fatal("not served")
			}
			before := engineTicks(t, e)
			time.Sleep(3 * time.Second)
			used := engineTicks(t, e) - before
			stop()
			// A tick is 10 ms; allow one for a timer interrupt landing
			// on a thread that just woke.
			if used > 1 {
				t.Errorf("idle engine threads used %d clock ticks in 3 s, want none", used)
			}
		})
	}
}

// TestEngineShared: many userfaultfds served by one engine add no
// threads, and each is served.
func TestEngineShared(t *testing.T) {
	e := newEngine(t, pager.EngineConfig{})
	tasks := func() int {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := tasks()
	const n = 24
	var maps []*mem.Mapping
	for i := range n {
		u, m := setup(t, mem.Anonymous, 16*4096, uffd.FeatureEventRemove)
		p := newPager(t, u, pager.Config{Engine: e})
		add(t, p, m, pager.Image(pattern(16*4096)), pager.PoisonOnError)
		serving(t, p)
		_ = i
		maps = append(maps, m)
	}
	img := pattern(16 * 4096)
	for _, m := range maps {
		checkAll(t, m.Data, img)
	}
	if grown := tasks() - before; grown > 4 {
		t.Errorf("serving %d userfaultfds on one engine added %d threads", n, grown)
	}
	if got, want := len(pager.EngineThreads(e)), 2*len(e.CPUs()); got != want {
		t.Errorf("the engine has %d threads, want %d (a reader and a worker per CPU)", got, want)
	}
	if err := e.Close(); err == nil {
		t.Error("Close of an engine with pagers serving succeeded")
	}
}

// TestEngineCPUs: an engine runs on the CPUs it was given, and refuses
// CPUs the process may not use.
func TestEngineCPUs(t *testing.T) {
	allowed, err := pager.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, pager.EngineConfig{CPUs: allowed[:1]})
	for _, tid := range pager.EngineThreads(e) {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(allowed[0]) {
			t.Errorf("engine thread %d may run on %d CPUs, want only CPU %d", tid, set.Count(), allowed[0])
		}
	}
	u, m := setup(t, mem.Anonymous, 64*4096, 0)
	p := newPager(t, u, pager.Config{Engine: e})
	add(t, p, m, pager.Image(pattern(64*4096)), pager.PoisonOnError)
	serving(t, p)
	checkAll(t, m.Data, pattern(64*4096))
	for _, bad := range [][]int{{-1}, {4096}, {allowed[0], allowed[0]}, {}} {
		if e, err := pager.NewEngine(pager.EngineConfig{CPUs: bad}); err == nil {
			e.Close()
			t.Errorf("NewEngine accepted CPUs %v", bad)
		}
	}
}

// TestEngineCPULeaves: when a CPU leaves the set the engine's threads may
// run on (a cpuset shrinks, taskset on the threads), its reader moves and
// goes on reading: no fault is left unread.
func TestEngineCPULeaves(t *testing.T) {
	allowed, err := pager.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		testutil.Skipf(t, "needs 2 CPUs, has %d", len(allowed))
	}
	e := newEngine(t, pager.EngineConfig{})
	const pages = 2048
	u, m := setup(t, mem.Anonymous, pages*4096, uffd.FeatureEventRemove)
	img := pattern(pages * 4096)
	p := newPager(t, u, pager.Config{Engine: e})
	add(t, p, m, pager.Image(img), pager.PoisonOnError)
	serving(t, p)
	// Every thread of the process, the engine's included, now runs on
	// the first CPU only, as when the process's cpuset shrinks.
	var one unix.CPUSet
	one.Set(allowed[0])
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var all unix.CPUSet
	for _, c := range allowed {
		all.Set(c)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		unix.SchedSetaffinity(tid, &one)
		defer unix.SchedSetaffinity(tid, &all)
	}
	within(t, "faulting every page on one CPU", func() { checkAll(t, m.Data, img) })
	for _, tid := range pager.EngineThreads(e) {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); err != nil {
			t.Errorf("engine thread %d is gone: %v", tid, err)
		}
	}
}
