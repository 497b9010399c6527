//go:build linux

package noncoop

// The pager as a monitor in another process: it serves a helper's memory
// and follows the helper's layout through events, and the helper's forked
// children through FORK events.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// layoutEvents are the events the pager follows.
const layoutEvents = uffd.FeatureEventRemap | uffd.FeatureEventRemove | uffd.FeatureEventUnmap

// servePager runs p until the test ends, failing the test if Serve fails.
func servePager(t testing.TB, p *pager.Pager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(hangTimeout):
			t.Errorf("Serve did not return after its context ended")
		}
	})
}

func newPager(t testing.TB, u *uffd.UFFD, cfg pager.Config) *pager.Pager {
	t.Helper()
	p, err := pager.New(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// errorLog collects the errors a pager reports.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *errorLog) list() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.errs)
}

// TestPagerFollowsFork runs the events scenario with the pager as the
// monitor: the helper faults in a quarter of its range, then forks. The
// child's pager (Config.OnFork) has the parent's layout and knows which
// pages the child inherited: only the others fault. The child then moves
// the range (REMAP: the bookkeeping moves), releases it (REMOVE: the next
// faults get zeroes) and unmaps the upper half (UNMAP: the region shrinks).
func TestPagerFollowsFork(t *testing.T) {
	forKinds(t, 3*4, func(t *testing.T, kind mem.Kind) {
		features := uffd.FeatureEventFork | layoutEvents | kindFeatures(kind, false)
		requireFeatures(t, features)
		pages := pagesFor(kind, 32, 4)
		pre := max(1, pages/4)
		split := (pages + 1) / 2
		h := startHelper(t)
		u, l := h.setup(kind, pages, features, uffd.ModeMissing)

		var errs errorLog
		forked := make(chan *pager.Pager, 1)
		p := newPager(t, u, pager.Config{OnFork: func(c *pager.Pager) { forked <- c }, OnError: errs.add})
		if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), PageSize: l.PageSize, Source: pager.Image(patternImage(pages, l.PageSize)), Name: "area"}); err != nil {
			t.Fatal(err)
		}
		servePager(t, p)

		first := make([]int, pre)
		for i := range first {
			first[i] = i
		}
		if r := h.do(command{Op: "touch", List: first, Check: true}); r.Bad != "" {
			t.Fatalf("helper's own pages: %s", r.Bad)
		}
		wait := h.start(command{Op: "fork", Prog: progEvents, Advice: releaseAdvice(kind), UnmapTop: true})
		var child *pager.Pager
		select {
		case child = <-forked:
		case <-time.After(hangTimeout):
			t.Fatal("no pager for the child")
		}
		defer child.UFFD().Close()
		servePager(t, child)
		r := wait.wait(0)
		if r.Status != 0 || r.Signal != 0 {
			t.Fatalf("child exited with status %d, signal %d: %v", r.Status, r.Signal, r.Res)
		}
		if r.Res.progress != uint64(2*pages) {
			t.Errorf("child checked %d pages, want %d", r.Res.progress, 2*pages)
		}

		// The child waits in munmap until the UNMAP is read, which comes
		// before the pager applies it: allow a moment.
		want := []pager.Region{{Start: l.Target, Len: uintptr(split * l.PageSize)}}
		var got []pager.Region
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
			got = child.Regions()
			if sameLayout(got, want) || time.Now().After(deadline) {
				break
			}
		}
		if !sameLayout(got, want) {
			t.Errorf("child's regions %v, want the lower half at the mremap target: %v", layoutString(got), layoutString(want))
		}
		if pr := p.Regions(); !sameLayout(pr, []pager.Region{{Start: l.Area, Len: uintptr(l.Len)}}) {
			t.Errorf("parent's regions changed with the child's layout: %v", layoutString(pr))
		}
		ps, cs := p.Stats(), child.Stats()
		if ps.Forks != 1 || ps.Pages != uint64(pre) {
			t.Errorf("parent: %d forks, %d pages served; want 1 fork and %d pages", ps.Forks, ps.Pages, pre)
		}
		if cs.Remaps != 1 || cs.Removes != 1 || cs.Unmaps < 1 {
			t.Errorf("child: %d remaps, %d removes, %d unmaps; want 1, 1 and at least 1", cs.Remaps, cs.Removes, cs.Unmaps)
		}
		if cs.Zeroed != uint64(pages) {
			t.Errorf("child: %d pages zero-filled after the release, want %d", cs.Zeroed, pages)
		}
		if served := cs.Pages - cs.Zeroed; served != uint64(pages-pre) {
			t.Errorf("child: %d pages served from the source, want %d (the %d inherited ones are the child's already)", served, pages-pre, pre)
		}
		if e := errs.list(); len(e) > 0 {
			t.Errorf("pager reported %v", e)
		}
	})
}

