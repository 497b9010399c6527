//go:build linux

package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/mem"
)

// The default-size huge page pool is one per machine, and the test
// binaries of `go test ./...` run in parallel: each process that uses huge
// pages holds an exclusive flock(2) on one lock file from the moment it
// counts what is available until its last user of huge pages is done,
// raises vm.nr_hugepages by what it lacks and lowers it by as much
// afterwards. The lock file records the raise while it lasts, so that the
// next holder undoes the raise of a process that died holding the lock.

// NrHugepages is the sysctl of the default-size huge page pool.
const NrHugepages = "/proc/sys/vm/nr_hugepages"

// HugePageLockPath returns the lock file that test processes share around
// their use of huge pages: in /run/lock when it exists, otherwise in the
// temporary directory.
func HugePageLockPath() string {
	dir := "/run/lock"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() || unix.Access(dir, unix.W_OK) != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "uffd-test-hugepages.lock")
}

// hugePool is this process's share of the pool.
var hugePool pool

type pool struct {
	mu     sync.Mutex
	lock   *os.File // held while users > 0
	users  int      // reservations not yet released
	need   int      // pages they need in total
	base   int      // pages available when the lock was taken
	raised int      // pages this process added to vm.nr_hugepages
}

// ReserveHugePages makes n default-size huge pages available to the test,
// beyond what the process's other current reservations take, until the
// test ends; it shares the pool with other test processes (see
// HugePageLockPath), raising vm.nr_hugepages by what is missing and
// lowering it by as much once the process's last reservation ends, whether
// the tests pass or fail. The test skips through Skipf, naming the reason,
// when the kernel has no huge pages, the sysctl cannot be written, or the
// kernel cannot find the memory.
//
// n counts pages as the kernel reserves them: a private hugetlb mapping
// with its shared alias takes two per page (see ReserveHugePagesFor).
func ReserveHugePages(tb testing.TB, n int) {
	tb.Helper()
	if n <= 0 {
		return
	}
	if _, err := mem.HugePageSize(); err != nil {
		Skipf(tb, "no huge pages: the kernel has no hugetlbfs (CONFIG_HUGETLBFS): %v", err)
	}
	p := &hugePool
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.users == 0 {
		if err := p.acquire(tb); err != nil {
			tb.Fatalf("huge pages: %v", err)
		}
	}
	p.users++
	p.need += n
	tb.Cleanup(func() { p.release(tb, n) })

	if short := p.need - (p.base + p.raised); short > 0 {
		got, err := p.raise(short)
		p.raised += got
		p.record(tb)
		switch {
		case err != nil:
			Skipf(tb, "needs %d huge pages available, and this process's tests %d in all; cannot raise %s by %d: %v", n, p.need, NrHugepages, short, err)
		case got < short:
			Skipf(tb, "needs %d huge pages available, and this process's tests %d in all; raising %s by %d, the kernel found memory for %d", n, p.need, NrHugepages, short, got)
		}
	}
	// Another process that does not take the lock may have taken pages.
	if _, avail, err := mem.HugePages(); err != nil {
		tb.Fatalf("huge pages: %v", err)
	} else if avail < n {
		Skipf(tb, "needs %d huge pages available, %d are (a process that does not take %s uses the pool)", n, avail, HugePageLockPath())
	}
}

// ReserveHugePagesFor reserves (ReserveHugePages) the huge pages that
// mem.Map takes for a mapping of size bytes of kind: none unless the kind
// is a hugetlb kind (see mem.HugePagesFor).
func ReserveHugePagesFor(tb testing.TB, kind mem.Kind, size int) {
	tb.Helper()
	if !kind.Huge() {
		return
	}
	n, err := mem.HugePagesFor(kind, size)
	if err != nil {
		Skipf(tb, "no huge pages: the kernel has no hugetlbfs (CONFIG_HUGETLBFS): %v", err)
	}
	ReserveHugePages(tb, n)
}

