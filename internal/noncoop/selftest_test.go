//go:build linux

package noncoop

// Ports of the multi-process scenarios of the kernel's
// tools/testing/selftests/mm/uffd-unit-tests.c: events, events-wp,
// wp-fork, wp-fork-with-event and the fork step of sigbus and sigbus-wp.
// In the kernel's tests one process forks and a thread of it serves the
// child; here the forking process is a helper and the monitor is this test
// process, which holds the helper's userfaultfd: the non-cooperative shape
// itself.

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// rawMonitor is uffd_poll_thread of uffd-common.c: it serves missing
// faults by copying the page from the source image (write-protected with
// wp), removes write protection on write-protect faults, follows a fork by
// serving the child's userfaultfd instead, unregisters removed ranges and
// follows a remapped range to its new address.
type rawMonitor struct {
	u     *uffd.UFFD
	area  uintptr
	psize int
	pages int
	wp    bool
	img   []byte

	owned                                   []*uffd.UFFD
	missing, wpFaults, forks, removes, maps int
	stale                                   int // faults queued before an unregister, woken
	log                                     []string
}

func (m *rawMonitor) run(ctx context.Context) error {
	msgs := make([]uffd.Message, 1)
	for {
		if _, err := m.u.ReadMessages(ctx, msgs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		m.log = append(m.log, fmt.Sprintf("%v (range at %#x)", msgs[0], m.area))
		if err := m.handle(&msgs[0]); err != nil {
			return fmt.Errorf("%v: %w; messages read: %v", msgs[0], err, m.log)
		}
	}
}

func (m *rawMonitor) handle(msg *uffd.Message) error {
	ps := uintptr(m.psize)
	switch msg.Event {
	case uffd.EventPagefault:
		page := msg.Address &^ (ps - 1)
		switch {
		case msg.Flags&uffd.FaultWriteProtect != 0:
			m.wpFaults++
			return m.u.WriteProtect(page, ps, false, 0)
		case msg.Flags&uffd.FaultMinor != 0:
			return errors.New("unexpected minor fault")
		case msg.Flags&uffd.FaultWrite != 0:
			// The child reads every page before it writes it.
			return errors.New("unexpected write fault")
		}
		off := page - m.area
		if page < m.area || off >= uintptr(m.pages)*ps {
			return fmt.Errorf("fault outside the range [%#x, +%#x)", m.area, m.pages*m.psize)
		}
		var flags uffd.Flags
		if m.wp {
			flags = uffd.WriteProtected
		}
		_, err := m.u.Copy(page, m.img[off:off+ps], flags)
		switch {
		case errors.Is(err, uffd.ErrPageExists):
			return m.u.Wake(page, ps)
		case errors.Is(err, uffd.ErrNoMapping):
			// The child resumes as soon as the REMOVE is read, before
			// this monitor unregisters the range: a fault it takes in
			// between is queued, UFFDIO_UNREGISTER wakes only faults
			// already read, and the copy then finds the range
			// unregistered. Wake the thread: it faults again on
			// unregistered memory. (uffd-unit-tests.c's monitor fails
			// here: the same race makes the kernel's test flaky.)
			m.stale++
			return m.u.Wake(page, ps)
		case err == nil:
			m.missing++
		}
		return err
	case uffd.EventFork:
		// Follow the child, as the kernel's monitor does; the parent's
		// userfaultfd stays open in the helper.
		m.forks++
		m.owned = append(m.owned, msg.Child)
		m.u = msg.Child
		return nil
	case uffd.EventRemove:
		m.removes++
		return m.u.Unregister(msg.Start, msg.End-msg.Start)
	case uffd.EventRemap:
		m.maps++
		m.area = msg.To
		return nil
	}
	return errors.New("unexpected event")
}

func (m *rawMonitor) close() {
	for _, u := range m.owned {
		u.Close()
	}
}

// goRun runs fn in a goroutine until the returned stop is called. ended
// yields fn's error if fn returns before stop is called.
func goRun(fn func(ctx context.Context) error) (stop func() error, ended <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	early := make(chan error, 1)
	go func() {
		err := fn(ctx)
		if ctx.Err() == nil {
			early <- err
		}
		done <- err
	}()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(hangTimeout):
			return errors.New("monitor did not stop")
		}
	}, early
}

func TestSelftestEvents(t *testing.T) {
	forKinds(t, 3*4, func(t *testing.T, kind mem.Kind) { testEvents(t, kind, false) })
}

