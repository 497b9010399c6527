package pager

import (
	"fmt"
	"time"

	"github.com/gouffd/uffd"
)

// fill populates every region in ascending order, a chunk at a time,
// yielding to faults: it waits while any fault is read and not yet
// resolved.
func (p *Pager) fill(sc *serveCtx) {
	rv := p.newResolver()
	for _, r := range *p.layout.Load() {
		chunk := max(1, p.cfg.FillChunk>>r.shift)
		for i := 0; i < r.pages; {
			for p.pending.Load() > 0 {
				if sc.ctx.Err() != nil {
					return
				}
				time.Sleep(20 * time.Microsecond)
			}
			if sc.ctx.Err() != nil {
				return
			}
			// Skip what is resolved already.
			if skip := r.st.claimed.run(r.base+i, r.pages-i, true); skip > 0 {
				i += skip
				continue
			}
			k := r.st.claimed.claim(r.base+i, min(chunk, r.pages-i))
			if k == 0 {
				continue
			}
			switch rv.install(r, i, i+k, -1) {
			case installed:
				p.stats.filled.Add(uint64(k))
				i += k
			case retryLater:
				time.Sleep(50 * time.Microsecond) // an event is pending; the readers drain it
			case gone:
				return
			case noMapping:
				i += k // moved or unmapped: the layout will tell
			case failed:
				if rv.ioerr != nil {
					p.report(rv.ioerr)
					rv.ioerr = nil
				}
				i += k // faults there retry on their own
			}
		}
	}
}

// Resolve installs the pages of [addr, addr+length) that are not resolved
// yet, as a prefetch: use it to replay a recorded fault order, or to
// populate a range you know will be needed. It may run while Serve runs,
// from any goroutine. Ranges outside every region are ignored.
func (p *Pager) Resolve(addr, length uintptr) error {
	rv := p.newResolver()
	end := addr + length
	for addr < end {
		r := p.lookup(addr)
		if r == nil {
			next := end
			for _, o := range *p.layout.Load() {
				if o.Start > addr && o.Start < next {
					next = o.Start
				}
			}
			addr = next
			continue
		}
		i := int((addr - r.Start) >> r.shift)
		stop := r.pages
		if e := min(end, r.end()); e < r.end() {
			stop = int((e - r.Start + r.psize - 1) >> r.shift)
		}
		for i < stop {
			if skip := r.st.claimed.run(r.base+i, stop-i, true); skip > 0 {
				i += skip
				continue
			}
			k := r.st.claimed.claim(r.base+i, stop-i)
			if k == 0 {
				continue
			}
			switch out := rv.install(r, i, i+k, -1); out {
			case installed:
				p.stats.filled.Add(uint64(k))
			case gone:
				return &uffd.OpError{Op: "resolve", Addr: r.Start + uintptr(i)<<r.shift, Len: uintptr(k) << r.shift, Err: uffd.ErrProcessGone}
			case retryLater:
				time.Sleep(50 * time.Microsecond)
				continue
			case failed:
				if rv.ioerr != nil {
					return rv.ioerr
				}
				return fmt.Errorf("pager: resolve %#x: failed", r.Start+uintptr(i)<<r.shift)
			}
			i += k
		}
		addr = r.end()
	}
	return nil
}
