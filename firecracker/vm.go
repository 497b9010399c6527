//go:build linux

package firecracker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/pager"
)

// vm is one VM being served.
type vm struct {
	s       *Server
	id      uint64
	log     *slog.Logger
	peer    peer
	conn    *net.UnixConn
	u       *uffd.UFFD
	p       *pager.Pager
	maps    []Mapping // by address
	started time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc

	replay *Trace
	rec    *recorder

	// handover: the result of sending this VM to another instance: true
	// once it took it, false to go on serving it here.
	handoff chan bool
	stopped chan struct{} // Serve and the watchers ended (for handover)

	errorsLogged atomic.Int64
}

// newVM registers a VM with its pager. removed lists ranges that must read
// as zeroes (carried over by a handover).
func (s *Server) newVM(id uint64, log *slog.Logger, c *net.UnixConn, p peer, u *uffd.UFFD, ms []Mapping, removed [][2]uint64) (*vm, error) {
	maps := byAddress(ms)
	v := &vm{s: s, id: id, log: log, peer: p, conn: c, u: u, maps: maps, started: time.Now(),
		handoff: make(chan bool, 1), stopped: make(chan struct{})}

	s.mu.Lock()
	switch {
	case s.stopping:
		s.mu.Unlock()
		return nil, reject(ReasonShutdown, "the handler is shutting down")
	case len(s.vms) >= s.cfg.MaxVMs:
		s.mu.Unlock()
		return nil, reject(ReasonOverloaded, "already serving %d VMs, the limit", len(s.vms))
	}
	s.mu.Unlock()

	cfg := pager.Config{
		Prefetch: s.cfg.Prefetch,
		Workers:  s.cfg.Workers,
		Reader:   s.cfg.Reader,
		Fill:     s.cfg.Mode == Prefault,
		OnError:  v.onError,
	}
	if s.cfg.Mode == RecordReplay && removed == nil {
		s.traceMu.Lock()
		switch {
		case s.replay != nil:
			v.replay = s.replay
		case !s.recording:
			s.recording = true
			v.rec = &recorder{maps: maps}
			// Page by page, so that the trace holds exactly the pages
			// the VM touched, in order.
			cfg.Prefetch = pager.Prefetch{}
			cfg.OnFault = v.rec.add
		}
		s.traceMu.Unlock()
	}
	v.p = pager.New(u, cfg)
	for i, m := range ms {
		err := v.p.Add(pager.Region{
			Start:    uintptr(m.BaseHostVirtAddr),
			Len:      uintptr(m.Size),
			PageSize: int(m.PageSize),
			Source:   s.cfg.MemFile,
			Offset:   int64(m.Offset),
			Name:     fmt.Sprintf("region %d", i),
		})
		if err != nil {
			s.endRecording(v, false)
			return nil, reject(ReasonRegion, "%v", err)
		}
	}
	if len(removed) > 0 {
		bs, ok := any(v.p).(balloonState)
		if !ok {
			s.endRecording(v, false)
			return nil, errors.New("this pager cannot take over removed (ballooned) ranges")
		}
		for _, r := range removed {
			bs.MarkRemoved(uintptr(r[0]), uintptr(r[1]))
		}
	}
	v.ctx, v.cancel = context.WithCancelCause(context.Background())

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		s.endRecording(v, false)
		return nil, reject(ReasonShutdown, "the handler is shutting down")
	}
	s.vms[v.id] = v
	s.m.started.Add(1)
	return v, nil
}

func (v *vm) guestBytes() uint64 {
	var n uint64
	for _, m := range v.maps {
		n += m.Size
	}
	return n
}

func (v *vm) info() VMInfo {
	return VMInfo{
		ID: v.id, PID: v.peer.pid, UID: v.peer.uid, Regions: slices.Clone(v.maps), Started: v.started,
		Stats: v.p.Stats(), Replay: v.replay != nil, Record: v.rec != nil, Features: v.u.Features(),
	}
}

// onError logs what the pager recovered from, at most 10 lines a VM in
// full and then one in a thousand: a broken VM must not flood the log.
func (v *vm) onError(err error) {
	n := v.errorsLogged.Add(1)
	if n <= 10 || n%1000 == 0 {
		v.log.Error("serving a fault", "err", err, "errors", n)
	}
}