func TestSelftestEventsWP(t *testing.T) {
	forKinds(t, 3*4, func(t *testing.T, kind mem.Kind) { testEvents(t, kind, true) })
}

// testEvents: the helper forks; the child reads the first half of the
// range (writing each word 0 back), moves the range with mremap, does the
// same with the second half, releases the range and reads zeroes. The
// monitor follows the fork, the move and the release; every page is
// checked word by word, and each page faults exactly once.
func testEvents(t *testing.T, kind mem.Kind, wp bool) {
	features := uffd.FeatureEventFork | uffd.FeatureEventRemap | uffd.FeatureEventRemove | kindFeatures(kind, wp)
	requireFeatures(t, features)
	mode := uffd.ModeMissing
	if wp {
		mode |= uffd.ModeWriteProtect
	}
	pages := pagesFor(kind, 32, 4)
	h := startHelper(t)
	u, l := h.setup(kind, pages, features, mode)
	mon := &rawMonitor{u: u, area: l.Area, psize: l.PageSize, pages: pages, wp: wp, img: patternImage(pages, l.PageSize)}
	defer mon.close()
	stop, ended := goRun(mon.run)
	r := h.start(command{Op: "fork", Prog: progEvents, Advice: releaseAdvice(kind), WB: true}).waitOr(0, ended)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r.Status != 0 || r.Signal != 0 {
		t.Fatalf("child exited with status %d, signal %d: %v", r.Status, r.Signal, r.Res)
	}
	if r.Res.progress != uint64(2*pages) {
		t.Errorf("child checked %d pages, want %d (every page, then every page zeroed)", r.Res.progress, 2*pages)
	}
	if mon.forks != 1 || mon.maps != 1 || mon.removes != 1 {
		t.Errorf("monitor saw %d fork, %d remap, %d remove events; want one each", mon.forks, mon.maps, mon.removes)
	}
	if mon.missing != pages {
		t.Errorf("%d missing faults served, want %d (one per page)", mon.missing, pages)
	}
	if wp && mon.wpFaults != pages {
		t.Errorf("%d write-protect faults, want %d (one per page written back)", mon.wpFaults, pages)
	}
	if mon.area != l.Target {
		t.Errorf("monitor follows the range at %#x, want the mremap target %#x", mon.area, l.Target)
	}
}

func TestSelftestWPFork(t *testing.T) {
	forKinds(t, 4, func(t *testing.T, kind mem.Kind) { testWPFork(t, kind, false) })
}

func TestSelftestWPForkWithEvent(t *testing.T) {
	forKinds(t, 4, func(t *testing.T, kind mem.Kind) { testWPFork(t, kind, true) })
}

// testWPFork: a populated page is write-protected; a forked child reads
// its own pagemap entry of it. The uffd-wp bit is inherited only when the
// monitor follows forks (FeatureEventFork): without the event the child
// has no userfaultfd, and a stale bit would make its writes fault forever.
// The same holds after the page is zapped (the bit then lives in a pte
// marker or a swap entry), and unprotecting clears it.
func testWPFork(t *testing.T, kind mem.Kind, withEvent bool) {
	features := uffd.FeatureWPFaults
	if kind != mem.Anonymous {
		features |= uffd.FeatureWPHugetlbfsShmem
	}
	if withEvent {
		features |= uffd.FeatureEventFork
	}
	requireFeatures(t, features)
	h := startHelper(t)
	u, l := h.setup(kind, 1, features, uffd.ModeWriteProtect)
	ps := uintptr(l.PageSize)

	// fork_event_consumer: take the child's userfaultfd, to close it once
	// the child exited (closing it earlier unregisters the child's memory,
	// which drops the bit).
	var children []*uffd.UFFD
	var stop func() error
	if withEvent {
		stop = serveLoop(u, func(m *uffd.Message) error {
			if m.Event != uffd.EventFork {
				return errors.New("unexpected message")
			}
			children = append(children, m.Child)
			return nil
		})
	}
	defer func() {
		for _, c := range children {
			c.Close()
		}
	}()

	wpBit := func(what string, want bool) {
		t.Helper()
		if got := pagemapEntry(t, l.Pid, l.Area)&pmUffdWP != 0; got != want {
			t.Fatalf("%s: pagemap uffd-wp bit %v, want %v", what, got, want)
		}
	}
	childSees := func(what string) {
		t.Helper()
		r := h.do(command{Op: "fork", Prog: progPagemap})
		if r.Signal != 0 || r.Status > 1 {
			t.Fatalf("%s: child ended with status %d, signal %d: %v", what, r.Status, r.Signal, r.Res)
		}
		if inherited := r.Status == 1; inherited != withEvent {
			t.Fatalf("%s: the child's uffd-wp bit is %v with FeatureEventFork %v (entry %#x): want it inherited exactly when the fork is followed",
				what, inherited, withEvent, r.Res.got)
		}
	}

	h.do(command{Op: "touch", List: []int{0}, Write: true})
	if err := u.WriteProtect(l.Area, ps, true, 0); err != nil {
		t.Fatal(err)
	}
	wpBit("protected", true)
	childSees("present page")

	// Zap the page table entry: MADV_DONTNEED on shared memory leaves a
	// marker, MADV_PAGEOUT of private memory a swap entry (best effort).
	advice := unix.MADV_PAGEOUT
	if kind.Shared() {
		advice = unix.MADV_DONTNEED
	}
	h.do(command{Op: "madvise", Len: int(ps), Advice: advice})
	wpBit("zapped", true)
	childSees("zapped page")

	if err := u.WriteProtect(l.Area, ps, false, 0); err != nil {
		t.Fatal(err)
	}
	wpBit("unprotected", false)
	h.do(command{Op: "touch", List: []int{0}, Write: true})
	wpBit("written", false)

	if stop != nil {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if len(children) != 2 {
			t.Errorf("%d fork events, want 2", len(children))
		}
	}
}

