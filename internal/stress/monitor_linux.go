package stress

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// Run runs the stress test described by cfg and returns what each bounce
// did. It fails on the first error: a counter that does not add up, a
// copy that lands on the wrong page, a fault path or copy that fails. A
// cancelled ctx stops the run (between bounces or while waiting for the
// locker) with an error wrapping ctx.Err().
func Run(ctx context.Context, cfg Config) (Result, error) {
	m, err := newMonitor(cfg)
	if err != nil {
		return Result{}, err
	}
	defer m.close()
	if err := m.start(ctx); err != nil {
		return m.res, err
	}
	var total uint64 // increments over all bounces
	for b := 0; b < cfg.Bounces; b++ {
		left := cfg.Bounces - 1 - b
		mode := cfg.modeOf(b, left)
		bo, err := m.bounce(ctx, b, left, mode)
		if err != nil {
			return m.res, fmt.Errorf("stress: bounce %d (%v): %w", b, mode, err)
		}
		total += bo.Increments
		if err := m.checkSource(total); err != nil {
			return m.res, fmt.Errorf("stress: after bounce %d (%v): %w", b, mode, err)
		}
		m.res.Bounces = append(m.res.Bounces, bo)
		if cfg.Progress != nil {
			cfg.Progress(bo)
		}
	}
	if _, err := m.ask(ctx, request{Op: "check"}); err != nil {
		return m.res, fmt.Errorf("stress: final check: %w", err)
	}
	return m.res, nil
}

// monitor is the serving side of a run.
type monitor struct {
	cfg      Config
	res      Result
	ps       uintptr
	pages    int
	perCPU   int
	features uffd.Feature

	image []byte // the source, shared with the locker
	imgFd int

	cmd    *exec.Cmd
	conn   *net.UnixConn
	in     *bufio.Reader
	exited chan struct{}
	u      *uffd.UFFD
	areas  areas
}

func newMonitor(cfg Config) (*monitor, error) {
	if cfg.Bounces < 1 {
		return nil, fmt.Errorf("stress: %d bounces: want at least 1", cfg.Bounces)
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = runtime.NumCPU()
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("stress: find this program to start the locker: %w", err)
		}
		cfg.Exe = exe
	}
	ps := mem.PageSize()
	if cfg.Kind.Huge() {
		var err error
		if ps, err = mem.HugePageSize(); err != nil {
			return nil, fmt.Errorf("stress: %v needs huge pages: %w", cfg.Kind, err)
		}
	}
	perCPU := cfg.Size / ps / cfg.CPUs
	if perCPU < 1 {
		return nil, fmt.Errorf("stress: %d bytes of %v is less than one %d-byte page per CPU (%d CPUs)", cfg.Size, cfg.Kind, ps, cfg.CPUs)
	}
	m := &monitor{cfg: cfg, ps: uintptr(ps), pages: perCPU * cfg.CPUs, perCPU: perCPU, imgFd: -1}
	m.res = Result{Kind: cfg.Kind, Server: cfg.Server, Pages: m.pages, PageSize: ps, CPUs: cfg.CPUs}
	if err := checkMemory(cfg.Kind, m.pages*ps); err != nil {
		return nil, err
	}
	if err := m.chooseFeatures(); err != nil {
		return nil, err
	}
	return m, nil
}

// checkMemory refuses a run that would not fit: memory against
// MemAvailable, huge pages against those free and not reserved.
func checkMemory(kind mem.Kind, size int) error {
	bytes, huge, err := needs(kind, size)
	if err != nil {
		return fmt.Errorf("stress: %v needs huge pages: %w", kind, err)
	}
	if avail, err := mem.Available(); err == nil && bytes > avail {
		return fmt.Errorf("stress: %v areas of %d MiB need about %d MiB of memory (the source and the area being filled), and %d MiB are available (MemAvailable): choose a smaller size",
			kind, size>>20, bytes>>20, avail>>20)
	}
	if huge > 0 {
		_, avail, err := mem.HugePages()
		if err != nil {
			return fmt.Errorf("stress: %v: %w", kind, err)
		}
		if huge > avail {
			hps, _ := mem.HugePageSize()
			return fmt.Errorf("stress: two %v areas of %d MiB need %d huge pages of %d bytes, and %d are free and unreserved: raise /proc/sys/vm/nr_hugepages by %d",
				kind, size>>20, huge, hps, avail, huge-avail)
		}
	}
	return nil
}

