//go:build cgo && linux

package pager

/*
#include "engine.h"
*/
import "C"

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gouffd/uffd"
)

// The slow path: requests the engine hands to Go, for pages whose
// contents are not in memory (Func sources, io.ReaderAt sources, fetched
// sources whose bytes are not there yet) and for sources that failed.

// item is a request and how often it failed.
type item struct {
	q       C.pg_req
	attempt int
}

// queue holds the requests waiting for a fetcher, urgent ones (a thread
// waits) first. Its slices are reused, so that steady serving allocates
// nothing.
type queue struct {
	mu      sync.Mutex
	cond    sync.Cond
	urgent  []item
	bg      []item
	working int // urgent items being handled
	shut_   bool
}

func (q *queue) init() { q.cond.L = &q.mu }

func (q *queue) push(r C.pg_req) { q.pushItem(item{q: r}) }

func (q *queue) pushItem(it item) {
	q.mu.Lock()
	if it.q.urgent != 0 {
		q.urgent = append(q.urgent, it)
	} else {
		q.bg = append(q.bg, it)
	}
	q.mu.Unlock()
	q.cond.Signal()
}

func popFront(s []item) (item, []item) {
	it := s[0]
	copy(s, s[1:])
	return it, s[:len(s)-1]
}

// pop waits for an item; false once shut.
func (q *queue) pop() (item, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.shut_ && len(q.urgent) == 0 && len(q.bg) == 0 {
		q.cond.Wait()
	}
	var it item
	switch {
	case q.shut_:
		return it, false
	case len(q.urgent) > 0:
		it, q.urgent = popFront(q.urgent)
		q.working++
	default:
		it, q.bg = popFront(q.bg)
	}
	return it, true
}

func (q *queue) done(it *item) {
	if it.q.urgent != 0 {
		q.mu.Lock()
		q.working--
		q.mu.Unlock()
	}
}

// urgentWork reports whether a thread waits on a request of the queue.
func (q *queue) urgentWork() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.urgent) > 0 || q.working > 0
}

func (q *queue) shut() {
	q.mu.Lock()
	q.shut_ = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

func (q *queue) releaseAll(p *Pager) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range [][]item{q.urgent, q.bg} {
		for i := range s {
			C.pg_release_req(p.sys.c, &s[i].q)
		}
	}
	q.urgent, q.bg = nil, nil
}

func (s *serve) fetcher() {
	var buf []byte
	for {
		it, ok := s.q.pop()
		if !ok {
			return
		}
		buf = s.handle(&it, buf)
		s.q.done(&it)
	}
}

// handle serves one request; buf is the fetcher's buffer, returned grown.
func (s *serve) handle(it *item, buf []byte) []byte {
	p := s.p
	q := &it.q
	switch q.kind {
	case C.PG_REQ_READ:
		var err error
		if buf, err = p.readReq(q, buf); err != nil {
			s.failed(it, err)
			return buf
		}
		var at C.uint64_t
		C.pg_install_req(p.sys.c, q, (*C.char)(unsafe.Pointer(&buf[0])), &at)
	case C.PG_REQ_RETRY:
		// A mapped source could not be read (EFAULT: a file truncated
		// under us, for instance): try the copy again, after a backoff.
		if it.attempt == 0 {
			s.failed(it, syscall.Errno(q.err))
			return buf
		}
		var at C.uint64_t
		if C.pg_install_req(p.sys.c, q, nil, &at) == C.PG_SRCERR {
			s.failed(it, syscall.EFAULT)
		}
	case C.PG_REQ_FETCH:
		s.fetch(*it)
	}
	return buf
}

