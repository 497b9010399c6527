//go:build cgo && linux

package pager

/*
#cgo CFLAGS: -O2 -std=gnu11 -Wall -Wextra -Werror
#cgo LDFLAGS: -pthread
// None of these keeps a Go pointer (memory the engine reads is pinned)
// or calls back into Go.
#cgo noescape pg_engine_new
#cgo nocallback pg_engine_new
#cgo noescape pg_engine_free
#cgo nocallback pg_engine_free
#cgo noescape pg_engine_attach
#cgo nocallback pg_engine_attach
#cgo noescape pg_engine_detach
#cgo nocallback pg_engine_detach
#cgo noescape pg_engine_threads
#cgo nocallback pg_engine_threads
#cgo noescape pg_new
#cgo nocallback pg_new
#cgo noescape pg_free
#cgo nocallback pg_free
#cgo noescape pg_add
#cgo nocallback pg_add
#cgo noescape pg_take_fork
#cgo nocallback pg_take_fork
#cgo noescape pg_set_fds
#cgo nocallback pg_set_fds
#cgo noescape pg_take_reqs
#cgo nocallback pg_take_reqs
#cgo noescape pg_take_errs
#cgo nocallback pg_take_errs
#cgo noescape pg_take_trace
#cgo nocallback pg_take_trace
#cgo noescape pg_status
#cgo nocallback pg_status
#cgo noescape pg_counters_read
#cgo nocallback pg_counters_read
#cgo noescape pg_pending
#cgo nocallback pg_pending
#cgo noescape pg_install_req
#cgo nocallback pg_install_req
#cgo noescape pg_release_req
#cgo nocallback pg_release_req
#cgo noescape pg_unclaim_req
#cgo nocallback pg_unclaim_req
#cgo noescape pg_poison_req
#cgo nocallback pg_poison_req
#cgo noescape pg_count
#cgo nocallback pg_count
#cgo noescape pg_resolve
#cgo nocallback pg_resolve
#cgo noescape pg_probe
#cgo nocallback pg_probe
#cgo noescape pg_resolved
#cgo nocallback pg_resolved
#cgo noescape pg_spans
#cgo nocallback pg_spans
#cgo noescape pg_removed
#cgo nocallback pg_removed
#cgo noescape pg_mark_removed
#cgo nocallback pg_mark_removed
#cgo noescape pg_release_all
#cgo nocallback pg_release_all
#include <stdlib.h>
#include "engine.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
)

// sysEngine is an Engine's C side.
type sysEngine struct{ e *C.pg_engine }

func (e *Engine) start() error {
	cpus := make([]C.int, len(e.cpus))
	for i, c := range e.cpus {
		cpus[i] = C.int(c)
	}
	var errno C.int
	ce := C.pg_engine_new(&cpus[0], C.int(len(cpus)), C.int64_t(e.spin), &errno)
	if ce == nil {
		return fmt.Errorf("pager: engine: %w", syscall.Errno(errno))
	}
	e.sys = &sysEngine{ce}
	return nil
}

func (e *Engine) stop() { C.pg_engine_free(e.sys.e) }

// attach makes the engine serve p.
func (e *Engine) attach(p *Pager) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("pager: the engine was closed")
	}
	if errno := C.pg_engine_attach(e.sys.e, p.sys.c); errno != 0 {
		return &uffd.OpError{Op: "serve", Err: syscall.Errno(errno)}
	}
	e.users++
	return nil
}

// detach stops the engine serving p; when it returns, no engine thread
// touches p.
func (e *Engine) detach(p *Pager) {
	e.mu.Lock()
	defer e.mu.Unlock()
	C.pg_engine_detach(e.sys.e, p.sys.c)
	e.users--
}

// threads returns the OS thread ids of the engine's readers and workers.
func (e *Engine) threads() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]C.int, 2*len(e.cpus))
	n := int(C.pg_engine_threads(e.sys.e, &ids[0], C.int(len(ids))))
	out := make([]int, 0, n)
	for _, id := range ids[:n] {
		out = append(out, int(id))
	}
	return out
}

// sysPager is a Pager's C side, freed when the Pager is unreachable.
type sysPager struct {
	c   *C.pg_pager
	pin runtime.Pinner // Go memory the engine reads: images, caches' bits

	mu      sync.Mutex
	cur     *serve             // the running Serve, or nil
	fetches map[*fetching]bool // requests a Fetcher holds
}

func freeSys(s *sysPager) {
	C.pg_free(s.c)
	s.pin.Unpin()
}

func (p *Pager) newSys() error {
	pf := p.cfg.Prefetch
	c := C.pg_new(-1, -1, cbool(p.events), cbool(p.poison), C.int64_t(pf.Min), C.int64_t(pf.Max), cbool(pf.Adaptive), cbool(p.cfg.OnFault != nil))
	if c == nil {
		return &uffd.OpError{Op: "pager", Err: syscall.ENOMEM}
	}
	p.adopt(c)
	return nil
}

func (p *Pager) adopt(c *C.pg_pager) {
	p.sys = &sysPager{c: c}
	runtime.AddCleanup(p, freeSys, p.sys)
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func (p *Pager) sysAdd(s *source, id int) error {
	d := C.pg_desc{
		start: C.uint64_t(s.Start), len: C.uint64_t(s.Len), psize: C.uint64_t(s.PageSize),
		off: C.int64_t(s.Offset), id: C.int32_t(id), policy: C.PG_POISON,
	}
	if s.OnError == WaitOnError {
		d.policy = C.PG_WAIT
	}
	p.pinSource(s)
	switch src := s.Source.(type) {
	case zeroSource:
		d.src = C.PG_SRC_ZERO
	case Fetcher:
		st := src.State()
		d.src = C.PG_SRC_CACHE
		d.data = (*C.char)(unsafe.Pointer(unsafe.SliceData(st.Data)))
		d.present = (*C.uint64_t)(unsafe.Pointer(unsafe.SliceData(st.Present)))
		d.czero = (*C.uint64_t)(unsafe.Pointer(unsafe.SliceData(st.Zero)))
		d.pins = (*C.int32_t)(unsafe.Pointer(unsafe.SliceData(st.Pins)))
		d.chunk_shift = C.uint32_t(st.ChunkShift)
	case Mapped:
		d.src = C.PG_SRC_MAPPED
		d.data = (*C.char)(unsafe.Pointer(unsafe.SliceData(src.Bytes())))
	default:
		d.src = C.PG_SRC_GO
	}
	if errno := C.pg_add(p.sys.c, &d); errno != 0 {
		return syscall.Errno(errno)
	}
	return nil
}

// pinSource pins the Go memory of s that the engine reads, for as long as
// the pager lives (a no-op for memory that is not Go's, such as a mapped
// file).
func (p *Pager) pinSource(s *source) {
	pin := func(ptr unsafe.Pointer) {
		if ptr != nil {
			p.sys.pin.Pin(ptr)
		}
	}
	switch src := s.Source.(type) {
	case Fetcher:
		st := src.State()
		pin(unsafe.Pointer(unsafe.SliceData(st.Data)))
		pin(unsafe.Pointer(unsafe.SliceData(st.Present)))
		pin(unsafe.Pointer(unsafe.SliceData(st.Zero)))
		pin(unsafe.Pointer(unsafe.SliceData(st.Pins)))
	case Mapped:
		pin(unsafe.Pointer(unsafe.SliceData(src.Bytes())))
	}
}

// Regions returns the regions as they are now in the faulting process:
// REMAP events move them, UNMAP events cut them.
func (p *Pager) Regions() []Region {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.regionsLocked()
}

func (p *Pager) regionsLocked() []Region {
	var spans []C.pg_span
	for want := 16; ; {
		spans = make([]C.pg_span, want)
		n := int(C.pg_spans(p.sys.c, &spans[0], C.int(len(spans))))
		if n <= len(spans) {
			spans = spans[:n]
			break
		}
		want = n + 8
	}
	out := make([]Region, 0, len(spans))
	for _, sp := range spans {
		s := p.regions[sp.id]
		r := s.Region
		r.Start, r.Len, r.Offset = uintptr(sp.start), uintptr(sp.len), int64(sp.off)
		out = append(out, r)
	}
	return out
}

// Resolved reports whether the page holding addr was resolved.
func (p *Pager) Resolved(addr uintptr) bool { return C.pg_resolved(p.sys.c, C.uint64_t(addr)) != 0 }

// RemovedRanges returns the ranges the process dropped (REMOVE events, or
// MarkRemoved) and that were not served since: their next faults get
// zeroes. With MarkRemoved on another Pager it carries that knowledge
// over, for a handover of the userfaultfd to a new handler.
func (p *Pager) RemovedRanges() []Range {
	for want := 64; ; {
		buf := make([]C.uint64_t, 2*want)
		n := int(C.pg_removed(p.sys.c, &buf[0], C.int(len(buf))))
		if 2*n > len(buf) {
			want = n + 16
			continue
		}
		out := make([]Range, n)
		for i := range out {
			out[i] = Range{uintptr(buf[2*i]), uintptr(buf[2*i+1])}
		}
		return out
	}
}

// MarkRemoved records that the process dropped r, as a REMOVE event does:
// the next faults there get zeroes.
func (p *Pager) MarkRemoved(r Range) {
	C.pg_mark_removed(p.sys.c, C.uint64_t(r.Start), C.uint64_t(r.End))
}

// Stats returns the counters.
func (p *Pager) Stats() Stats {
	var c C.pg_counters
	C.pg_counters_read(p.sys.c, &c)
	s := Stats{
		Faults: uint64(c.faults), Pages: uint64(c.pages), Bytes: uint64(c.bytes),
		Prefetched: uint64(c.prefetched), Filled: uint64(c.filled), Zeroed: uint64(c.zeroed),
		Exists: uint64(c.exists), Retries: uint64(c.retries), SourceErrors: uint64(c.source_errors),
		Poisoned: uint64(c.poisoned), Outside: uint64(c.outside),
		Removes: uint64(c.removes), Unmaps: uint64(c.unmaps), Remaps: uint64(c.remaps), Forks: uint64(c.forks),
	}
	for i := range s.Latency.Buckets {
		s.Latency.Buckets[i] = uint64(c.latency[i])
	}
	return s
}

// ---------------------------------------------------------------------
// Serve.

// Serve serves faults until ctx ends, the userfaultfd is closed, or the
// faulting process is gone (ESRCH); each of those returns nil. It returns
// an error when the descriptor cannot be read. Serving goes on in the
// engine's threads; Serve's own goroutine, and the few it starts (source
// reads, retries, the fill, callbacks, children served on its behalf),
// do the work that needs Go. They have all ended when it returns.
func (p *Pager) Serve(ctx context.Context) error {
	if !p.serving.CompareAndSwap(false, true) {
		return ErrServing
	}
	defer p.serving.Store(false)
	s, err := p.start(ctx)
	if s == nil || err != nil {
		return err
	}
	return s.run()
}

// serve is one run of Serve.
type serve struct {
	p      *Pager
	eng    *Engine
	own    bool // eng is Serve's own
	ctx    context.Context
	cancel context.CancelCauseFunc
	fd     int      // the engine's duplicate of the userfaultfd
	nf     *os.File // the pager's eventfd: the engine has work for Go
	wg     sync.WaitGroup

	q     queue
	retry retryQueue

	// users is held shared by callers from outside Serve's goroutines
	// that use the engine's descriptor (Resolve, a Fetcher's callbacks),
	// and exclusively by Serve before it closes it; ended says it did.
	users sync.RWMutex
	ended bool

	// drain's buffers, allocated once.
	reqs  [64]C.pg_req
	errs  [64]C.pg_err
	trace [1024]C.uint64_t
}

// errStopped ends a Serve without an error: the process is gone.
var errStopped = errors.New("pager: the faulting process is gone")

func (p *Pager) start(ctx context.Context) (*serve, error) {
	fd, err := p.u.Dup()
	if err != nil {
		if errors.Is(err, uffd.ErrClosed) {
			return nil, nil
		}
		return nil, err
	}
	nfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, &uffd.OpError{Op: "eventfd", Err: err}
	}
	s := &serve{p: p, fd: fd, nf: os.NewFile(uintptr(nfd), "pager-events"), eng: p.cfg.Engine}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	s.q.init()
	s.retry.init()
	C.pg_set_fds(p.sys.c, C.int(fd), C.int(nfd))
	if s.eng == nil {
		if s.eng, err = NewEngine(EngineConfig{}); err != nil {
			s.close()
			return nil, err
		}
		s.own = true
	}
	if err := s.eng.attach(p); err != nil {
		s.close()
		return nil, err
	}
	p.sys.mu.Lock()
	p.sys.cur = s
	p.sys.mu.Unlock()
	p.once.Do(func() { close(p.ready) })
	return s, nil
}

// close releases what start took, once nothing uses it.
func (s *serve) close() {
	C.pg_set_fds(s.p.sys.c, -1, -1)
	s.nf.Close()
	unix.Close(s.fd)
	if s.own && s.eng != nil {
		s.eng.Close()
	}
	s.cancel(nil)
}

func (s *serve) run() error {
	p := s.p
	s.go_(s.pump)
	for range p.cfg.Fetchers {
		s.go_(s.fetcher)
	}
	s.go_(s.retrier)
	if p.cfg.Fill {
		s.go_(func() {
			if err := s.resolve(s.ctx, 0, ^uintptr(0), p.cfg.FillChunk, true); err != nil && s.ctx.Err() == nil {
				p.report(err)
			}
		})
	}
	if path := p.u.Path(); path == uffd.PathFork || path == uffd.PathAdopted {
		// Another process's memory: when it exits with no fault pending,
		// nothing tells us. Probe it now and then.
		s.go_(s.watchProcess)
	}
	select {
	case <-s.ctx.Done():
	case <-p.u.Done():
	}
	s.eng.detach(p)
	p.sys.mu.Lock()
	p.sys.cur = nil
	p.sys.mu.Unlock()
	s.cancel(nil)
	s.q.shut()
	s.retry.shut()
	s.nf.SetReadDeadline(time.Unix(1, 0))
	s.wg.Wait()
	s.users.Lock()
	s.ended = true
	s.users.Unlock()
	// What Go still held, and what the engine left for Go, goes back:
	// its threads fault again, for the next Serve.
	s.q.releaseAll(p)
	s.retry.releaseAll(p)
	s.releaseFetches()
	s.drain(true)
	C.pg_release_all(p.sys.c)
	err := context.Cause(s.ctx)
	s.close()
	var fatal *uffd.OpError
	if errors.As(err, &fatal) {
		return err
	}
	return nil
}

// enter lets a caller from outside Serve's goroutines use the engine's
// descriptor, until exit; false once Serve ended.
func (s *serve) enter() bool {
	s.users.RLock()
	if s.ended {
		s.users.RUnlock()
		return false
	}
	return true
}

func (s *serve) exit() { s.users.RUnlock() }

// release gives back the pages of a request and wakes their threads, from
// anywhere: once Serve ended, through the userfaultfd itself.
func (s *serve) release(q *C.pg_req) {
	if s.enter() {
		C.pg_release_req(s.p.sys.c, q)
		s.exit()
		return
	}
	C.pg_unclaim_req(s.p.sys.c, q)
	s.p.u.Wake(uintptr(q.addr), uintptr(q.len))
}

func (s *serve) go_(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// pump takes what the engine left for Go each time it says so.
func (s *serve) pump() {
	var b [8]byte
	var tick *time.Ticker
	if s.p.cfg.OnFault != nil {
		tick = time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
	}
	for s.ctx.Err() == nil {
		if tick != nil {
			s.nf.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		}
		s.nf.Read(b[:])
		s.drain(false)
	}
}

// drain handles what the engine queued for Go: its status, requests,
// errors, forks and the fault trace. final: Serve is ending; requests
// are released instead of served.
func (s *serve) drain(final bool) {
	p := s.p
	c := p.sys.c
	var errno C.int
	if st := C.pg_status(c, &errno); st&C.PG_ST_FATAL != 0 {
		s.cancel(&uffd.OpError{Op: "read", Err: syscall.Errno(errno)})
	} else if st&C.PG_ST_GONE != 0 {
		s.cancel(errStopped)
	}
	reqs := &s.reqs
	for {
		n := int(C.pg_take_reqs(c, &reqs[0], C.int(len(reqs))))
		for i := range reqs[:n] {
			if final {
				C.pg_release_req(c, &reqs[i])
			} else {
				s.q.push(reqs[i])
			}
		}
		if n < len(reqs) {
			break
		}
	}
	errs := &s.errs
	var dropped C.uint64_t
	for {
		n := int(C.pg_take_errs(c, &errs[0], C.int(len(errs)), &dropped))
		for _, e := range errs[:n] {
			s.reportErr(e)
		}
		if dropped > 0 {
			p.report(fmt.Errorf("pager: %d more errors were not recorded", uint64(dropped)))
		}
		if n < len(errs) {
			break
		}
	}
	for {
		var fd C.int
		child := C.pg_take_fork(c, &fd)
		if child == nil {
			break
		}
		s.fork(child, int(fd), final)
	}
	if p.cfg.OnFault != nil {
		tr := &s.trace
		for {
			n := int(C.pg_take_trace(c, &tr[0], C.int(len(tr))))
			for _, a := range tr[:n] {
				p.cfg.OnFault(uintptr(a))
			}
			if n < len(tr) {
				break
			}
		}
	}
}

func (s *serve) reportErr(e C.pg_err) {
	p := s.p
	addr, n := uintptr(e.addr), uintptr(e.len)
	switch e.kind {
	case C.PG_ERR_OUTSIDE:
		p.report(&outsideError{addr})
	default:
		p.report(&uffd.OpError{Op: "install", Addr: addr, Len: n, Err: syscall.Errno(e.err)})
	}
}

// fork takes the child of a FORK event: it goes to OnFork, or is served
// here until Serve ends.
func (s *serve) fork(c *C.pg_pager, fd int, final bool) {
	p := s.p
	u, err := uffd.FromFD(fd, 0)
	if err != nil {
		C.pg_free(c)
		p.report(fmt.Errorf("pager: a fork's userfaultfd: %w", err))
		return
	}
	child := &Pager{u: u, cfg: p.cfg, events: p.events, poison: p.poison, ready: make(chan struct{})}
	p.mu.Lock()
	child.regions = append([]*source(nil), p.regions...)
	p.mu.Unlock()
	child.adopt(c)
	for _, r := range child.regions {
		child.pinSource(r)
	}
	if p.cfg.OnFork != nil && !final {
		p.cfg.OnFork(child)
		return
	}
	if final {
		u.Close()
		return
	}
	// Served here: on this Serve's engine, which outlives it.
	child.cfg.Engine = s.eng
	s.go_(func() {
		defer u.Close()
		if err := child.Serve(s.ctx); err != nil {
			p.report(err)
		}
	})
}

func (s *serve) watchProcess() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if C.pg_probe(s.p.sys.c) == C.int(syscall.ESRCH) {
			s.cancel(errStopped)
			return
		}
	}
}