// chooseFeatures picks the features of the run: MISSING registration of
// the kind, and write-protection where the kernel has it for the kind
// (uffd-stress.c's test_uffdio_wp), with WP_UNPOPULATED on anonymous
// memory as uffd-stress.c does.
func (m *monitor) chooseFeatures() error {
	sup, err := uffd.Probe()
	if err != nil {
		return fmt.Errorf("stress: %w", err)
	}
	switch m.cfg.Kind {
	case mem.Shmem, mem.ShmemPrivate:
		m.features = uffd.FeatureMissingShmem
	case mem.Hugetlb, mem.HugetlbPrivate:
		m.features = uffd.FeatureMissingHugetlbfs
	}
	if missing := m.features &^ sup.Features; missing != 0 {
		return fmt.Errorf("stress: %v memory: %w", m.cfg.Kind, &uffd.NotSupportedError{What: "features " + missing.String(), Features: missing})
	}
	wp := uffd.FeatureWPFaults
	if m.cfg.Kind != mem.Anonymous {
		wp |= uffd.FeatureWPHugetlbfsShmem
	}
	if !m.cfg.NoWP && m.cfg.Server == ServeDirect && sup.Features&wp == wp {
		m.res.WP = true
		m.features |= wp
		if m.cfg.Kind == mem.Anonymous && sup.Features.Has(uffd.FeatureWPUnpopulated) {
			m.features |= uffd.FeatureWPUnpopulated
		}
	}
	return nil
}

