package pager

import (
	"slices"

	"github.com/gouffd/uffd"
)

// applyEvent updates the bookkeeping for a non-fault event. The caller
// holds evMu exclusively (when the pager orders events), so no resolve is
// in flight.
func (p *Pager) applyEvent(sc *serveCtx, m *uffd.Message) {
	switch m.Event {
	case uffd.EventRemove:
		p.stats.removes.Add(1)
		p.remove(uintptr(m.Start), uintptr(m.End))
	case uffd.EventUnmap:
		p.stats.unmaps.Add(1)
		p.moved.Store(true)
		p.editLayout(func(l []*region) []*region { return cutOut(l, uintptr(m.Start), uintptr(m.End)) })
	case uffd.EventRemap:
		p.stats.remaps.Add(1)
		p.moved.Store(true)
		p.remap(uintptr(m.From), uintptr(m.To), uintptr(m.Len))
	case uffd.EventFork:
		p.stats.forks.Add(1)
		if m.Child == nil {
			return
		}
		child := p.fork(m.Child)
		m.Child = nil
		if p.cfg.OnFork != nil {
			p.cfg.OnFork(child)
			return
		}
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			defer child.u.Close()
			if err := child.Serve(sc.ctx); err != nil {
				p.report(err)
			}
		}()
	}
}

// remove marks [start, end) to be zero-filled on its next fault: the
// process dropped those pages (MADV_DONTNEED, MADV_REMOVE).
func (p *Pager) remove(start, end uintptr) {
	for _, r := range *p.layout.Load() {
		a, b := max(start, r.Start), min(end, r.end())
		if a >= b {
			continue
		}
		// Whole pages only: a huge page partly removed is not dropped.
		i := int((a - r.Start + r.psize - 1) >> r.shift)
		j := int((b - r.Start) >> r.shift)
		if i >= j {
			continue
		}
		r.st.zero.setRange(r.base+i, j-i)
		r.st.done.clearRange(r.base+i, j-i)
		r.st.claimed.clearRange(r.base+i, j-i)
	}
}

// remap moves the bookkeeping of [from, from+length) to `to`.
func (p *Pager) remap(from, to, length uintptr) {
	p.editLayout(func(l []*region) []*region {
		var moved []*region
		for _, r := range l {
			a, b := max(from, r.Start), min(from+length, r.end())
			if a < b {
				s := r.sub(a, b)
				s.Start = to + (a - from)
				moved = append(moved, s)
			}
		}
		l = cutOut(l, from, from+length)
		l = cutOut(l, to, to+length) // whatever was there is gone
		return append(l, moved...)
	})
}

// editLayout replaces the layout with fn's result, sorted.
func (p *Pager) editLayout(fn func([]*region) []*region) {
	p.layoutMu.Lock()
	defer p.layoutMu.Unlock()
	l := fn(slices.Clone(*p.layout.Load()))
	sortLayout(l)
	p.layout.Store(&l)
	p.layoutGen.Add(1)
}

// cutOut removes [start, end) from the regions of l, splitting those that
// straddle it.
func cutOut(l []*region, start, end uintptr) []*region {
	out := l[:0:0]
	for _, r := range l {
		if end <= r.Start || r.end() <= start {
			out = append(out, r)
			continue
		}
		if r.Start < start {
			out = append(out, r.sub(r.Start, start&^(r.psize-1)))
		}
		if e := (end + r.psize - 1) &^ (r.psize - 1); e < r.end() {
			out = append(out, r.sub(e, r.end()))
		}
	}
	return out
}

// sub returns the part [a, b) of r, sharing its state.
func (r *region) sub(a, b uintptr) *region {
	n := *r
	k := int((a - r.Start) >> r.shift)
	n.Start, n.Len = a, b-a
	n.base = r.base + k
	n.pages = int((b - a) >> r.shift)
	n.Offset = r.Offset + int64(k)<<r.shift
	if r.src != nil {
		n.src = r.src[uintptr(k)<<r.shift : uintptr(k+n.pages)<<r.shift]
	}
	return &n
}

// fork returns a Pager for a child's userfaultfd: the parent's regions,
// with the pages resolved so far marked resolved (the child inherited
// them) and the rest to be served from the same sources.
func (p *Pager) fork(u *uffd.UFFD) *Pager {
	c := New(u, p.cfg)
	c.cfg.OnFork = p.cfg.OnFork
	states := map[*state]*state{}
	var l []*region
	for _, r := range *p.layout.Load() {
		n := *r
		st, ok := states[r.st]
		if !ok {
			st = r.st.clone()
			states[r.st] = st
		}
		n.st = st
		l = append(l, &n)
	}
	c.layout.Store(&l)
	return c
}

// RemovedRanges returns the ranges the process dropped (REMOVE events, or
// MarkRemoved) and that were not served since: their next faults get
// zeroes. With MarkRemoved on another Pager it carries that knowledge over,
// for a handover of the userfaultfd to a new handler.
func (p *Pager) RemovedRanges() [][2]uintptr {
	var out [][2]uintptr
	for _, r := range *p.layout.Load() {
		for i := 0; i < r.pages; {
			if k := r.st.zero.run(r.base+i, r.pages-i, false); k > 0 {
				i += k
				continue
			}
			k := r.st.zero.run(r.base+i, r.pages-i, true)
			start := r.Start + uintptr(i)<<r.shift
			end := start + uintptr(k)<<r.shift
			if n := len(out); n > 0 && out[n-1][1] == start {
				out[n-1][1] = end
			} else {
				out = append(out, [2]uintptr{start, end})
			}
			i += k
		}
	}
	return out
}

// MarkRemoved records that the process dropped [start, end), as a REMOVE
// event does: the next faults there get zeroes. Call it before Serve.
func (p *Pager) MarkRemoved(start, end uintptr) {
	if p.events {
		p.evMu.Lock()
		defer p.evMu.Unlock()
	}
	p.remove(start, end)
}