// TestPagerServesChildByDefault: without OnFork, Serve serves the child
// itself.
func TestPagerServesChildByDefault(t *testing.T) {
	features := uffd.FeatureEventFork | layoutEvents
	requireFeatures(t, features)
	const pages = 8
	h := startHelper(t)
	u, l := h.setup(mem.Anonymous, pages, features, uffd.ModeMissing)
	p := newPager(t, u, pager.Config{})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: pager.Image(patternImage(pages, l.PageSize))}); err != nil {
		t.Fatal(err)
	}
	servePager(t, p)
	r := h.do(command{Op: "fork", Prog: progTouch, Lo: 0, Hi: pages})
	if r.Status != 0 || r.Signal != 0 || r.Res.progress != pages {
		t.Fatalf("child: status %d, signal %d: %v", r.Status, r.Signal, r.Res)
	}
	if s := p.Stats(); s.Forks != 1 {
		t.Errorf("%d forks counted, want 1", s.Forks)
	}
}

// TestPagerEventWaitsForMonitor checks that the process that raises an
// event sleeps until the monitor reads it, and no longer: madvise and
// mremap return once the pager serves.
func TestPagerEventWaitsForMonitor(t *testing.T) {
	requireFeatures(t, layoutEvents)
	for _, tc := range []struct {
		name string
		cmd  command
	}{
		{"remove", command{Op: "madvise", Len: mem.PageSize(), Advice: unix.MADV_DONTNEED}},
		{"remap", command{Op: "mremap"}},
		{"unmap", command{Op: "munmap", Len: mem.PageSize()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHelper(t)
			u, l := h.setup(mem.Anonymous, 4, layoutEvents, uffd.ModeMissing)
			p := newPager(t, u, pager.Config{})
			if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: pager.Image(patternImage(4, l.PageSize))}); err != nil {
				t.Fatal(err)
			}
			wait := h.start(tc.cmd)
			if !pollPending(t, u, hangTimeout) {
				t.Fatal("no event pending")
			}
			time.Sleep(50 * time.Millisecond)
			if wait.done() {
				t.Fatalf("%s returned before its event was read", tc.name)
			}
			servePager(t, p)
			wait.wait(0)
			// The process resumes once the event is read, a moment
			// before the pager applies and counts it.
			var s pager.Stats
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if s = p.Stats(); s.Removes+s.Remaps+s.Unmaps > 0 {
					break
				}
			}
			if s.Removes+s.Remaps+s.Unmaps == 0 {
				t.Errorf("the pager counted no event: %+v", s)
			}
		})
	}
}

// pollPending waits up to d for a message to be pending on u.
func pollPending(t *testing.T, u *uffd.UFFD, d time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if hasPending(t, u) {
			return true
		}
	}
	return false
}

// blockingSource returns a source of the pattern whose first read of page
// 0 signals started and then waits for release.
func blockingSource(pages, psize int) (src pager.Source, started, release chan struct{}) {
	img := patternImage(pages, psize)
	started, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	src = pager.Func(int64(len(img)), func(p []byte, off int64) error {
		if off == 0 {
			once.Do(func() {
				close(started)
				<-release
			})
		}
		copy(p, img[off:])
		return nil
	})
	return src, started, release
}

// TestPagerRemapRace checks that a copy chosen for an address before the
// process moved the range never lands at the old address. A thread of the
// helper faults on page 0; while the pager reads that page from a slow
// source, the helper moves the range away (a second worker reads the
// REMAP) and maps new registered memory at the old address. Then the
// source answers. The moved page must be served at its new address, and
// the faulting thread, woken, must see the new memory (zeroes), not the
// moved range's page.
func TestPagerRemapRace(t *testing.T) {
	testLayoutRace(t, command{Op: "mremap"})
}

// TestPagerUnmapRace is TestPagerRemapRace with munmap in place of the
// move.
func TestPagerUnmapRace(t *testing.T) {
	testLayoutRace(t, command{Op: "munmap", Len: 4 * mem.PageSize()})
}

