package pager

import (
	"context"
	"errors"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/abi"
	"github.com/gouffd/uffd/internal/raw"
)

// batch is how many messages a reader takes per read(2).
const batch = 64

// Serve serves faults until ctx ends, the userfaultfd is closed, or the
// faulting process is gone (ESRCH); each of those returns nil. It returns
// an error when the descriptor cannot be read. Goroutines it started
// (workers, retries, the fill, children served on its behalf) have ended
// when it returns.
func (p *Pager) Serve(ctx context.Context) error {
	if !p.serving.CompareAndSwap(false, true) {
		return ErrServing
	}
	defer p.serving.Store(false)
	if p.cfg.Isolated {
		if serveIsolated == nil {
			return ErrNoIsolation
		}
		return serveIsolated(ctx, p)
	}
	sc := &serveCtx{efd: -1}
	sc.ctx, sc.cancel = context.WithCancel(ctx)
	defer sc.cancel()

	f := raw.File(p.u)
	switch p.cfg.Reader {
	case ReaderThread:
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return &uffd.OpError{Op: "eventfd", Err: err}
		}
		sc.efd = efd
		defer unix.Close(efd)
		stop := context.AfterFunc(sc.ctx, func() {
			one := [8]byte{1}
			unix.Write(efd, one[:])
		})
		defer stop()
	default:
		stop := context.AfterFunc(sc.ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
		defer func() {
			if !stop() {
				f.SetReadDeadline(time.Time{})
			}
		}()
	}

	if path := p.u.Path(); path == uffd.PathFork || path == uffd.PathAdopted {
		// Another process's memory: when it exits without a fault
		// pending, no read ever returns. Probe it now and then.
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			p.watchProcess(sc)
		}()
	}

	errs := make(chan error, p.cfg.Workers)
	for range p.cfg.Workers {
		w, err := p.newWorker(sc)
		if err != nil {
			sc.cancel()
			errs <- err
			continue
		}
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			err := w.run()
			sc.cancel() // one ends, all end
			errs <- err
		}()
	}
	if p.cfg.Fill {
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			p.fill(sc)
		}()
	}
	sc.wg.Wait()
	close(errs)
	var first error
	for err := range errs {
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// worker reads messages and resolves them.
type worker struct {
	p    *Pager
	sc   *serveCtx
	rv   *resolver
	buf  []byte
	msgs []uffd.Message

	deferred []pendingFault // EAGAIN: retried after reading events

	// the poller's read callback and its results
	rc     syscall.RawConn
	readFn func(fd uintptr) bool
	nowait bool
	n      int
	errno  syscall.Errno
	locked bool

	fd int // ReaderThread: a duplicate of the descriptor

	spin int // non-blocking reads left before parking

	timeout unix.Timespec // ReaderThread's poll timeout
	left    unix.Timespec // what ppoll gets, and changes
}

type pendingFault struct {
	addr uintptr
	t0   time.Time
}

func (p *Pager) newWorker(sc *serveCtx) (*worker, error) {
	w := &worker{
		p:        p,
		sc:       sc,
		rv:       p.newResolver(),
		buf:      make([]byte, batch*uffd.MessageSize),
		msgs:     make([]uffd.Message, batch),
		deferred: make([]pendingFault, 0, batch),
		fd:       -1,
		timeout:  unix.NsecToTimespec(int64(100 * time.Millisecond)),
	}
	rc, err := raw.File(p.u).SyscallConn()
	if err != nil {
		return nil, err
	}
	w.rc = rc
	w.readFn = func(fd uintptr) bool {
		if p.events {
			p.evMu.Lock()
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&w.buf[0])), uintptr(len(w.buf)))
		if errno == syscall.EAGAIN && !w.nowait {
			if p.events {
				p.evMu.Unlock()
			}
			return false // park in the poller until readable
		}
		w.n, w.errno = int(n), errno
		w.locked = p.events
		return true
	}
	if p.cfg.Reader == ReaderThread {
		var dupErr error
		if err := rc.Control(func(fd uintptr) { w.fd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
			return nil, err
		}
		if dupErr != nil {
			return nil, dupErr
		}
	}
	return w, nil
}

// errStop ends a worker without an error.
var errStop = errors.New("stop")

