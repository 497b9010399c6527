package testutil_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(reserveChild())
	}
	os.Exit(testutil.Main(m))
}

// fakeTB records what a helper does to a test: run it with runTB.
type fakeTB struct {
	testing.TB // nil: a method the helpers should not call panics
	name       string
	mu         sync.Mutex
	failed     bool
	skipped    bool
	logs       []string
	cleanups   []func()
}

func (f *fakeTB) Helper()      {}
func (f *fakeTB) Name() string { return f.name }
func (f *fakeTB) Failed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }
func (f *fakeTB) log(s string) { f.mu.Lock(); f.logs = append(f.logs, s); f.mu.Unlock() }
func (f *fakeTB) Logf(format string, args ...any) {
	f.log(fmt.Sprintf(format, args...))
}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.log(fmt.Sprintf(format, args...))
	f.mu.Lock()
	f.failed = true
	f.mu.Unlock()
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.Errorf(format, args...); runtime.Goexit() }
func (f *fakeTB) Fatal(args ...any)                 { f.Errorf("%s", fmt.Sprint(args...)); runtime.Goexit() }
func (f *fakeTB) Skip(args ...any) {
	f.log(fmt.Sprint(args...))
	f.mu.Lock()
	f.skipped = true
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, args ...any) { f.Skip(fmt.Sprintf(format, args...)) }
func (f *fakeTB) Cleanup(fn func())                { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }

// runTB runs fn as a test on a fakeTB in its own goroutine, then its
// cleanups, last first, as package testing does.
func runTB(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{name: "fake"}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	return f
}

func (f *fakeTB) String() string { return strings.Join(f.logs, "; ") }

func TestSkipf(t *testing.T) {
	for _, tc := range []struct {
		env                string
		wantSkip, wantFail bool
		wantIn             string
	}{
		{"", true, false, "kernel lacks X"},
		{"all", false, true, "UFFD_TEST_REQUIRE=all"},
		{"al", false, true, `UFFD_TEST_REQUIRE="al": want all`},
	} {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(testutil.RequireEnv, tc.env)
			ran := false
			f := runTB(func(tb testing.TB) {
				testutil.Skipf(tb, "kernel lacks %s", "X")
				ran = true
			})
			if ran || f.skipped != tc.wantSkip || f.failed != tc.wantFail || !strings.Contains(f.String(), tc.wantIn) || !strings.Contains(f.String(), "kernel lacks X") {
				t.Errorf("UFFD_TEST_REQUIRE=%q: went on %v, skipped %v, failed %v, said %q; want skipped %v, failed %v, saying %q",
					tc.env, ran, f.skipped, f.failed, f, tc.wantSkip, tc.wantFail, tc.wantIn)
			}
		})
	}
}