// acquire takes the lock shared by the test processes, undoes a raise that
// a process which died holding it left, and counts what is available.
func (p *pool) acquire(tb testing.TB) error {
	path := HugePageLockPath()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if errors.Is(err, os.ErrPermission) {
		// Another user's lock file: flock works on a read-only
		// descriptor, and a process that may not write it may not
		// raise the pool either.
		f, err = os.Open(path)
	}
	if err != nil {
		return fmt.Errorf("open the lock %s: %w", path, err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err == unix.EWOULDBLOCK {
		b, _ := os.ReadFile(path)
		tb.Logf("waiting for %s, held by another test process (%s)", path, strings.TrimSpace(string(b)))
		t0 := time.Now()
		err = flock(f, unix.LOCK_EX)
		tb.Logf("took %s after %v", path, time.Since(t0).Round(time.Millisecond))
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("flock %s: %w", path, err)
	}
	p.lock = f
	if pid, raised, ok := readRecord(f); ok && raised > 0 {
		// The holder is gone (the lock is ours) and never lowered the
		// pool: do it for it.
		if err := addHugepages(-raised); err != nil {
			tb.Logf("lower %s by the %d pages that process %d left: %v", NrHugepages, raised, pid, err)
		} else {
			tb.Logf("lowered %s by the %d pages that process %d raised it by and left", NrHugepages, raised, pid)
		}
		writeRecord(f, 0)
	}
	_, avail, err := mem.HugePages()
	if err != nil {
		p.unlock()
		return err
	}
	p.base, p.raised, p.need = avail, 0, 0
	return nil
}

// release ends one reservation of n pages; the last one lowers the pool by
// what this process raised it by and drops the lock.
func (p *pool) release(tb testing.TB, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users--
	p.need -= n
	if p.users > 0 {
		return
	}
	if p.raised > 0 {
		if err := addHugepages(-p.raised); err != nil {
			tb.Errorf("lower %s by the %d huge pages the tests added: %v", NrHugepages, p.raised, err)
		}
	}
	p.raised = 0
	writeRecord(p.lock, 0)
	p.unlock()
}

func (p *pool) unlock() {
	p.lock.Close() // drops the flock
	p.lock = nil
}

// raise adds up to n pages to the pool and returns how many it added.
func (p *pool) raise(n int) (int, error) {
	before, err := readHugepages()
	if err != nil {
		return 0, err
	}
	werr := writeHugepages(before + n)
	after, err := readHugepages()
	if err != nil {
		return 0, err
	}
	got := max(after-before, 0)
	if werr != nil && got == 0 {
		return 0, werr
	}
	return got, nil
}

// record writes this process's raise into the lock file.
func (p *pool) record(tb testing.TB) {
	if err := writeRecord(p.lock, p.raised); err != nil {
		tb.Logf("record the raise in %s: %v", p.lock.Name(), err)
	}
}

func writeRecord(f *os.File, raised int) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if raised == 0 {
		return nil
	}
	_, err := f.WriteAt([]byte(fmt.Sprintf("pid %d raised %s by %d\n", os.Getpid(), NrHugepages, raised)), 0)
	return err
}

func readRecord(f *os.File) (pid, raised int, ok bool) {
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	var path string
	if _, err := fmt.Sscanf(string(b[:n]), "pid %d raised %s by %d", &pid, &path, &raised); err != nil || path != NrHugepages {
		return 0, 0, false
	}
	return pid, raised, true
}

// addHugepages changes vm.nr_hugepages by delta.
func addHugepages(delta int) error {
	n, err := readHugepages()
	if err != nil {
		return err
	}
	return writeHugepages(max(n+delta, 0))
}

func readHugepages() (int, error) {
	b, err := os.ReadFile(NrHugepages)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func writeHugepages(n int) error {
	return os.WriteFile(NrHugepages, []byte(strconv.Itoa(n)), 0)
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