// read reads a batch of messages, holding evMu exclusively on success when
// the pager orders events (w.locked).
func (w *worker) read() error {
	w.n, w.errno, w.locked = 0, 0, false
	if w.p.cfg.Reader == ReaderThread {
		return w.readThread()
	}
	w.nowait = len(w.deferred) > 0
	if w.spin > 0 {
		// Right after serving a fault the next one is often microseconds
		// away: look again before parking in the poller.
		w.spin--
		w.nowait = true
	}
	if err := w.rc.Read(w.readFn); err != nil {
		return errStop // the deadline (ctx) or Close
	}
	return w.result()
}

func (w *worker) result() error {
	switch w.errno {
	case 0:
		if w.n == 0 {
			return errStop
		}
		return nil
	case syscall.EAGAIN, syscall.EINTR:
		w.unlock()
		w.n = 0
		return nil
	case syscall.EBADF:
		w.unlock()
		return errStop
	}
	w.unlock()
	return &uffd.OpError{Op: "read", Err: w.errno}
}

func (w *worker) unlock() {
	if w.locked {
		w.locked = false
		w.p.evMu.Unlock()
	}
}

// readThread waits in poll(2) on the locked OS thread.
func (w *worker) readThread() error {
	p := w.p
	for {
		if p.events {
			p.evMu.Lock()
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(w.fd), uintptr(unsafe.Pointer(&w.buf[0])), uintptr(len(w.buf)))
		if errno != syscall.EAGAIN || len(w.deferred) > 0 {
			w.n, w.errno, w.locked = int(n), errno, p.events
			return w.result()
		}
		if p.events {
			p.evMu.Unlock()
		}
		fds := [2]unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.sc.efd), Events: unix.POLLIN}}
		// The timeout notices a Close of the userfaultfd, which poll on
		// our duplicate cannot see.
		// ppoll writes the time left back: give it a fresh copy each
		// time, or the timeout shrinks to zero and the reader spins.
		w.left = w.timeout
		_, _, e := syscall.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, uintptr(unsafe.Pointer(&w.left)), 0, 0, 0)
		if e != 0 && e != syscall.EINTR {
			return &uffd.OpError{Op: "poll", Err: e}
		}
		if fds[1].Revents != 0 || w.sc.ctx.Err() != nil || raw.Closed(p.u) {
			return errStop
		}
	}
}

func (w *worker) run() error {
	if w.fd >= 0 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer unix.Close(w.fd)
	}
	p := w.p
	for {
		err := w.read()
		if err == errStop {
			return nil
		}
		if err != nil {
			return err
		}
		t0 := time.Now()
		k, derr := p.u.Decode(w.buf[:w.n], w.msgs)
		// Apply the batch's events first, still holding the lock: the
		// batch's faults are then resolved against the new layout, and no
		// copy chosen before the events is in flight.
		faults := 0
		for i := range w.msgs[:k] {
			m := &w.msgs[i]
			if m.Event == uffd.EventPagefault {
				faults++
				continue
			}
			p.applyEvent(w.sc, m)
		}
		p.pending.Add(int32(faults))
		w.unlock()
		if derr != nil {
			p.report(derr)
		}
		if err := w.retryDeferred(); err != nil {
			return err
		}
		for i := range w.msgs[:k] {
			m := &w.msgs[i]
			if m.Event != uffd.EventPagefault {
				continue
			}
			p.stats.faults.Add(1)
			out := w.rv.fault(m.Address, t0)
			p.pending.Add(-1)
			if err := w.outcome(out, m.Address, t0); err != nil {
				return err
			}
		}
		if faults > 0 {
			w.spin = p.cfg.SpinReads
		}
		if w.n == 0 && len(w.deferred) > 0 {
			time.Sleep(50 * time.Microsecond) // the event is being completed
		}
	}
}

// outcome handles what fault returned.
func (w *worker) outcome(out outcome, addr uintptr, t0 time.Time) error {
	switch out {
	case retryLater:
		w.deferred = append(w.deferred, pendingFault{addr, t0})
	case gone:
		return errStop
	case failed:
		if err := w.rv.ioerr; err != nil {
			w.rv.ioerr = nil
			var se *SourceError
			if errors.As(err, &se) {
				w.p.retry(w.sc, addr, err)
			} else {
				w.p.report(err)
			}
		}
	}
	return nil
}