// start creates the source, starts the locker and takes its userfaultfd.
func (m *monitor) start(ctx context.Context) error {
	size := m.pages * int(m.ps)
	fd, err := unix.MemfdCreate("uffd-stress-source", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("stress: memfd_create: %w", err)
	}
	m.imgFd = fd
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		return fmt.Errorf("stress: size the source: %w", err)
	}
	if m.image, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fmt.Errorf("stress: map the source: %w", err)
	}
	ne := binary.NativeEndian
	for n := 0; n < m.pages; n++ {
		p := m.image[n*int(m.ps):]
		ne.PutUint64(p[offCount:], 1)
		ne.PutUint64(p[offPlace:], 1)
		ne.PutUint64(p[offIndex:], uint64(n))
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stress: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "stress"), os.NewFile(uintptr(fds[1]), "locker")
	defer theirs.Close()
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return err
	}
	m.conn = c.(*net.UnixConn)
	m.in = bufio.NewReader(m.conn)
	// The locker's copy of the source: an os.File of its own, as it
	// closes the descriptor it wraps (m.imgFd stays this side's).
	imgFd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stress: dup the source: %w", err)
	}
	img := os.NewFile(uintptr(imgFd), "source")
	defer img.Close()
	m.cmd = exec.Command(m.cfg.Exe)
	// A locker built with -race would otherwise sleep a second at exit.
	m.cmd.Env = append(os.Environ(), lockerEnv+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	m.cmd.ExtraFiles = []*os.File{theirs, img}
	m.cmd.Stdout = m.cfg.Stderr
	m.cmd.Stderr = m.cfg.Stderr
	err = m.cmd.Start()
	// The locker has its end now: without this one, its exit shows.
	theirs.Close()
	if err != nil {
		return fmt.Errorf("stress: start the locker %s: %w", m.cfg.Exe, err)
	}
	m.exited = make(chan struct{})
	go func() {
		m.cmd.Wait()
		close(m.exited)
	}()

	b, _ := json.Marshal(hello{Kind: m.cfg.Kind.String(), Pages: m.pages, PageSize: int(m.ps), CPUs: m.cfg.CPUs, Features: m.features, WP: m.res.WP})
	if _, err := m.conn.Write(append(b, '\n')); err != nil {
		if lerr := m.lockerFailed(); lerr != nil {
			return fmt.Errorf("stress: %w", lerr)
		}
		return fmt.Errorf("stress: talk to the locker: %w", err)
	}
	type received struct {
		u   *uffd.UFFD
		b   []byte
		err error
	}
	ch := make(chan received, 1)
	go func() {
		// A locker that cannot set up says why in one line instead of
		// handing over: tell the two apart before reading a handoff.
		if err := m.lockerFailed(); err != nil {
			ch <- received{err: err}
			return
		}
		u, b, _, err := handoff.Receive(m.conn, m.features)
		if err != nil {
			err = fmt.Errorf("the locker's userfaultfd: %w", err)
		}
		ch <- received{u, b, err}
	}()
	var r received
	select {
	case r = <-ch:
	case <-ctx.Done():
		m.conn.Close()
		<-ch
		return fmt.Errorf("stress: waiting for the locker: %w", ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("stress: %w", r.err)
	}
	m.u = r.u
	return json.Unmarshal(r.b, &m.areas)
}

// lockerFailed waits for the locker's first bytes without reading them
// and, unless they start a handoff, reads its error line (or notes that
// it exited) and returns it as an error.
func (m *monitor) lockerFailed() error {
	rc, err := m.conn.SyscallConn()
	if err != nil {
		return err
	}
	var first [1]byte
	var n int
	var perr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), first[:], unix.MSG_PEEK)
		return perr != unix.EAGAIN && perr != unix.EINTR
	}); err != nil {
		return fmt.Errorf("waiting for the locker: %w", err)
	}
	switch {
	case perr == unix.ECONNRESET:
		// The locker exited without reading all we sent.
	case perr != nil:
		return fmt.Errorf("waiting for the locker: %w", os.NewSyscallError("recvfrom", perr))
	case n == 1 && first[0] == handoffFirstByte:
		return nil
	}
	line, _ := m.in.ReadString('\n')
	if msg, ok := strings.CutPrefix(strings.TrimSpace(line), lockerErrorPrefix); ok {
		return fmt.Errorf("the locker failed: %s", msg)
	}
	status := "exited"
	select {
	case <-m.exited:
		status = m.cmd.ProcessState.String()
	case <-time.After(time.Second):
	}
	if line != "" {
		return fmt.Errorf("the locker (%s) said %q instead of handing over its userfaultfd", status, strings.TrimSpace(line))
	}
	return fmt.Errorf("the locker %s before handing over its userfaultfd", status)
}

func (m *monitor) close() {
	if m.conn != nil {
		m.conn.Close() // the locker exits at the end of its requests
	}
	if m.cmd != nil && m.exited != nil {
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			m.cmd.Process.Kill()
			<-m.exited
		}
	}
	if m.u != nil {
		m.u.Close()
	}
	if m.image != nil {
		unix.Munmap(m.image)
	}
	if m.imgFd >= 0 {
		unix.Close(m.imgFd)
	}
}

