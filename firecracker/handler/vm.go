//go:build linux

package handler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker"
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
	maps    []firecracker.Mapping // by address
	started time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc

	prefault bool   // populate the VM's memory once serving
	replay   *Trace // the trace to replay once serving
	rec      *recorder

	// handover: the result of sending this VM to another instance: true
	// once it took it, false to go on serving it here.
	handoff chan bool
	stopped chan struct{} // Serve and the watchers ended (for handover)

	errorsLogged atomic.Int64
}

// newVM registers a VM with its pager. removed lists ranges that must read
// as zeroes (carried over by a handover; nil for a new VM).
func (s *Server) newVM(id uint64, log *slog.Logger, c *net.UnixConn, p peer, u *uffd.UFFD, ms []firecracker.Mapping, removed [][2]uint64) (*vm, error) {
	maps := firecracker.ByAddress(ms)
	v := &vm{s: s, id: id, log: log, peer: p, conn: c, u: u, maps: maps, started: time.Now(),
		prefault: s.cfg.Mode == Prefault,
		handoff:  make(chan bool, 1), stopped: make(chan struct{})}

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

	eng, err := s.vmEngine()
	if err != nil {
		return nil, reject(ReasonOverloaded, "%v", err)
	}
	cfg := pager.Config{
		Engine:   eng,
		Prefetch: s.cfg.Prefetch,
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
	pg, err := pager.New(u, cfg)
	if err != nil {
		s.endRecording(v, false)
		return nil, reject(firecracker.ReasonRegion, "%v", err)
	}
	v.p = pg
	for i, m := range ms {
		err := v.p.Add(pager.Region{
			Start:    uintptr(m.BaseHostVirtAddr),
			Len:      uintptr(m.Size),
			PageSize: int(m.PageSize),
			Source:   s.cfg.Memory,
			Offset:   int64(m.Offset),
			Name:     fmt.Sprintf("region %d", i),
		})
		if err != nil {
			s.endRecording(v, false)
			return nil, reject(firecracker.ReasonRegion, "%v", err)
		}
	}
	for _, r := range removed {
		v.p.MarkRemoved(pager.Range{Start: uintptr(r[0]), End: uintptr(r[1])})
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
		ID: v.id, PID: v.peer.PID, UID: v.peer.UID, Regions: slices.Clone(v.maps), Started: v.started,
		Stats: v.p.Stats(), Replay: v.replay != nil, Record: v.rec != nil, Features: v.u.Features(),
	}
}

// onError logs what the pager recovered from: the first 10 errors of a
// VM, then every thousandth, so that a broken VM does not flood the log.
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

// serve runs the pager, the exit watchers and the VM's population
// (prefault or replay) until one ends it.
func (v *vm) serve() error {
	var wg sync.WaitGroup
	wg.Go(v.watchConn)
	if v.peer.pidfd != nil {
		wg.Go(v.watchPid)
	}
	// Population resolves ahead of the guest once the pager serves.
	serving := func(fn func()) func() {
		return func() {
			select {
			case <-v.p.Serving():
				fn()
			case <-v.ctx.Done():
			}
		}
	}
	if t := v.replay; t != nil {
		v.replay = nil // once per VM
		wg.Go(serving(func() { v.runReplay(t) }))
	}
	if v.prefault {
		v.prefault = false // once per VM, on this side of a handover
		wg.Go(serving(v.runPrefault))
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
	s.retired.Add(st)
	s.mu.Unlock()
	reason := EndGone
	switch {
	case errors.Is(cause, errExited):
		reason = EndExited
	case errors.Is(cause, errSocketClosed):
		reason = EndSocketClosed
	case errors.Is(cause, errShutdown):
		reason = EndShutdown
	case errors.Is(cause, errHandover):
		reason = EndHandedOver
	case errors.Is(cause, errGone):
	default:
		reason = EndError
	}
	s.m.ended(reason)
	level, msg := slog.LevelInfo, "VM ended"
	if reason == EndError || reason == EndShutdown {
		level = slog.LevelWarn
	}
	if handedOver {
		msg = "VM handed over"
	}
	v.log.Log(context.Background(), level, msg, "reason", reason, "cause", cause.Error(),
		"served_for", time.Since(v.started).Round(time.Millisecond),
		"faults", st.Faults, "pages", st.Pages, "bytes", st.Bytes, "prefetched", st.Prefetched,
		"filled", st.Filled, "zeroed", st.Zeroed, "removes", st.Removes,
		"fault_p50", st.Latency.Quantile(0.5), "fault_p99", st.Latency.Quantile(0.99))
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

// resolve installs [addr, addr+n) ahead of the guest, skipping what the
// VMM maps PROT_NONE now. It returns the bytes it asked the pager for and
// the bytes it skipped, and false when v stopped.
func (v *vm) resolve(pm *peerMemory, addr, n uint64, what string) (asked, skipped uint64, ok bool) {
	for _, r := range pm.accessible(addr, addr+n) {
		if err := v.p.Resolve(v.ctx, uintptr(r[0]), uintptr(r[1]-r[0])); err != nil {
			if errors.Is(err, uffd.ErrProcessGone) || errors.Is(err, uffd.ErrClosed) || errors.Is(err, pager.ErrNotServing) || v.ctx.Err() != nil {
				return asked, skipped, false
			}
			v.onError(fmt.Errorf("%s: %w", what, err))
		}
		asked += r[1] - r[0]
		pm.resolved(r[1] - r[0])
	}
	return asked, n - asked, v.ctx.Err() == nil
}

// runPrefault populates every region in address order, in chunks, while
// faults are served as they come, skipping memory the VMM maps PROT_NONE
// (unplugged hotplug memory: its faults come once it is plugged, and are
// served on demand).
func (v *vm) runPrefault() {
	t0 := time.Now()
	pm := newPeerMemory(v)
	var bytes, skipped uint64
	for _, m := range v.maps {
		chunk := max(uint64(pager.DefaultFillChunk), m.PageSize)
		for a := m.BaseHostVirtAddr; a < m.End(); a += chunk {
			n := min(chunk, m.End()-a)
			got, skip, ok := v.resolve(pm, a, n, "prefault")
			bytes += got
			skipped += skip
			if !ok {
				v.log.Debug("prefault stopped", "bytes", bytes, "skipped_bytes", skipped)
				return
			}
		}
	}
	v.log.Info("prefault done", "bytes", bytes, "skipped_bytes", skipped, "took", time.Since(t0).Round(time.Millisecond))
}

// runReplay prefetches the pages of t, in its order, merging runs of
// consecutive pages into one resolve, skipping memory the VMM maps
// PROT_NONE. From memory that is fetched (a remote image), the chunks are
// asked for first, in the trace's order (see arrivalOrder).
func (v *vm) runReplay(t *Trace) {
	t0 := time.Now()
	var split uint64
	f, fetched := v.s.cfg.Memory.(pager.Fetcher)
	if fetched {
		split = 1 << f.State().ChunkShift
	}
	runs, outside := replayRuns(v.maps, t.Offsets, split)
	seq := slices.Values(runs)
	if fetched {
		seq = v.arrivalOrder(f, runs, split)
	}
	pm := newPeerMemory(v)
	pages := 0
	var skipped uint64
	for r := range seq {
		_, skip, ok := v.resolve(pm, r.addr, r.n, "replay")
		skipped += skip
		if !ok {
			v.log.Debug("replay stopped", "pages", pages, "of", len(t.Offsets))
			return
		}
		pages += r.pages
	}
	if v.ctx.Err() != nil {
		v.log.Debug("replay stopped", "pages", pages, "of", len(t.Offsets))
		return
	}
	v.log.Info("replay done", "pages", pages, "outside", outside, "skipped_bytes", skipped, "took", time.Since(t0).Round(time.Millisecond))
}

// replayRun is a run of consecutive pages of a trace: n bytes at addr in
// the guest, at off in the memory file, pages entries of the trace.
type replayRun struct {
	addr, off, n uint64
	pages        int
}

// replayRuns turns a trace's file offsets into runs of consecutive pages
// (1 MiB at most, none across a multiple of split when it is not 0), in
// the trace's order, and counts the offsets outside every mapping.
func replayRuns(maps []firecracker.Mapping, offs []uint64, split uint64) (runs []replayRun, outside int) {
	byOff := slices.Clone(maps)
	slices.SortFunc(byOff, func(a, b firecracker.Mapping) int { return cmp.Compare(a.Offset, b.Offset) })
	const maxRun = 1 << 20
	for i := 0; i < len(offs); {
		m, ok := mappingAtOffset(byOff, offs[i])
		if !ok {
			outside++
			i++
			continue
		}
		ps := m.PageSize
		first := offs[i] &^ (ps - 1)
		end := first + ps
		j := i + 1
		for j < len(offs) && end-first < maxRun && offs[j]&^(ps-1) == end && end < m.Offset+m.Size && (split == 0 || end%split != 0) {
			end += ps
			j++
		}
		runs = append(runs, replayRun{addr: m.BaseHostVirtAddr + (first - m.Offset), off: first, n: end - first, pages: j - i})
		i = j
	}
	return runs, outside
}

// arrivalOrder asks f for the chunks (of split bytes) that runs need,
// each once, in the order the runs first need them, in the background
// (the guest's faults overtake them), and yields the runs of each chunk,
// in their order, as soon as the chunk has arrived, until v stops.
// Resolving pages whose bytes are there installs them from the cache in
// the engine's threads, in one go, rather than one at a time from Go as
// each arrives; and until then the pages are not claimed, so that the
// guest's own faults on them are urgent requests, not waits behind the
// replay.
func (v *vm) arrivalOrder(f pager.Fetcher, runs []replayRun, split uint64) iter.Seq[replayRun] {
	limit := (uint64(f.Size()) + 4095) &^ 4095
	byChunk := map[uint64][]replayRun{}
	var order []uint64
	for _, r := range runs {
		c := r.off / split
		if _, ok := byChunk[c]; !ok {
			order = append(order, c)
		}
		byChunk[c] = append(byChunk[c], r)
	}
	arrived := make(chan uint64, len(order))
	for _, c := range order {
		off := c * split
		if off >= limit {
			arrived <- c // outside the memory: resolving reports it
			continue
		}
		n := min(split, limit-off)
		var left atomic.Int64
		left.Store(int64(n))
		var once sync.Once
		f.Fetch(int64(off), int64(n), false, func(_, got int64, err error) {
			// On an error, resolving asks again (and applies the
			// region's error policy).
			if err != nil || left.Add(-got) == 0 {
				once.Do(func() { arrived <- c })
			}
		})
	}
	return func(yield func(replayRun) bool) {
		for range order {
			var c uint64
			select {
			case c = <-arrived:
			case <-v.ctx.Done():
				return
			}
			for _, r := range byChunk[c] {
				if !yield(r) {
					return
				}
			}
		}
	}
}

// mappingAtOffset finds the region whose file range holds off.
func mappingAtOffset(byOff []firecracker.Mapping, off uint64) (firecracker.Mapping, bool) {
	i, _ := slices.BinarySearchFunc(byOff, off, func(m firecracker.Mapping, o uint64) int {
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
	return firecracker.Mapping{}, false
}

// peerMemory follows which parts of a VM's memory its VMM can touch now,
// from /proc/PID/maps, re-read as population goes on: memory hotplug
// mprotect-s blocks between PROT_NONE (unplugged) and read-write
// (plugged) with no userfaultfd event.
type peerMemory struct {
	v        *vm
	m        firecracker.MemoryMap
	read     time.Time
	since    uint64 // bytes resolved since the map was read
	disabled bool   // the map cannot be read: populate everything
}

// The map is read again after refreshBytes resolved or refreshAge passed,
// whichever comes first: a block unplugged meanwhile may be populated, up
// to that much.
const (
	refreshBytes = 4 << 20
	refreshAge   = 10 * time.Millisecond
)

func newPeerMemory(v *vm) *peerMemory {
	pm := &peerMemory{v: v}
	if v.peer.PID <= 0 {
		pm.disable(errors.New("the peer's pid is unknown (another pid namespace?)"))
	}
	return pm
}

func (pm *peerMemory) disable(err error) {
	pm.disabled = true
	pm.v.log.Warn("cannot read the VMM's memory map: memory it maps PROT_NONE (unplugged hotplug memory) is populated too", "err", err)
}

func (pm *peerMemory) resolved(n uint64) { pm.since += n }

// accessible returns the parts of [start, end) that the VMM maps
// accessible now.
func (pm *peerMemory) accessible(start, end uint64) [][2]uint64 {
	if pm.disabled {
		return [][2]uint64{{start, end}}
	}
	if pm.m == nil || pm.since >= refreshBytes || time.Since(pm.read) >= refreshAge {
		m, err := firecracker.ReadMemoryMap(pm.v.peer.PID)
		if pm.exited() {
			return nil // the VM is ending; the pid may be another process's now
		}
		if err != nil {
			pm.disable(err)
			return [][2]uint64{{start, end}}
		}
		pm.m, pm.read, pm.since = m, time.Now(), 0
	}
	return pm.m.Accessible(start, end)
}

// exited reports whether the peer process has exited (its pidfd is
// readable).
func (pm *peerMemory) exited() bool {
	f := pm.v.peer.pidfd
	if f == nil {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		gone = err == nil && n > 0
	})
	return gone
}