// testLayoutRace runs the race with change (mremap or munmap). The
// faulting thread blocks signals: a fault interrupted by a signal is taken
// again, and a retry between the change and the new mapping would die of
// SIGSEGV (rightly, but the test could then not tell).
func testLayoutRace(t *testing.T, change command) {
	requireFeatures(t, layoutEvents)
	const pages = 4
	h := startHelper(t)
	u, l := h.setup(mem.Anonymous, pages, layoutEvents, uffd.ModeMissing)
	src, started, release := blockingSource(pages, l.PageSize)
	var errs errorLog
	p := newPager(t, u, pager.Config{OnError: errs.add})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: src, Name: "old"}); err != nil {
		t.Fatal(err)
	}
	servePager(t, p)
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	h.do(command{Op: "touchasync", List: []int{0}, Quiet: true})
	select {
	case <-started:
	case <-time.After(hangTimeout):
		t.Fatal("the fault never reached the source")
	}
	h.do(change)
	h.do(command{Op: "mapat", Len: l.Len})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: pager.Zero(int64(l.Len)), Name: "new"}); err != nil {
		t.Fatalf("adding the new memory at the old address: %v (layout %v)", err, layoutString(p.Regions()))
	}
	close(release)
	released = true

	r := waitShort(t, h, "the faulting thread")
	if r.Fault[0] {
		t.Fatalf("the faulting thread got a memory fault; the new memory at its address is mapped and served")
	}
	if r.Vals[0] != 0 {
		t.Errorf("the faulting thread reads %#x at the old address, want 0 from the new memory: a copy for the %s range landed in the memory mapped after it (pattern of page 0: %#x; pager errors: %v)",
			r.Vals[0], change.Op, pattern(0, 0), errs.list())
	}
	if change.Op == "mremap" {
		r := doShort(t, h, command{Op: "touch", Target: true, List: []int{0, 1, 2, 3}, Check: true}, "a thread reading the moved range")
		if r.Bad != "" {
			t.Errorf("moved range at its new address: %s", r.Bad)
		}
	}
}

// TestPagerRemapWakesWaiter: a fault waits on a slow source while the
// process moves the range. The engine reads the REMAP at once (the source
// is read by Go, off the fault path); when the source answers, the copy
// must not land at the old address, which holds nothing since the move,
// and the faulting thread must be woken (and die of SIGSEGV there, as
// without userfaultfd), not left waiting for ever.
func TestPagerRemapWakesWaiter(t *testing.T) {
	requireFeatures(t, layoutEvents)
	const pages = 4
	h := startHelper(t)
	u, l := h.setup(mem.Anonymous, pages, layoutEvents, uffd.ModeMissing)
	src, started, release := blockingSource(pages, l.PageSize)
	p := newPager(t, u, pager.Config{})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: src}); err != nil {
		t.Fatal(err)
	}
	servePager(t, p)

	h.do(command{Op: "touchasync", List: []int{0}, Quiet: true})
	select {
	case <-started:
	case <-time.After(hangTimeout):
		close(release)
		t.Fatal("the fault never reached the source")
	}
	moved := h.start(command{Op: "mremap"})
	moved.wait(0) // the helper's mremap returns once the REMAP was read
	if st := p.Stats(); st.Remaps != 1 {
		t.Errorf("Remaps = %d after the mremap returned, want 1", st.Remaps)
	}
	close(release)
	r := waitShort(t, h, "the thread faulting at the moved range's old address")
	if !r.Fault[0] {
		t.Errorf("the faulting thread read %#x at an address that holds nothing since the move", r.Vals[0])
	}
	if r := doShort(t, h, command{Op: "touch", Target: true, List: []int{0, 1, 2, 3}, Check: true}, "a thread reading the moved range"); r.Bad != "" {
		t.Errorf("moved range at its new address: %s", r.Bad)
	}
}

// shortWait bounds waits for what the pager should do within
// milliseconds (serve a fault, wake a thread) or within a few seconds
// (notice that a child process is gone).
const shortWait = 5 * time.Second

// waitShort waits for the helper's async touches, failing after shortWait.
func waitShort(t *testing.T, h *proc, what string) reply {
	t.Helper()
	return doShort(t, h, command{Op: "wait"}, what)
}

// doShort runs a command, failing the test with what if the reply does
// not come within shortWait: for commands that wait on a fault the code
// under test may never serve.
func doShort(t *testing.T, h *proc, c command, what string) reply {
	t.Helper()
	pd := h.start(c)
	for deadline := time.Now().Add(shortWait); !pd.done(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is still waiting %v later: never served or woken\n%s", what, shortWait, h.stacks())
		}
	}
	return pd.wait(0)
}

