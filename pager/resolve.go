package pager

import (
	"fmt"
	"io"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/gouffd/uffd/internal/abi"
	"github.com/gouffd/uffd/internal/raw"
)

// outcome of an install.
type outcome int

const (
	installed  outcome = iota
	retryLater         // EAGAIN with no progress: an event is pending
	gone               // ESRCH: the process is gone
	noMapping          // ENOENT: unmapped or moved under us; the thread was woken
	failed             // another error, or the source failed
)

type wokenPage struct {
	addr uintptr
	n    int
}

// wokenLimit is how many times a resolved page is only woken before it is
// installed again.
const wokenLimit = 4

// again reports whether a resolved page that faulted again should be
// installed again, rather than its thread only woken.
func (rv *resolver) again(addr uintptr) bool {
	if !rv.p.removes {
		return true // dropped pages are not reported: always install
	}
	for k := range rv.woken {
		if w := &rv.woken[k]; w.addr == addr {
			w.n++
			if w.n > wokenLimit {
				w.addr = 0
				return true
			}
			return false
		}
	}
	rv.woken[rv.wokenNext] = wokenPage{addr, 1}
	rv.wokenNext = (rv.wokenNext + 1) % len(rv.woken)
	return false
}

// stream is a sequential access pattern the adaptive prefetch follows.
type stream struct {
	next   uintptr // where the stream continues: the end of what was resolved for it
	window int     // pages per resolve
	used   uint64  // last use, for replacement
}

const streams = 4

// resolver is the per-goroutine state of the fault path: nothing here is
// shared, so nothing is allocated or locked per fault.
type resolver struct {
	p       *Pager
	buf     []byte // for sources that are not Mapped
	streams [streams]stream
	tick    uint64
	exist   bool // the last install met an existing page
	ioerr   error
	gen     uint64 // the layout generation r was looked up in

	// woken remembers pages resolved earlier that faulted again and were
	// only woken: a page that keeps faulting went away without an event
	// and is installed again.
	woken     [8]wokenPage
	wokenNext int

	// The ioctls' arguments live here: the kernel gets their address, so
	// on the stack they would escape (and allocate) on every call.
	cp  abi.UffdioCopy
	zp  abi.UffdioZeropage
	rng abi.UffdioRange
}

func (p *Pager) newResolver() *resolver { return &resolver{p: p} }

// window returns the pages to resolve for a fault at page i of r, as
// [lo, hi), and the index of the stream it belongs to (-1 for none).
func (rv *resolver) window(r *region, i int, addr uintptr) (lo, hi, ahead int) {
	pf := rv.p.cfg.Prefetch
	pagesOf := func(b int) int { return max(1, (b+int(r.psize)-1)>>r.shift) }
	if !pf.Adaptive {
		if pf.Min <= int(r.psize) {
			return i, i + 1, 0
		}
		n := pagesOf(pf.Min)
		lo = i - i%n
		return lo, min(lo+n, r.pages), 0
	}
	rv.tick++
	minW, maxW := pagesOf(pf.Min), pagesOf(pf.Max)
	page := addr &^ (r.psize - 1)
	var s *stream
	for k := range rv.streams {
		if rv.streams[k].next == page && rv.streams[k].window > 0 {
			s = &rv.streams[k]
			break
		}
	}
	if s != nil {
		// Sequential: grow, and read one window ahead.
		s.window = min(s.window*2, maxW)
		ahead = s.window
	} else {
		// A new or random access: replace the least recently used stream
		// and start small.
		s = &rv.streams[0]
		for k := range rv.streams {
			if rv.streams[k].used < s.used {
				s = &rv.streams[k]
			}
		}
		s.window = minW
	}
	s.used = rv.tick
	hi = min(i+s.window, r.pages)
	ahead = min(ahead, r.pages-hi)
	s.next = r.Start + uintptr(hi+ahead)<<r.shift
	return i, hi, ahead
}