// readReq reads the contents of request q's pages from its source into
// buf (grown as needed), which it returns.
func (p *Pager) readReq(q *C.pg_req, buf []byte) ([]byte, error) {
	n := int(q.len)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	got, err := p.region(int(q.id)).Source.ReadAt(buf[:n], int64(q.off))
	if got < n {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	return buf, nil
}

// failed applies the retry policy to a request that failed with err.
func (s *serve) failed(it *item, err error) {
	p := s.p
	c := p.sys.c
	q := &it.q
	it.attempt++
	src := p.region(int(q.id))
	final := it.attempt >= p.cfg.Retry.Attempts
	serr := &SourceError{Region: src.label(), Offset: int64(q.off), Len: int(q.len), Err: err, Final: final}
	if it.attempt == p.cfg.Retry.Attempts {
		C.pg_count(c, 0, 1)
	}
	p.report(serr)
	switch {
	case q.fault == 0:
		// A prefetch: nobody waits for it. Let go; a thread that
		// faults there gets its own request.
		C.pg_release_req(c, q)
		return
	case final && src.OnError == PoisonOnError && p.poison:
		if errno := C.pg_poison_req(c, q); errno != 0 {
			p.report(&uffd.OpError{Op: "poison", Addr: uintptr(q.fault), Len: uintptr(q.psize), Err: syscall.Errno(errno)})
		}
		return
	}
	d := p.cfg.Retry.Backoff << min(it.attempt-1, 30)
	if d > p.cfg.Retry.MaxBackoff || d <= 0 {
		d = p.cfg.Retry.MaxBackoff
	}
	s.retry.add(*it, time.Now().Add(d))
}

// retryQueue holds failed requests until their backoff ends.
type retryQueue struct {
	mu    sync.Mutex
	h     retryHeap
	wake  chan struct{}
	shut_ bool
}

type retryItem struct {
	item
	when time.Time
}

type retryHeap []retryItem

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].when.Before(h[j].when) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retryItem)) }
func (h *retryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func (r *retryQueue) init() { r.wake = make(chan struct{}, 1) }

func (r *retryQueue) add(it item, when time.Time) {
	r.mu.Lock()
	if r.shut_ {
		r.mu.Unlock()
		return
	}
	heap.Push(&r.h, retryItem{it, when})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *retryQueue) shut() {
	r.mu.Lock()
	r.shut_ = true
	r.mu.Unlock()
}

func (r *retryQueue) releaseAll(p *Pager) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.h {
		C.pg_release_req(p.sys.c, &r.h[i].q)
	}
	r.h = nil
}