// ask sends a request and waits for the answer.
func (m *monitor) ask(ctx context.Context, req request) (answer, error) {
	b, _ := json.Marshal(req)
	if _, err := m.conn.Write(append(b, '\n')); err != nil {
		return answer{}, fmt.Errorf("talk to the locker: %w", err)
	}
	type got struct {
		a   answer
		err error
	}
	ch := make(chan got, 1)
	go func() {
		line, err := m.in.ReadBytes('\n')
		if err != nil {
			if err == io.EOF {
				err = errors.New("the locker exited")
			}
			ch <- got{err: err}
			return
		}
		var a answer
		if err := json.Unmarshal(line, &a); err != nil {
			err = fmt.Errorf("locker said %q: %w", line, err)
		}
		ch <- got{a, err}
	}()
	select {
	case g := <-ch:
		if g.err == nil && g.a.Err != "" {
			g.err = fmt.Errorf("locker: %s", g.a.Err)
		}
		return g.a, g.err
	case <-ctx.Done():
		// Unblock the reader: the run is over.
		m.conn.Close()
		<-ch
		return answer{}, fmt.Errorf("%s: %w", req.Op, ctx.Err())
	}
}

// bounce runs one bounce: the locker registers the destination and starts
// locking; this side serves faults and copies every page in the
// background; then the locker stops, checks and keeps the result as the
// next source.
func (m *monitor) bounce(ctx context.Context, index, left int, mode Mode) (Bounce, error) {
	bo := Bounce{Index: index, Mode: mode}
	d := index % 2
	if _, err := m.ask(ctx, request{Op: "bounce", Index: index, Dst: d, Mode: mode, Left: left}); err != nil {
		return bo, err
	}
	t0 := time.Now()
	var s server
	if m.cfg.Server == ServePager {
		s = newPagerServer(m, m.areas.Dst[d])
	} else {
		s = newDirectServer(m, m.areas.Dst[d], m.areas.Alias[d])
	}
	stop := s.serve(mode&Poll != 0)
	if _, err := m.ask(ctx, request{Op: "go"}); err != nil {
		return bo, errors.Join(err, stop())
	}

	// background_thread, per CPU: the first half of its pages, then
	// write-protection of its share, then the second half.
	var wg sync.WaitGroup
	bgErr := make(chan error, m.cfg.CPUs)
	for cpu := 0; cpu < m.cfg.CPUs; cpu++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bgErr <- s.background(cpu*m.perCPU, (cpu+1)*m.perCPU, cpu == 0)
		}()
	}
	wg.Wait()
	close(bgErr)
	var firstErr error
	for err := range bgErr {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	// The lockers stop once every page is in: then nothing faults any
	// more, and the fault path can stop.
	a, err := m.ask(ctx, request{Op: "finish"})
	bo.Increments = a.Increments
	serveErr := stop()
	bo.Duration = time.Since(t0)
	s.stats(&bo)
	bo.Served = bo.Faults + bo.Background
	if err := errors.Join(firstErr, serveErr, err); err != nil {
		return bo, err
	}
	if _, err := m.ask(ctx, request{Op: "end", Mode: mode}); err != nil {
		return bo, err
	}
	return bo, nil
}

// checkSource checks the source the locker just wrote: every page holds
// its own record, no lock is held, and the counters add up to their
// initial ones plus every increment reported.
func (m *monitor) checkSource(increments uint64) error {
	var sum uint64
	for n := 0; n < m.pages; n++ {
		p := m.image[n*int(m.ps):]
		lock, count, place, index := pageRecord(p)
		if index != uint64(n) || lock != 0 || place != 1 {
			return fmt.Errorf("source page %d: record of page %d, lock %d, placeholder %d", n, index, lock, place)
		}
		sum += count
	}
	if want := uint64(m.pages) + increments; sum != want {
		return fmt.Errorf("the counters add up to %d, want %d (%d pages starting at 1, %d increments): an increment was lost or a stale copy went in", sum, want, m.pages, increments)
	}
	return nil
}

// server is a fault-serving path with its background copier.
type server interface {
	// serve starts serving; stop ends it and returns its first error.
	serve(poll bool) (stop func() error)
	// background copies pages [lo, hi); first marks the copier that
	// checks a repeated copy meets EEXIST.
	background(lo, hi int, first bool) error
	stats(b *Bounce)
}

// corruptPage, when not -1, makes the direct server copy the wrong
// contents into that page: the tests check that the run notices.
var corruptPage = -1