// fault resolves one page-fault message. t0 is when it was read.
func (rv *resolver) fault(addr uintptr, t0 time.Time) outcome {
	p := rv.p
	rv.gen = p.layoutGen.Load()
	r := p.lookup(addr)
	if r == nil {
		p.stats.outside.Add(1)
		p.report(&outsideError{addr})
		if p.moved.Load() {
			// The process moved or unmapped memory: this thread faulted
			// on the old place. Wake it: it faults on whatever is mapped
			// there now, or gets SIGSEGV.
			rv.wakeRange(addr&^uintptr(basePageSize-1), uintptr(basePageSize))
		}
		return failed
	}
	i := int((addr - r.Start) >> r.shift)
	idx := r.base + i
	lo, hi, ahead := rv.window(r, i, addr)
	n := r.st.claimed.claim(idx, hi-i)
	if n == 0 {
		if !r.st.done.get(idx) {
			return installed // being resolved by another resolver, which wakes the thread
		}
		// Resolved already: usually a repeated message (several threads
		// faulted on the page, or a fault was interrupted by a signal),
		// and waking the thread is enough. But a page can go away without
		// a REMOVE event reaching us (MADV_REMOVE through another mapping
		// of shared memory, fallocate, a parent's hole punch): a page that
		// keeps faulting is installed again (an existing one just wakes).
		page := r.Start + uintptr(i)<<r.shift
		if !rv.again(page) {
			p.stats.exists.Add(1)
			rv.wake(r, i)
			return installed
		}
		return rv.finish(r, i, i+1, i, t0, true)
	}
	back := 0
	if lo < i {
		back = r.st.claimed.claimBack(idx, r.base+lo)
	}
	out := rv.finish(r, i-back, i+n, i, t0, false)
	if out == installed && ahead > 0 && n == hi-i {
		if k := r.st.claimed.claim(r.base+i+n, ahead); k > 0 {
			if rv.install(r, i+n, i+n+k, -1) == installed {
				p.stats.prefetched.Add(uint64(k))
			}
		}
	}
	return out
}

// finish installs [lo, hi), claimed, for the fault at page f, and
// accounts for it.
func (rv *resolver) finish(r *region, lo, hi, f int, t0 time.Time, again bool) outcome {
	p := rv.p
	out := rv.install(r, lo, hi, f)
	if out == installed {
		p.stats.observe(time.Since(t0))
		if !again {
			p.stats.prefetched.Add(uint64(hi - lo - 1))
			if p.cfg.OnFault != nil {
				p.cfg.OnFault(r.Start + uintptr(f)<<r.shift)
			}
		}
	}
	return out
}

// install resolves the claimed pages [lo, hi) of r and marks them done;
// f is the faulting page (woken if it already existed), or -1. On failure
// the pages are released for another try.
func (rv *resolver) install(r *region, lo, hi, f int) outcome {
	p := rv.p
	from := lo
	// Contents read from a source are fetched before taking the lock: a
	// slow source must not hold up the readers of events.
	if r.src == nil && !r.zeroSrc {
		if out := rv.read(r, lo, hi); out != installed {
			r.st.claimed.clearRange(r.base+lo, hi-lo)
			return out
		}
	}
	if p.events {
		p.evMu.RLock()
		if p.layoutGen.Load() != rv.gen && p.lookup(r.Start+uintptr(lo)<<r.shift) != r {
			// The layout changed since the fault was looked up: the range
			// moved or went away. Copy nothing; wake the thread at the
			// old place, which faults again where it is now.
			p.evMu.RUnlock()
			r.st.claimed.clearRange(r.base+lo, hi-lo)
			if f >= 0 {
				rv.wake(r, f)
			}
			return noMapping
		}
	}
	out := installed
	for lo < hi && out == installed {
		// Split the run where the zero-fill marks change.
		zero := r.st.zero.get(r.base + lo)
		k := r.st.zero.run(r.base+lo, hi-lo, zero)
		out = rv.installRun(r, lo, lo+k, from, zero || r.zeroSrc)
		if out == installed {
			if zero {
				r.st.zero.clearRange(r.base+lo, k)
			}
			r.st.done.setRange(r.base+lo, k)
			lo += k
		}
	}
	if p.events {
		p.evMu.RUnlock()
	}
	if out != installed {
		r.st.claimed.clearRange(r.base+lo, hi-lo)
	}
	if rv.exist && f >= 0 {
		rv.wake(r, f)
	}
	rv.exist = false
	return out
}

func (rv *resolver) wake(r *region, i int) {
	rv.wakeRange(r.Start+uintptr(i)<<r.shift, r.psize)
}