// restingHugepages reads vm.nr_hugepages holding the lock that test
// processes take around their use of the pool, so that no participant's
// raise is in it.
func restingHugepages(t *testing.T) int {
	t.Helper()
	f, err := os.Open(testutil.HugePageLockPath())
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(testutil.HugePageLockPath(), os.O_RDWR|os.O_CREATE, 0o666)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(testutil.NrHugepages)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mapHuge maps size bytes of kind and touches every page, from the test's
// own goroutine (nothing is registered).
func mapHuge(tb testing.TB, kind mem.Kind, size int) {
	tb.Helper()
	m, err := mem.Map(kind, size)
	if err != nil {
		tb.Fatalf("map %d bytes of %v: %v", size, kind, err)
	}
	tb.Cleanup(func() { m.Close() })
	for i := range m.Pages() {
		m.Page(i)[0] = 1
		if m.Alias != nil {
			m.Alias[i*m.PageSize] = 2
		}
	}
}

// TestReserveHugePages reserves what a private hugetlb mapping and its
// alias take (twice the mapping's pages), maps and touches it, and checks
// that the pool is left as it was found, also when the test fails.
func TestReserveHugePages(t *testing.T) {
	testutil.RequireRoot(t)
	hps, err := mem.HugePageSize()
	if err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	before := restingHugepages(t)
	for _, fail := range []bool{false, true} {
		f := runTB(func(tb testing.TB) {
			testutil.ReserveHugePagesFor(tb, mem.HugetlbPrivate, 3*hps)
			if _, avail, err := mem.HugePages(); err != nil || avail < 6 {
				tb.Fatalf("after reserving 6 huge pages: %d available (%v)", avail, err)
			}
			// A second reservation of the same process adds to the first.
			testutil.ReserveHugePages(tb, 2)
			mapHuge(tb, mem.HugetlbPrivate, 3*hps)
			mapHuge(tb, mem.Hugetlb, 2*hps)
			if fail {
				tb.Fatalf("failing on purpose")
			}
		})
		if f.skipped || f.failed != fail {
			t.Errorf("reserve and map (failing: %v): skipped %v, failed %v: %s", fail, f.skipped, f.failed, f)
		}
		if after := restingHugepages(t); after != before {
			t.Errorf("vm.nr_hugepages %d after the test (failing: %v), %d before", after, fail, before)
		}
	}
}

// TestReserveHugePagesParallel starts test processes that each reserve
// and map huge pages at the same time, as the packages of `go test ./...`
// do: every one must get its pages, and the pool ends as it began.
func TestReserveHugePagesParallel(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := mem.HugePageSize(); err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	before := restingHugepages(t)
	const procs = 4
	var wg sync.WaitGroup
	outs := make([]string, procs)
	errs := make([]error, procs)
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(i+1))
			b, err := cmd.CombinedOutput()
			outs[i], errs[i] = string(b), err
		}()
	}
	wg.Wait()
	for i := range procs {
		if errs[i] != nil || !strings.Contains(outs[i], "mapped") {
			t.Errorf("process %d: %v\n%s", i, errs[i], outs[i])
		}
	}
	if after := restingHugepages(t); after != before {
		t.Errorf("vm.nr_hugepages %d after the processes, %d before", after, before)
	}
}

const childEnv = "TESTUTIL_RESERVE_CHILD"

// TestReserveHugePagesAfterCrash: a process that raised the pool and died
// without lowering it leaves its raise in the lock file; the next process
// to take the lock lowers the pool by as much.
func TestReserveHugePagesAfterCrash(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := mem.HugePageSize(); err != nil {
		testutil.Skipf(t, "no hugetlbfs: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	before := restingHugepages(t)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=die")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "reserved") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	f := runTB(func(tb testing.TB) { testutil.ReserveHugePages(tb, 1) })
	if f.failed || f.skipped {
		t.Fatalf("reserve after the crash: %s", f)
	}
	if after := restingHugepages(t); after != before {
		t.Errorf("vm.nr_hugepages %d after a crashed process and the next reservation, %d before (logged: %s)", after, before, f)
	}
}

// reserveChild is a process of TestReserveHugePagesParallel: it reserves
// and maps a private hugetlb mapping of $TESTUTIL_RESERVE_CHILD pages.
func reserveChild() int {
	if os.Getenv(childEnv) == "die" {
		// Reserve and die without the test's cleanups, as a test
		// binary killed by -timeout does.
		runTB(func(tb testing.TB) {
			testutil.ReserveHugePages(tb, 3)
			fmt.Println("reserved")
			os.Exit(0)
		})
		return 1
	}
	pages, _ := strconv.Atoi(os.Getenv(childEnv))
	hps, err := mem.HugePageSize()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	f := runTB(func(tb testing.TB) {
		testutil.ReserveHugePagesFor(tb, mem.HugetlbPrivate, pages*hps)
		mapHuge(tb, mem.HugetlbPrivate, pages*hps)
		time.Sleep(20 * time.Millisecond)
		fmt.Println("mapped", pages)
	})
	if f.failed || f.skipped {
		fmt.Println(f)
		return 1
	}
	return 0
}