// retrier moves requests whose backoff ended back to the queue.
func (s *serve) retrier() {
	r := &s.retry
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		now := time.Now()
		for len(r.h) > 0 && !r.h[0].when.After(now) {
			it := heap.Pop(&r.h).(retryItem)
			C.pg_count(s.p.sys.c, 1, 0)
			s.q.pushItem(it.item)
		}
		wait := time.Hour
		if len(r.h) > 0 {
			wait = r.h[0].when.Sub(now)
		}
		r.mu.Unlock()
		t.Reset(wait)
		select {
		case <-s.ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

// ---------------------------------------------------------------------
// Fetched sources.

// fetching is a request handed to a Fetcher, until all of its bytes
// arrived.
type fetching struct {
	it   item
	left int64 // bytes not arrived yet
}

func (s *serve) fetch(it item) {
	p := s.p
	src := p.region(int(it.q.id))
	zero := src.fetcher.State().Zero
	q := it.q
	ps := int64(q.psize)
	// isZero: every 4 KiB page of the request's page at o is known zero.
	isZero := func(o int64) bool {
		if zero == nil {
			return false
		}
		for b := o >> 12; b < (o+ps)>>12; b++ {
			if atomic.LoadUint64(&zero[b/64])&(1<<(b%64)) == 0 {
				return false
			}
		}
		return true
	}
	// Runs of known zeroes are installed now (the engine zero-fills
	// them); the others are asked for.
	for o := int64(0); o < int64(q.len); {
		z := isZero(int64(q.off) + o)
		e := o + ps
		for e < int64(q.len) && isZero(int64(q.off)+e) == z {
			e += ps
		}
		sub := subReq(q, o, e)
		if z {
			if s.enter() {
				var at C.uint64_t
				C.pg_install_req(p.sys.c, &sub, nil, &at)
				s.exit()
			} else {
				s.release(&sub)
			}
		} else {
			f := &fetching{it: item{q: sub, attempt: it.attempt}, left: e - o}
			p.sys.mu.Lock()
			if p.sys.fetches == nil {
				p.sys.fetches = map[*fetching]bool{}
			}
			p.sys.fetches[f] = true
			p.sys.mu.Unlock()
			src.fetcher.Fetch(int64(sub.off), int64(sub.len), sub.urgent != 0, func(off, n int64, err error) {
				s.arrived(f, off, n, err)
			})
		}
		o = e
	}
}

// subReq returns the part [a, b) (byte offsets, whole pages) of request q.
func subReq(q C.pg_req, a, b int64) C.pg_req {
	sub := q
	sub.addr += C.uint64_t(a)
	sub.off += C.int64_t(a)
	sub.idx += C.int64_t(a / int64(q.psize))
	sub.len = C.uint64_t(b - a)
	if q.fault != 0 && (uint64(q.fault) < uint64(sub.addr) || uint64(q.fault) >= uint64(sub.addr)+uint64(sub.len)) {
		sub.fault = 0
	}
	return sub
}

// arrived installs what a Fetcher reports present, or retries what it
// could not fetch.
func (s *serve) arrived(f *fetching, off, n int64, err error) {
	p := s.p
	q := f.it.q
	ps := int64(q.psize)
	lo, hi := max(off, int64(q.off)), min(off+n, int64(q.off)+int64(q.len))
	if lo >= hi {
		return
	}
	if !s.enter() {
		return // Serve ended: the request was released
	}
	defer s.exit()
	p.sys.mu.Lock()
	live := p.sys.fetches[f]
	if live {
		f.left -= hi - lo
		if f.left <= 0 {
			delete(p.sys.fetches, f)
		}
	}
	p.sys.mu.Unlock()
	if !live {
		return
	}
	// The whole pages of the request that [lo, hi) touches.
	a := (lo - int64(q.off)) / ps * ps
	b := ((hi - int64(q.off)) + ps - 1) / ps * ps
	sub := subReq(q, a, b)
	if err != nil {
		it := item{q: sub, attempt: f.it.attempt}
		s.failed(&it, err)
		return
	}
	var at C.uint64_t
	C.pg_install_req(p.sys.c, &sub, nil, &at)
}

// releaseFetches lets go of every request a Fetcher still holds.
func (s *serve) releaseFetches() {
	p := s.p
	p.sys.mu.Lock()
	defer p.sys.mu.Unlock()
	for f := range p.sys.fetches {
		C.pg_release_req(p.sys.c, &f.it.q)
	}
	p.sys.fetches = nil
}

// ---------------------------------------------------------------------
// Resolving ranges: the fill, and Resolve.

// resolve installs the pages of [start, end) that no one resolved, chunk
// bytes at a time. yield: wait while a fault is pending (the fill). It may
// run outside Serve's goroutines (Resolve): the engine's descriptor is
// used between enter and exit only, never across a source read.
func (s *serve) resolve(ctx context.Context, start, end uintptr, chunk int, yield bool) error {
	p := s.p
	c := p.sys.c
	a := C.uint64_t(start &^ uintptr(basePageSize-1))
	var buf []byte
	for a < C.uint64_t(end) {
		if yield {
			for C.pg_pending(c) > 0 || s.q.urgentWork() {
				if ctx.Err() != nil {
					return nil
				}
				time.Sleep(20 * time.Microsecond)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		var q C.pg_req
		if !s.enter() {
			return ErrNotServing
		}
		out := C.pg_resolve(c, &a, C.uint64_t(end), C.uint64_t(chunk), &q)
		s.exit()
		switch out {
		case C.PG_OK:
			return nil
		case C.PG_NEED:
			if q.kind == C.PG_REQ_FETCH {
				s.fetch(item{q: q})
				continue
			}
			var err error
			if buf, err = p.readReq(&q, buf); err != nil {
				s.release(&q)
				src := p.region(int(q.id))
				serr := &SourceError{Region: src.label(), Offset: int64(q.off), Len: int(q.len), Err: err}
				if !yield {
					return serr
				}
				p.report(serr)
				continue
			}
			if !s.enter() {
				s.release(&q)
				return ErrNotServing
			}
			var at C.uint64_t
			C.pg_install_req(c, &q, (*C.char)(unsafe.Pointer(&buf[0])), &at)
			s.exit()
		case C.PG_SRCERR:
			s.release(&q)
			src := p.region(int(q.id))
			serr := &SourceError{Region: src.label(), Offset: int64(q.off), Len: int(q.len), Err: syscall.Errno(q.err)}
			if !yield {
				return serr
			}
			p.report(serr)
		case C.PG_RETRY:
			time.Sleep(50 * time.Microsecond) // an event is pending; the engine reads it
		case C.PG_GONE:
			return &uffd.OpError{Op: "resolve", Addr: uintptr(a), Err: uffd.ErrProcessGone}
		default:
			return &uffd.OpError{Op: "resolve", Addr: uintptr(a), Err: syscall.Errno(q.err)}
		}
	}
	return nil
}

// Resolve installs the pages of [addr, addr+length) that are not resolved
// yet, as a prefetch: to replay a recorded fault order, or to populate a
// range you know will be needed. It needs Serve running (it returns
// ErrNotServing otherwise, or when Serve ends meanwhile), and returns when
// the range is done, ctx ends (with ctx's error), or a source fails (a
// *SourceError). Ranges outside every region are skipped. Pages of a
// Fetcher are requested, not waited for.
func (p *Pager) Resolve(ctx context.Context, addr, length uintptr) error {
	p.sys.mu.Lock()
	s := p.sys.cur
	p.sys.mu.Unlock()
	if s == nil {
		return ErrNotServing
	}
	end := addr + length
	if end < addr {
		return fmt.Errorf("pager: Resolve %#x+%#x wraps around the address space", addr, length)
	}
	err := s.resolve(ctx, addr, end, 4<<20, false)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pager: resolve: %w", err)
	}
	return err
}