// TestPagerPageDroppedWithoutEvent: pages can leave a registered range
// without a REMOVE event: a hole punched through another mapping of the
// same file (as here), fallocate(2) or ftruncate(2) on it, MADV_FREE pages
// reclaimed. A fault there is a missing page whatever the bookkeeping
// says: the pager must install a page, not only wake the thread (which
// would fault again at once, for ever). The page was dropped by the
// process, and what the kernel gives for a dropped page is zeroes (the
// hole reads as zeroes through the other mapping too): so does the pager,
// never the source's old contents.
func TestPagerPageDroppedWithoutEvent(t *testing.T) {
	features := layoutEvents | uffd.FeatureMissingShmem
	requireFeatures(t, features)
	const pages = 4
	h := startHelper(t)
	u, l := h.setup(mem.Shmem, pages, features, uffd.ModeMissing)
	p := newPager(t, u, pager.Config{})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: pager.Image(patternImage(pages, l.PageSize))}); err != nil {
		t.Fatal(err)
	}
	servePager(t, p)
	all := []int{0, 1, 2, 3}
	if r := h.do(command{Op: "touch", List: all, Check: true}); r.Bad != "" {
		t.Fatal(r.Bad)
	}
	h.do(command{Op: "aliasremove", Len: l.Len})
	r := doShort(t, h, command{Op: "touch", List: all}, "a thread reading a page dropped without an event")
	for i, v := range r.Vals {
		if v != 0 {
			t.Errorf("page %d reads %#x after the hole was punched, want 0", all[i], v)
		}
	}
	if len(r.Vals) != len(all) {
		t.Errorf("touch returned %d values for %d pages", len(r.Vals), len(all))
	}
}

// childEnds checks that a child's pager stops serving once the child's
// process is gone: a monitor must not hold a descriptor and a goroutine
// for every process that ever forked.
func childEnds(t *testing.T, child *pager.Pager, what string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- child.Serve(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the child's Serve: %v", err)
		}
	case <-time.After(shortWait):
		t.Errorf("the child's pager still serves %v after %s", shortWait, what)
		cancel()
		<-done
	}
}

// TestPagerChildExit: the child touches two pages and exits; its pager
// must notice.
func TestPagerChildExit(t *testing.T) {
	features := uffd.FeatureEventFork | layoutEvents
	requireFeatures(t, features)
	h := startHelper(t)
	u, l := h.setup(mem.Anonymous, 4, features, uffd.ModeMissing)
	forked := make(chan *pager.Pager, 1)
	p := newPager(t, u, pager.Config{OnFork: func(c *pager.Pager) { forked <- c }})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: pager.Image(patternImage(4, l.PageSize))}); err != nil {
		t.Fatal(err)
	}
	servePager(t, p)
	wait := h.start(command{Op: "fork", Prog: progTouch, Lo: 0, Hi: 2})
	child := <-forked
	defer child.UFFD().Close()
	served := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { served <- child.Serve(ctx) }()
	r := wait.wait(0)
	if r.Status != 0 || r.Signal != 0 {
		t.Fatalf("child: status %d, signal %d: %v", r.Status, r.Signal, r.Res)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("the child's Serve: %v", err)
		}
	case <-time.After(shortWait):
		t.Errorf("the child's pager still serves %v after the child exited", shortWait)
		cancel()
		<-served
	}
	cancel()
}

// TestPagerSpuriousFork: a fork that fails after the kernel copied the
// memory still delivers a FORK event (userfaultfd(2), BUGS), with a
// userfaultfd for a process that never runs. The helper drops its
// privileges and asks for a new UTS namespace, which the kernel refuses
// only after the FORK event was read. The child's pager must end, and the
// parent's keep serving.
func TestPagerSpuriousFork(t *testing.T) {
	features := uffd.FeatureEventFork | layoutEvents
	requireFeatures(t, features)
	h := startHelper(t)
	u, l := h.setup(mem.Anonymous, 4, features, uffd.ModeMissing)
	forked := make(chan *pager.Pager, 1)
	p := newPager(t, u, pager.Config{OnFork: func(c *pager.Pager) { forked <- c }})
	if err := p.Add(pager.Region{Start: l.Area, Len: uintptr(l.Len), Source: pager.Image(patternImage(4, l.PageSize))}); err != nil {
		t.Fatal(err)
	}
	servePager(t, p)
	h.do(command{Op: "dropprivs"})
	r := h.do(command{Op: "fork", Prog: progTouch, Flags: syscall.CLONE_NEWUTS})
	if r.Errno != int(syscall.EPERM) {
		t.Fatalf("clone(CLONE_NEWUTS) without privileges: pid %d, errno %v; want EPERM", r.Pid, syscall.Errno(r.Errno))
	}
	var child *pager.Pager
	select {
	case child = <-forked:
	case <-time.After(hangTimeout):
		t.Fatal("no FORK event for the failed fork: the kernel no longer sends spurious ones?")
	}
	defer child.UFFD().Close()
	childEnds(t, child, "its fork failed")
	if r := h.do(command{Op: "touch", List: []int{0, 1, 2, 3}, Check: true}); r.Bad != "" {
		t.Errorf("parent after the failed fork: %s", r.Bad)
	}
}

// sameLayout compares regions by place only.
func sameLayout(a, b []pager.Region) bool {
	return slices.EqualFunc(a, b, func(x, y pager.Region) bool { return x.Start == y.Start && x.Len == y.Len })
}

func layoutString(rs []pager.Region) []string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("[%#x, +%#x)", r.Start, r.Len))
	}
	sort.Strings(s)
	return s
}
