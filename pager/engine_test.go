//go:build cgo && linux

package pager_test

import (
	"context"
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

// TestEngineIdle: readers waiting for faults, in poll(2) and in epoll,
// use no CPU (in read(2) without spinning: TestEngineSpin).
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

// TestEngineSpin: after a fault, readers spin for EngineConfig.Spin (they
// use CPU), then block (they use none); with a negative Spin they block at
// once. In read(2) and in epoll.
func TestEngineSpin(t *testing.T) {
	const spin = 400 * time.Millisecond
	for _, features := range []uffd.Feature{0, uffd.FeatureEventRemove} {
		for _, cfg := range []pager.EngineConfig{{Spin: spin}, {Spin: -1}} {
			t.Run(fmt.Sprint(features, cfg.Spin), func(t *testing.T) {
				e := newEngine(t, cfg)
				if want := max(cfg.Spin, 0); e.Spin() != want {
					t.Fatalf("Spin() = %v, want %v", e.Spin(), want)
				}
				u, m := setup(t, mem.Anonymous, 4096, features)
				p := newPager(t, u, pager.Config{Engine: e})
				add(t, p, m, pager.Image(pattern(4096)), pager.PoisonOnError)
				stop := serving(t, p)
				defer stop()
				before := engineTicks(t, e)
				if load(m.Data, 0) != pattern(1)[0] {
					t.Fatal("not served")
				}
				time.Sleep(spin * 3 / 4)
				during := engineTicks(t, e) - before
				t.Logf("%d clock ticks in the %v after a fault", during, spin*3/4)
				// A tick is 10 ms. Spinning readers yield to every other
				// thread, so on a busy machine they get only their share.
				if cfg.Spin > 0 && during < 2 {
					t.Errorf("readers used %d clock ticks in the %v after a fault with Spin %v, want them spinning", during, spin*3/4, cfg.Spin)
				}
				if cfg.Spin < 0 && during > 1 {
					t.Errorf("readers used %d clock ticks in the %v after a fault with Spin %v, want none", during, spin*3/4, cfg.Spin)
				}
				time.Sleep(spin/4 + 200*time.Millisecond)
				before = engineTicks(t, e)
				time.Sleep(time.Second)
				if after := engineTicks(t, e) - before; after > 1 {
					t.Errorf("readers used %d clock ticks in 1 s from %v after the last fault, want none", after, spin+200*time.Millisecond)
				}
			})
		}
	}
}

// TestEngineSpinDefault: a zero Spin is DefaultSpin.
func TestEngineSpinDefault(t *testing.T) {
	if got := newEngine(t, pager.EngineConfig{}).Spin(); got != pager.DefaultSpin {
		t.Errorf("Spin() = %v, want DefaultSpin %v", got, pager.DefaultSpin)
	}
}

// TestEngineSpinYields: readers do not spin while Go installs pages
// (Resolve here), even right after a fault: Go's threads need the CPUs.
func TestEngineSpinYields(t *testing.T) {
	e := newEngine(t, pager.EngineConfig{Spin: time.Second})
	u, m := setup(t, mem.Anonymous, 2*4096, 0)
	p := newPager(t, u, pager.Config{Engine: e})
	add(t, p, m, pager.Image(pattern(2*4096)), pager.PoisonOnError)
	stop := serving(t, p)
	defer stop()
	if load(m.Data, 0) != pattern(1)[0] {
		t.Fatal("not served")
	}
	before := engineTicks(t, e)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		if err := p.Resolve(context.Background(), m.Addr()+4096, 4096); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	if used := engineTicks(t, e) - before; used > 2 {
		t.Errorf("readers used %d clock ticks in 300 ms of Resolve calls after a fault, want them blocked", used)
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