// direct is the kernel test's handler (uffd_handle_page_fault).
type direct struct {
	m          *monitor
	u          *uffd.UFFD
	dst, alias uintptr
	flags      uffd.Flags

	faults, wpFaults, exists, bg atomic.Uint64
	errMu                        sync.Mutex
	err                          error
}

func newDirectServer(m *monitor, dst, alias uintptr) *direct {
	s := &direct{m: m, u: m.u, dst: dst, alias: alias}
	if m.res.WP {
		s.flags = uffd.WriteProtected
	}
	return s
}

func (s *direct) fail(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
}

func (s *direct) handle(msg *uffd.Message) {
	if msg.Event != uffd.EventPagefault {
		s.fail(fmt.Errorf("unexpected %v", msg))
		return
	}
	ps := s.m.ps
	page := msg.Address &^ (ps - 1)
	if msg.Flags&uffd.FaultWriteProtect != 0 {
		s.wpFaults.Add(1)
		if err := s.u.WriteProtect(page, ps, false, 0); err != nil {
			s.fail(err)
		}
		return
	}
	if page < s.dst || page >= s.dst+uintptr(s.m.pages)*ps {
		s.fail(fmt.Errorf("fault at %#x outside the destination", msg.Address))
		return
	}
	copied, err := s.copyPage(int((page-s.dst)/ps), false)
	if err != nil {
		s.fail(err)
	} else if copied {
		s.faults.Add(1)
	}
}

// copyPage is __copy_page: copy page n from the source; a page already
// there is a lost race, which wakes the faulting threads. With retry, a
// successful copy is repeated (through the alias of shared memory) and
// must meet EEXIST.
func (s *direct) copyPage(n int, retry bool) (bool, error) {
	ps := s.m.ps
	off := uintptr(n) * ps
	src := s.m.image[off : off+ps]
	if n == corruptPage {
		src = s.m.image[off^ps : off^ps+ps] // the neighbour's contents
	}
	_, err := s.u.Copy(s.dst+off, src, s.flags)
	if errors.Is(err, uffd.ErrPageExists) {
		s.exists.Add(1)
		return false, s.u.Wake(s.dst+off, ps)
	}
	if err != nil {
		return false, err
	}
	if retry {
		to := s.dst
		if s.alias != 0 {
			to = s.alias
		}
		if _, err := s.u.Copy(to+off, src, s.flags); !errors.Is(err, uffd.ErrPageExists) {
			return true, fmt.Errorf("copying page %d again: %v, want EEXIST", n, err)
		}
	}
	return true, nil
}

func (s *direct) background(lo, hi int, first bool) error {
	mid := (lo + hi) / 2
	for n := lo; n < mid; n++ {
		copied, err := s.copyPage(n, first && n == lo)
		if err != nil {
			return err
		}
		if copied {
			s.bg.Add(1)
		}
	}
	if s.m.res.WP {
		ps := s.m.ps
		if err := s.u.WriteProtect(s.dst+uintptr(lo)*ps, uintptr(hi-lo)*ps, true, 0); err != nil {
			return err
		}
	}
	for n := mid; n < hi; n++ {
		copied, err := s.copyPage(n, false)
		if err != nil {
			return err
		}
		if copied {
			s.bg.Add(1)
		}
	}
	return nil
}

func (s *direct) stats(b *Bounce) {
	b.Faults, b.WPFaults, b.Exists, b.Background = s.faults.Load(), s.wpFaults.Load(), s.exists.Load(), s.bg.Load()
}