// TestMallocsExact: one allocation every other run, which AllocsPerRun
// reads as none.
func TestMallocsExact(t *testing.T) {
	var keep []*[64]byte
	i := 0
	fn := func() {
		if i%2 == 0 {
			keep = append(keep[:0], new([64]byte))
		}
		i++
	}
	keep = make([]*[64]byte, 0, 1)
	if per := testing.AllocsPerRun(200, fn); per != 0 {
		t.Logf("AllocsPerRun: %v (it truncates; this test expects 0 from it)", per)
	}
	if n := testutil.Mallocs(200, fn); n != 100 {
		t.Errorf("Mallocs = %d, want 100 (one every other run of 200)", n)
	}
	if n := testutil.Mallocs(200, func() {}); n != 0 {
		t.Errorf("Mallocs of an empty function = %d, want 0", n)
	}
	f := runTB(func(tb testing.TB) { testutil.NoAllocs(tb, "every other run", 200, fn) })
	if !f.failed || !strings.Contains(f.String(), "100 heap allocations in 200 runs") || !strings.Contains(f.String(), "TestMallocsExact") {
		t.Errorf("NoAllocs of one allocation every other run: failed %v, said %q; want a failure naming the count and the allocating function", f.failed, f)
	}
	if f := runTB(func(tb testing.TB) { testutil.NoAllocs(tb, "nothing", 200, func() {}) }); f.failed {
		t.Errorf("NoAllocs of an empty function failed: %s", f)
	}
}

// served registers pages of anonymous memory with a userfaultfd served by
// a goroutine (each fault filled with its page number + 1) and returns the
// memory and the messages read, when the test ends.
func served(t *testing.T, pages int, features uffd.Feature) (*mem.Mapping, *uffd.UFFD, func() []uffd.Message) {
	t.Helper()
	u, err := uffd.Open(uffd.Config{Features: features})
	if err != nil {
		testutil.Skipf(t, "no userfaultfd: %v", err)
	}
	t.Cleanup(func() { u.Close() })
	m, err := mem.Map(mem.Anonymous, pages*mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var msgs []uffd.Message
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]uffd.Message, 16)
		page := make([]byte, m.PageSize)
		for {
			n, err := u.ReadMessages(ctx, buf)
			if err != nil {
				return
			}
			for _, msg := range buf[:n] {
				mu.Lock()
				msgs = append(msgs, msg)
				mu.Unlock()
				i := int(msg.Address-m.Addr()) / m.PageSize
				for j := range page {
					page[j] = byte(i + 1)
				}
				if _, err := u.Copy(m.PageAddr(i), page, 0); errors.Is(err, uffd.ErrPageExists) {
					u.Wake(m.PageAddr(i), uintptr(m.PageSize))
				}
			}
		}
	}()
	stop := func() []uffd.Message {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return msgs
	}
	t.Cleanup(func() { stop() })
	return m, u, stop
}

// TestKernelFaults: the helpers' faults reach the handler, as read or
// write faults, and the bytes come back.
func TestKernelFaults(t *testing.T) {
	m, _, stop := served(t, 3, 0)
	if b, err := testutil.KernelLoad(m.Page(0), 5); err != nil || b != 1 {
		t.Errorf("KernelLoad = %d, %v; want 1 (page 0 served)", b, err)
	}
	if err := testutil.KernelStore(m.Page(1), 7, 0xee); err != nil {
		t.Errorf("KernelStore: %v", err)
	}
	out, err := testutil.KernelCopyOut(m.Page(2))
	if err != nil || len(out) != m.PageSize || out[0] != 3 || out[len(out)-1] != 3 {
		t.Errorf("KernelCopyOut: %d bytes, %v", len(out), err)
	}
	got, err := testutil.KernelCopyOut(m.Data)
	if err != nil || got[m.PageSize+7] != 0xee || got[m.PageSize+8] != 2 || got[0] != 1 {
		t.Errorf("page 1 after KernelStore: %v, %v", got[m.PageSize+6:m.PageSize+9], err)
	}
	msgs := stop()
	if len(msgs) < 3 {
		t.Fatalf("%d faults, want 3", len(msgs))
	}
	for i, msg := range msgs[:3] {
		write := msg.Flags&uffd.FaultWrite != 0
		if msg.Address&^uintptr(m.PageSize-1) != m.PageAddr(i) || write != (i == 1) {
			t.Errorf("fault %d: %v; want a %s fault on page %d", i, msg, map[bool]string{false: "read", true: "write"}[i == 1], i)
		}
	}
}