// installRun resolves [lo, hi) of r with one kind of contents, continuing
// after partial progress and skipping pages that exist. Contents read from
// the source are in rv.buf, which starts at page from.
func (rv *resolver) installRun(r *region, lo, hi, from int, zero bool) outcome {
	p := rv.p
	dst := r.Start + uintptr(lo)<<r.shift
	end := r.Start + uintptr(hi)<<r.shift
	var src []byte
	switch {
	case zero && r.huge:
		src = p.zeroHuge(r.psize)
	case zero:
	case r.src != nil:
		src = r.src[uintptr(lo)<<r.shift : uintptr(hi)<<r.shift]
	default:
		src = rv.buf[uintptr(lo-from)<<r.shift : uintptr(hi-from)<<r.shift]
	}
	pages := uint64(hi - lo) // less those found installed already
	off := uintptr(0)        // into src
	for dst < end {
		length := end - dst
		var done int64
		var errno syscall.Errno
		switch {
		case zero && !r.huge:
			rv.zp = abi.UffdioZeropage{Range: abi.UffdioRange{Start: uint64(dst), Len: uint64(length)}}
			errno = raw.Ioctl(p.u, abi.UFFDIO_ZEROPAGE, unsafe.Pointer(&rv.zp))
			done = rv.zp.Zeropage
		case zero: // hugetlbfs: one zero huge page at a time
			length = r.psize
			rv.cp = abi.UffdioCopy{Dst: uint64(dst), Src: uint64(uintptr(unsafe.Pointer(&src[0]))), Len: uint64(length)}
			errno = raw.Ioctl(p.u, abi.UFFDIO_COPY, unsafe.Pointer(&rv.cp))
			done = rv.cp.Copy
		default:
			rv.cp = abi.UffdioCopy{Dst: uint64(dst), Src: uint64(uintptr(unsafe.Pointer(&src[off]))), Len: uint64(length)}
			errno = raw.Ioctl(p.u, abi.UFFDIO_COPY, unsafe.Pointer(&rv.cp))
			done = rv.cp.Copy
		}
		if errno == 0 {
			dst += length
			off += length
			continue
		}
		if done < 0 {
			done = 0
		}
		switch errno {
		case syscall.EAGAIN:
			if done == 0 {
				return retryLater
			}
		case syscall.EEXIST:
			p.stats.exists.Add(1)
			rv.exist = true
			pages--
			done += int64(r.psize) // skip the existing page
		case syscall.ESRCH:
			return gone
		case syscall.ENOENT, syscall.EINVAL, syscall.EFAULT:
			// The range is no longer mapped (or registered) as it was:
			// an UNMAP or REMAP event is on its way.
			rv.wakeRange(dst, end-dst)
			return noMapping
		default:
			rv.ioerr = errno
			return failed
		}
		dst += uintptr(done)
		off += uintptr(done)
	}
	runtime.KeepAlive(src)
	p.stats.pages.Add(pages)
	p.stats.bytes.Add(pages << r.shift)
	if zero {
		p.stats.zeroed.Add(pages)
	}
	return installed
}

func (rv *resolver) wakeRange(start, length uintptr) {
	rv.rng = abi.UffdioRange{Start: uint64(start), Len: uint64(length)}
	raw.Ioctl(rv.p.u, abi.UFFDIO_WAKE, unsafe.Pointer(&rv.rng))
}

// zeroHuge returns a zeroed buffer of one huge page.
func (p *Pager) zeroHuge(size uintptr) []byte {
	p.zeroMu.Lock()
	defer p.zeroMu.Unlock()
	if uintptr(len(p.zeroPage)) < size {
		p.zeroPage = make([]byte, size)
	}
	return p.zeroPage[:size]
}

// read fills rv.buf with pages [lo, hi) of r from its source, once: a
// failure is retried away from the fault path (see retry).
func (rv *resolver) read(r *region, lo, hi int) outcome {
	n := (hi - lo) << r.shift
	if cap(rv.buf) < n {
		rv.buf = make([]byte, n)
	}
	off := r.Offset + int64(lo)<<r.shift
	got, err := r.Source.ReadAt(rv.buf[:n], off)
	if got == n {
		return installed
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	rv.ioerr = &SourceError{Region: r.label(), Offset: off, Len: n, Err: err}
	return failed
}

// SourceError is a source read that failed.
type SourceError struct {
	Region string
	Offset int64
	Len    int
	Err    error
}

func (e *SourceError) Error() string {
	return fmt.Sprintf("pager: %s: reading %d bytes at offset %d of the source: %v", e.Region, e.Len, e.Offset, e.Err)
}

func (e *SourceError) Unwrap() []error { return []error{ErrSource, e.Err} }