func TestSelftestSigbusFork(t *testing.T) {
	forKinds(t, 3*4, func(t *testing.T, kind mem.Kind) { testSigbusFork(t, kind, false) })
}

func TestSelftestSigbusWPFork(t *testing.T) {
	forKinds(t, 3*4, func(t *testing.T, kind mem.Kind) { testSigbusFork(t, kind, true) })
}

// testSigbusFork is the fork step of sigbus and sigbus-wp: with
// FeatureSigbus a fault on a missing page raises SIGBUS instead of
// queueing a message, in a forked child too (it inherits the feature
// through FeatureEventFork). The helper populates half the range through
// its own userfaultfd and releases all of it; then a child per page of
// that half touches its page and must die of SIGBUS, and the monitor, which
// follows the forks, must see no fault.
func testSigbusFork(t *testing.T, kind mem.Kind, wp bool) {
	features := uffd.FeatureSigbus | uffd.FeatureEventFork | kindFeatures(kind, wp)
	requireFeatures(t, features)
	mode := uffd.ModeMissing
	if wp {
		mode |= uffd.ModeWriteProtect
	}
	pages := pagesFor(kind, 8, 4)
	split := (pages + 1) / 2
	h := startHelper(t)
	u, l := h.setup(kind, pages, features, mode)

	var children []*uffd.UFFD
	defer func() {
		for _, c := range children {
			c.Close()
		}
	}()
	others := 0
	stop := serveLoop(u, func(m *uffd.Message) error {
		if m.Event == uffd.EventFork {
			children = append(children, m.Child)
			return nil
		}
		others++
		return errors.New("unexpected message")
	})

	half := make([]int, split)
	for i := range half {
		half[i] = i
	}
	h.do(command{Op: "copy", List: half, WP: wp})
	if r := h.do(command{Op: "touch", List: half, Check: true}); r.Bad != "" {
		t.Fatalf("pages copied by the helper: %s", r.Bad)
	}
	h.do(command{Op: "madvise", Len: l.Len, Advice: releaseAdvice(kind)})

	for j := 0; j < split; j++ {
		r := h.do(command{Op: "fork", Prog: progSigbus, Lo: j})
		if r.Signal != int(syscall.SIGBUS) {
			t.Errorf("child touching released page %d: status %d, signal %d (%v); want killed by SIGBUS", j, r.Status, r.Signal, r.Res)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(children) != split || others != 0 {
		t.Fatalf("monitor read %d fork events and %d other messages; want %d forks and nothing else", len(children), others, split)
	}
	for i, c := range children {
		if hasPending(t, c) {
			t.Errorf("child %d's userfaultfd has a message queued: its fault was not turned into SIGBUS", i)
		}
	}
}

// hasPending reports whether a message waits on u.
func hasPending(t *testing.T, u *uffd.UFFD) bool {
	t.Helper()
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, _ = unix.Poll(fds, 0)
	})
	return n > 0
}