// TestKernelFaultsGC faults page after page through the helpers while
// another goroutine collects garbage in a loop: a fault taken inside a
// system call does not hold up a stop-the-world, so nothing hangs.
func TestKernelFaultsGC(t *testing.T) {
	const pages = 2048
	m, _, _ := served(t, pages, 0)
	stopGC := make(chan struct{})
	gcDone := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopGC:
				gcDone <- n
				return
			default:
				runtime.GC()
				n++
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		for i := range pages {
			p := m.Page(i)
			if i%2 == 0 {
				if b, err := testutil.KernelLoad(p, i%len(p)); err != nil || b != byte(i+1) {
					done <- fmt.Errorf("page %d: KernelLoad %d, %v", i, b, err)
					return
				}
			} else if _, err := testutil.KernelCopyOut(p); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("faults taken inside system calls hung under garbage collection")
	}
	close(stopGC)
	t.Logf("%d pages faulted during %d garbage collections", pages, <-gcDone)
}

// TestKernelFaultsUserModeOnly: with UserModeOnly the kernel refuses
// kernel-mode faults, and the helpers say so.
func TestKernelFaultsUserModeOnly(t *testing.T) {
	u, err := uffd.Open(uffd.Config{UserModeOnly: true})
	if err != nil {
		testutil.Skipf(t, "no user-mode-only userfaultfd: %v", err)
	}
	defer u.Close()
	m, err := mem.Map(mem.Anonymous, mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.KernelLoad(m.Data, 0); !errors.Is(err, unix.EFAULT) || !strings.Contains(err.Error(), "write(2)") {
		t.Errorf("KernelLoad of a user-mode-only page: %v, want EFAULT from write(2)", err)
	}
}

func TestSetGOMAXPROCS(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	f := runTB(func(tb testing.TB) {
		testutil.SetGOMAXPROCS(tb, before+3)
		if got := runtime.GOMAXPROCS(0); got != before+3 {
			tb.Errorf("GOMAXPROCS %d, want %d", got, before+3)
		}
		tb.Fatalf("failing on purpose")
	})
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS %d after a failed test, %d before", got, before)
	}
	if !strings.Contains(f.String(), "on purpose") || strings.Contains(f.String(), "want") {
		t.Errorf("fake test said %q", f)
	}
}

// TestWriteSysctl: the old value is written back when the test ends,
// also when it fails (a file stands in for the sysctl).
func TestWriteSysctl(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sysctl")
	if err := os.WriteFile(path, []byte("3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := runTB(func(tb testing.TB) {
		testutil.WriteSysctl(tb, path, "5")
		if b, _ := os.ReadFile(path); string(b) != "5" {
			tb.Errorf("sysctl reads %q during the test, want 5", b)
		}
		tb.Fatalf("failing on purpose")
	})
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != "3" || f.skipped {
		t.Errorf("sysctl reads %q after a failed test, want 3 (skipped %v: %s)", b, f.skipped, f)
	}
	t.Setenv(testutil.RequireEnv, "") // a skip here is the point
	f = runTB(func(tb testing.TB) { testutil.WriteSysctl(tb, filepath.Join(t.TempDir(), "none"), "1") })
	if !f.skipped || !strings.Contains(f.String(), "no sysctl") {
		t.Errorf("a missing sysctl: skipped %v, said %q", f.skipped, f)
	}
}