// serve starts one reader per CPU: in the Go runtime's poller (read
// mode) or, in poll mode, on a locked thread waiting in poll(2) on the
// userfaultfd and an eventfd that stops it (uffd_poll_thread's pipe).
func (s *direct) serve(poll bool) func() error {
	var wg sync.WaitGroup
	if !poll {
		ctx, cancel := context.WithCancel(context.Background())
		for range s.m.cfg.CPUs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msgs := make([]uffd.Message, 8)
				for {
					n, err := s.u.ReadMessages(ctx, msgs)
					if err != nil {
						if ctx.Err() == nil {
							s.fail(err)
						}
						return
					}
					for i := range msgs[:n] {
						s.handle(&msgs[i])
					}
				}
			}()
		}
		return func() error {
			cancel()
			wg.Wait()
			return s.firstErr()
		}
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		s.fail(fmt.Errorf("eventfd: %w", err))
		return s.firstErr
	}
	rc, err := s.u.SyscallConn()
	if err != nil {
		unix.Close(efd)
		s.fail(err)
		return s.firstErr
	}
	for range s.m.cfg.CPUs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			buf := make([]byte, 8*uffd.MessageSize)
			msgs := make([]uffd.Message, 8)
			rc.Control(func(fd uintptr) {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
				for {
					if _, err := unix.Poll(fds, -1); err != nil {
						if err == unix.EINTR {
							continue
						}
						s.fail(fmt.Errorf("poll: %w", err))
						return
					}
					if fds[1].Revents != 0 {
						return
					}
					if fds[0].Revents&unix.POLLERR != 0 {
						s.fail(errors.New("poll: POLLERR on the userfaultfd"))
						return
					}
					n, err := unix.Read(int(fd), buf)
					if err == unix.EAGAIN || err == unix.EINTR {
						continue // another reader took it
					}
					if err != nil {
						s.fail(fmt.Errorf("read: %w", err))
						return
					}
					k, err := s.u.Decode(buf[:n], msgs)
					if err != nil {
						s.fail(err)
					}
					for i := range msgs[:k] {
						s.handle(&msgs[i])
					}
				}
			})
		}()
	}
	return func() error {
		one := [8]byte{1}
		unix.Write(efd, one[:])
		wg.Wait()
		unix.Close(efd)
		return s.firstErr()
	}
}

func (s *direct) firstErr() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// pagerServer serves with package pager.
type pagerServer struct {
	m    *monitor
	p    *pager.Pager
	dst  uintptr
	errs atomic.Pointer[error]
}

func newPagerServer(m *monitor, dst uintptr) *pagerServer {
	s := &pagerServer{m: m, dst: dst}
	return s
}

func (s *pagerServer) fail(err error) { s.errs.CompareAndSwap(nil, &err) }

func (s *pagerServer) serve(poll bool) func() error {
	// The pager's engine waits in the kernel as it chooses (read(2), or
	// epoll with events): the bounce's poll mode is the direct server's.
	_ = poll
	p, err := pager.New(s.m.u, pager.Config{OnError: s.fail})
	if err != nil {
		s.fail(err)
		return func() error { return err }
	}
	s.p = p
	size := uintptr(s.m.pages) * s.m.ps
	if err := s.p.Add(pager.Region{Start: s.dst, Len: size, PageSize: int(s.m.ps), Source: pager.Image(s.m.image), Name: "destination"}); err != nil {
		s.fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.p.Serve(ctx) }()
	select {
	case <-s.p.Serving():
	case err := <-done:
		cancel()
		return func() error { return err }
	}
	return func() error {
		cancel()
		err := <-done
		if e := s.errs.Load(); e != nil {
			err = errors.Join(err, *e)
		}
		return err
	}
}

func (s *pagerServer) background(lo, hi int, first bool) error {
	ps := s.m.ps
	for n := lo; n < hi; n++ {
		if err := s.p.Resolve(context.Background(), s.dst+uintptr(n)*ps, ps); err != nil {
			return err
		}
	}
	return nil
}

func (s *pagerServer) stats(b *Bounce) {
	st := s.p.Stats()
	// Pages counts every page installed; Filled, those Resolve claimed.
	b.Exists = st.Exists
	b.Background = min(st.Filled, st.Pages)
	b.Faults = st.Pages - b.Background
}