// run serves v until it ends, then releases it (or hands it over).
func (s *Server) run(v *vm) {
	for {
		cause := v.serve()
		close(v.stopped)
		if errors.Is(cause, errHandover) {
			if <-v.handoff {
				s.release(v, cause, true)
				return
			}
			// The other side failed: serve here again. Faults read but not
			// resolved before the stop are re-raised by waking the regions.
			v.log.Warn("this VM was not handed over; serving it here again")
			v.ctx, v.cancel = context.WithCancelCause(context.Background())
			v.stopped = make(chan struct{})
			v.wakeAll()
			continue
		}
		s.release(v, cause, false)
		return
	}
}

// serve runs the pager and the exit watchers until one ends.
func (v *vm) serve() error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.watchConn()
	}()
	if v.peer.pidfd != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.watchPid()
		}()
	}
	if t := v.replay; t != nil {
		v.replay = nil // once per VM
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.runReplay(t)
		}()
	}
	var recStop *time.Timer
	if v.rec != nil {
		recStop = time.AfterFunc(v.s.cfg.RecordFor, func() { v.s.endRecording(v, true) })
	}
	err := v.p.Serve(v.ctx)
	if recStop != nil {
		recStop.Stop()
	}
	if err != nil {
		v.cancel(err)
	} else {
		v.cancel(errGone)
	}
	wg.Wait()
	return context.Cause(v.ctx)
}

// release closes what v holds and retires its counters.
func (s *Server) release(v *vm, cause error, handedOver bool) {
	s.endRecording(v, true)
	v.u.Close()
	v.conn.Close()
	if v.peer.pidfd != nil {
		v.peer.pidfd.Close()
	}
	st := v.p.Stats()
	s.mu.Lock()
	delete(s.vms, v.id)
	addStats(&s.retired, st)
	s.mu.Unlock()
	reason := "gone"
	switch {
	case errors.Is(cause, errExited):
		reason = "exited"
	case errors.Is(cause, errSocketClosed):
		reason = "socket_closed"
	case errors.Is(cause, errShutdown):
		reason = "shutdown"
	case errors.Is(cause, errHandover):
		reason = "handed_over"
	case errors.Is(cause, errGone):
	default:
		reason = "error"
	}
	s.m.ended(reason)
	level, msg := slog.LevelInfo, "VM ended"
	if reason == "error" || reason == "shutdown" {
		level = slog.LevelWarn
	}
	if handedOver {
		msg = "VM handed over"
	}
	v.log.Log(context.Background(), level, msg, "reason", reason, "cause", cause.Error(),
		"served_for", time.Since(v.started).Round(time.Millisecond).String(),
		"faults", st.Faults, "pages", st.Pages, "bytes", st.Bytes, "prefetched", st.Prefetched,
		"filled", st.Filled, "zeroed", st.Zeroed, "removes", st.Removes,
		"fault_p50", st.Latency.Quantile(0.5).String(), "fault_p99", st.Latency.Quantile(0.99).String())
}

// wakeAll wakes every thread waiting on a fault of v, so that a fault
// whose message was read by a handler that stopped is raised again.
func (v *vm) wakeAll() {
	for _, m := range v.maps {
		if err := v.u.Wake(uintptr(m.BaseHostVirtAddr), uintptr(m.Size)); err != nil && !errors.Is(err, uffd.ErrProcessGone) {
			v.log.Warn("waking the region's threads", "region", m.String(), "err", err)
		}
	}
}