func (w *worker) retryDeferred() error {
	if len(w.deferred) == 0 {
		return nil
	}
	todo := w.deferred
	w.deferred = w.deferred[len(w.deferred):]
	for _, f := range todo {
		if err := w.outcome(w.rv.fault(f.addr, f.t0), f.addr, f.t0); err != nil {
			return err
		}
	}
	if len(w.deferred) == 0 {
		w.deferred = todo[:0]
	}
	return nil
}

// retry resolves the faulting page at addr after a source failure, away
// from the fault path, with backoff, then applies the region's policy. The
// page stays claimed meanwhile, so that repeated faults on it wait for this
// retry instead of starting their own.
func (p *Pager) retry(sc *serveCtx, addr uintptr, first error) {
	r := p.lookup(addr)
	if r == nil || r.st.claimed.claim(r.base+int((addr-r.Start)>>r.shift), 1) == 0 {
		return
	}
	p.report(first)
	sc.wg.Add(1)
	go func() {
		defer sc.wg.Done()
		rv := p.newResolver()
		backoff := p.cfg.Retry.Backoff
		t := time.NewTimer(backoff)
		defer t.Stop()
		for attempt := 1; ; attempt++ {
			select {
			case <-sc.ctx.Done():
				return
			case <-t.C:
			}
			r := p.lookup(addr)
			if r == nil {
				return // unmapped meanwhile
			}
			i := int((addr - r.Start) >> r.shift)
			p.stats.retries.Add(1)
			out := rv.install(r, i, i+1, i) // releases the page unless installed
			if out != failed {
				return
			}
			err := rv.ioerr
			if r.st.claimed.claim(r.base+i, 1) == 0 {
				return // someone else has it now
			}
			if attempt+1 >= p.cfg.Retry.Attempts && r.OnError == PoisonOnError && p.poison {
				p.stats.sourceErrors.Add(1)
				p.poisonPage(r, i)
				p.report(err)
				return
			}
			if attempt+1 == p.cfg.Retry.Attempts {
				p.stats.sourceErrors.Add(1)
				p.report(err) // and keep trying: the thread waits
			}
			backoff = min(backoff*2, p.cfg.Retry.MaxBackoff)
			t.Reset(backoff)
		}
	}()
}

// poisonPage answers the fault at page i of r with SIGBUS.
func (p *Pager) poisonPage(r *region, i int) {
	if p.events {
		p.evMu.RLock()
		defer p.evMu.RUnlock()
	}
	start := r.Start + uintptr(i)<<r.shift
	pp := abi.UffdioPoison{Range: abi.UffdioRange{Start: uint64(start), Len: uint64(r.psize)}}
	if errno := raw.Ioctl(p.u, abi.UFFDIO_POISON, unsafe.Pointer(&pp)); errno == 0 || errno == syscall.EEXIST {
		r.st.done.setRange(r.base+i, 1)
		p.stats.poisoned.Add(1)
		return
	}
	r.st.claimed.clearRange(r.base+i, 1)
}

// probeInterval is how often watchProcess checks that the faulting process
// still exists.
const probeInterval = time.Second

// probeAddr is an address no program maps (just above the default
// vm.mmap_min_addr), for the liveness probe.
const probeAddr = 0x10000

// watchProcess ends Serve when the faulting process is gone. A resolving
// ioctl answers ESRCH once the process's memory is gone, whatever the
// range: a UFFDIO_ZEROPAGE of one page where nothing is mapped answers
// ENOENT while the process lives (and EAGAIN while an event is pending).
func (p *Pager) watchProcess(sc *serveCtx) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-sc.ctx.Done():
			return
		case <-t.C:
		}
		z := abi.UffdioZeropage{Range: abi.UffdioRange{Start: probeAddr, Len: uint64(basePageSize)}, Mode: abi.ZeropageModeDontwake}
		if raw.Ioctl(p.u, abi.UFFDIO_ZEROPAGE, unsafe.Pointer(&z)) == syscall.ESRCH {
			sc.cancel()
			return
		}
	}
}