// watchConn reads the connection until Firecracker closes it (it exited)
// or v stops. Firecracker sends nothing after the handshake; whatever comes
// is logged once and dropped.
func (v *vm) watchConn() {
	v.conn.SetReadDeadline(time.Time{})
	fired := make(chan struct{})
	stop := context.AfterFunc(v.ctx, func() {
		v.conn.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	buf := make([]byte, 512)
	warned := false
	for {
		n, err := v.conn.Read(buf)
		if n > 0 && !warned {
			warned = true
			v.log.Warn("unexpected data from Firecracker after the handshake; ignored", "bytes", n)
		}
		if err != nil {
			if v.ctx.Err() == nil {
				v.cancel(errSocketClosed)
			}
			return
		}
	}
}

// watchPid waits for the peer process to exit, through its pidfd.
func (v *vm) watchPid() {
	f := v.peer.pidfd
	f.SetReadDeadline(time.Time{})
	fired := make(chan struct{})
	stop := context.AfterFunc(v.ctx, func() {
		f.SetReadDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	err = rc.Read(func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err == nil && n > 0
	})
	if err == nil && v.ctx.Err() == nil {
		v.cancel(errExited)
	}
}

// runReplay prefetches the pages of t, in its order, merging runs of
// consecutive pages into one resolve.
func (v *vm) runReplay(t *Trace) {
	byOff := slices.Clone(v.maps)
	slices.SortFunc(byOff, func(a, b Mapping) int { return cmp.Compare(a.Offset, b.Offset) })
	t0 := time.Now()
	pages, skipped := 0, 0
	const maxRun = 1 << 20
	offs := t.Offsets
	for i := 0; i < len(offs) && v.ctx.Err() == nil; {
		m, ok := mappingAtOffset(byOff, offs[i])
		if !ok {
			skipped++
			i++
			continue
		}
		ps := m.PageSize
		first := offs[i] &^ (ps - 1)
		end := first + ps
		j := i + 1
		for j < len(offs) && end-first < maxRun && offs[j]&^(ps-1) == end && end < m.Offset+m.Size {
			end += ps
			j++
		}
		addr := m.BaseHostVirtAddr + (first - m.Offset)
		if err := v.p.Resolve(uintptr(addr), uintptr(end-first)); err != nil {
			if errors.Is(err, uffd.ErrProcessGone) || errors.Is(err, uffd.ErrClosed) || v.ctx.Err() != nil {
				return
			}
			v.onError(fmt.Errorf("replay: %w", err))
		}
		pages += j - i
		i = j
	}
	if v.ctx.Err() == nil {
		v.log.Info("replay done", "pages", pages, "skipped", skipped, "took", time.Since(t0).Round(time.Millisecond).String())
	}
}

// mappingAtOffset finds the region whose file range holds off.
func mappingAtOffset(byOff []Mapping, off uint64) (Mapping, bool) {
	i, _ := slices.BinarySearchFunc(byOff, off, func(m Mapping, o uint64) int {
		switch {
		case m.Offset+m.Size <= o:
			return -1
		case m.Offset > o:
			return 1
		}
		return 0
	})
	if i < len(byOff) && byOff[i].Offset <= off && off < byOff[i].Offset+byOff[i].Size {
		return byOff[i], true
	}
	for _, m := range byOff { // regions sharing file ranges: not sorted by end
		if m.Offset <= off && off < m.Offset+m.Size {
			return m, true
		}
	}
	return Mapping{}, false
}

// recorder collects the file offsets of a VM's faults in order.
type recorder struct {
	maps []Mapping // by address
	mu   sync.Mutex
	offs []uint64
	done bool
}

func (r *recorder) add(addr uintptr) {
	a := uint64(addr)
	i, found := slices.BinarySearchFunc(r.maps, a, func(m Mapping, a uint64) int {
		switch {
		case m.End() <= a:
			return -1
		case m.BaseHostVirtAddr > a:
			return 1
		}
		return 0
	})
	if !found {
		return
	}
	off := r.maps[i].Offset + (a - r.maps[i].BaseHostVirtAddr)
	r.mu.Lock()
	if !r.done {
		r.offs = append(r.offs, off)
	}
	r.mu.Unlock()
}

// endRecording stops v's recording, writing the trace when save is set
// and anything was recorded.
func (s *Server) endRecording(v *vm, save bool) {
	r := v.rec
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return
	}
	r.done = true
	offs := r.offs
	r.offs = nil
	r.mu.Unlock()
	if !save || len(offs) == 0 {
		s.traceMu.Lock()
		s.recording = false
		s.traceMu.Unlock()
		return
	}
	t := &Trace{Size: s.cfg.MemFile.Size(), Fingerprint: s.fingerprint, Offsets: offs}
	err := WriteTrace(s.cfg.Trace, t)
	s.traceMu.Lock()
	s.recording = false
	if err == nil {
		s.replay = t
	}
	s.traceMu.Unlock()
	if err != nil {
		v.log.Error("writing the trace", "trace", s.cfg.Trace, "err", err)
		return
	}
	v.log.Info("trace written: later VMs replay it", "trace", s.cfg.Trace, "pages", len(offs))
}
