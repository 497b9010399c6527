package pager

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/gouffd/uffd"
)

// state is the bookkeeping of one registered range's pages. Regions split
// by events share it, each with its own base index.
type state struct {
	claimed bitmap // resolved, or being resolved by someone
	done    bitmap // resolved
	zero    bitmap // removed by the process: the next fault gets zeroes
}

func newState(pages int) *state {
	return &state{claimed: newBitmap(pages), done: newBitmap(pages), zero: newBitmap(pages)}
}

func (s *state) clone() *state {
	return &state{claimed: s.done.clone(), done: s.done.clone(), zero: s.zero.clone()}
}

// region is a Region as served: its place in the faulting process may
// change with REMAP events, its state stays.
type region struct {
	Region
	st      *state
	base    int // index of Start's page in st
	pages   int
	shift   uint
	psize   uintptr
	src     []byte // Mapped contents from Offset, or nil
	zeroSrc bool
	huge    bool // no UFFDIO_ZEROPAGE
}

func (r *region) end() uintptr { return r.Start + r.Len }

// Pager serves the faults of the regions added to it on one userfaultfd.
type Pager struct {
	u       *uffd.UFFD
	cfg     Config
	events  bool // the userfaultfd reports layout changes: order resolves against them
	poison  bool
	removes bool // the process's drops are reported (FeatureEventRemove)

	// layout is the sorted list of regions, replaced whole on change so
	// that the fault path reads it without a lock.
	layoutMu  sync.Mutex
	layout    atomic.Pointer[[]*region]
	layoutGen atomic.Uint64 // changes with every layout change after Add
	moved     atomic.Bool   // an UNMAP or REMAP was seen

	// evMu orders resolves against events: readers hold it exclusively
	// while they read the descriptor and apply events, resolvers share it
	// from choosing a page's contents to the ioctl's return. A copy chosen
	// before an event was read thus lands before the process that caused
	// the event resumes.
	evMu sync.RWMutex

	pending atomic.Int32 // faults read and not yet resolved: the fill yields
	stats   counters

	zeroMu   sync.Mutex
	zeroPage []byte // a huge page of zeroes, for hugetlbfs

	serving atomic.Bool
}

// New returns a Pager for u. It does not take ownership of u.
func New(u *uffd.UFFD, cfg Config) *Pager {
	p := &Pager{
		u:       u,
		cfg:     cfg,
		events:  u.Features()&(uffd.FeatureEventRemove|uffd.FeatureEventUnmap|uffd.FeatureEventRemap|uffd.FeatureEventFork) != 0,
		poison:  u.Features().Has(uffd.FeaturePoison),
		removes: u.Features().Has(uffd.FeatureEventRemove),
	}
	if p.cfg.Workers <= 0 {
		p.cfg.Workers = 1
	}
	switch {
	case p.cfg.SpinReads == 0:
		p.cfg.SpinReads = DefaultSpinReads
	case p.cfg.SpinReads < 0:
		p.cfg.SpinReads = 0
	}
	if p.cfg.FillChunk <= 0 {
		p.cfg.FillChunk = DefaultFillChunk
	}
	if p.cfg.Retry.Attempts <= 0 {
		p.cfg.Retry.Attempts = 5
	}
	if p.cfg.Retry.Backoff <= 0 {
		p.cfg.Retry.Backoff = 1e6
	}
	if p.cfg.Retry.MaxBackoff <= 0 {
		p.cfg.Retry.MaxBackoff = 1e9
	}
	empty := []*region{}
	p.layout.Store(&empty)
	return p
}

// UFFD returns the userfaultfd the pager serves.
func (p *Pager) UFFD() *uffd.UFFD { return p.u }

// Stats returns a snapshot of the counters.
func (p *Pager) Stats() Stats { return p.stats.snapshot() }

// Regions returns the regions as they are now in the faulting process:
// REMAP events move them, UNMAP events cut them.
func (p *Pager) Regions() []Region {
	l := *p.layout.Load()
	out := make([]Region, len(l))
	for i, r := range l {
		out[i] = r.Region
	}
	return out
}

var basePageSize = os.Getpagesize()

// Add adds a region. It checks that the region is aligned to its page
// size, lies within its source and overlaps no other region.
func (p *Pager) Add(r Region) error {
	if r.PageSize == 0 {
		r.PageSize = basePageSize
	}
	what := r.Name
	if what == "" {
		what = fmt.Sprintf("region %#x+%#x", r.Start, r.Len)
	}
	ps := uintptr(r.PageSize)
	switch {
	case r.PageSize < basePageSize || r.PageSize&(r.PageSize-1) != 0:
		return fmt.Errorf("pager: %s: page size %d is not a power of two of at least %d", what, r.PageSize, basePageSize)
	case r.Len == 0:
		return fmt.Errorf("pager: %s: zero length", what)
	case r.Start%ps != 0 || r.Len%ps != 0:
		return fmt.Errorf("pager: %s: start %#x and length %#x must be multiples of the page size %d", what, r.Start, r.Len, r.PageSize)
	case r.Start+r.Len < r.Start:
		return fmt.Errorf("pager: %s: wraps around the address space", what)
	case r.Source == nil:
		return fmt.Errorf("pager: %s: no source", what)
	case r.Offset < 0 || r.Offset > r.Source.Size() || int64(r.Len) > r.Source.Size()-r.Offset:
		return fmt.Errorf("pager: %s: %d bytes at offset %d lie outside the source's %d bytes", what, r.Len, r.Offset, r.Source.Size())
	}
	if p.cfg.Isolated {
		if _, ok := r.Source.(Mapped); !ok && !isZero(r.Source) {
			return fmt.Errorf("pager: %s: an isolated pager serves only Mapped and Zero sources", what)
		}
	}
	reg := &region{
		Region:  r,
		pages:   int(r.Len / ps),
		psize:   ps,
		huge:    r.PageSize > basePageSize,
		zeroSrc: isZero(r.Source),
	}
	for reg.shift = 0; uintptr(1)<<reg.shift < ps; reg.shift++ {
	}
	reg.st = newState(reg.pages)
	if m, ok := r.Source.(Mapped); ok {
		reg.src = m.Bytes()[r.Offset : r.Offset+int64(r.Len)]
	}
	p.layoutMu.Lock()
	defer p.layoutMu.Unlock()
	old := *p.layout.Load()
	for _, o := range old {
		if r.Start < o.end() && o.Start < r.Start+r.Len {
			return fmt.Errorf("pager: %s overlaps %s (%#x+%#x)", what, o.label(), o.Start, o.Len)
		}
	}
	if p.cfg.Isolated && isolatedAdd != nil {
		if err := isolatedAdd(p, reg); err != nil {
			return err
		}
	}
	l := append(slices.Clone(old), reg)
	sortLayout(l)
	p.layout.Store(&l)
	return nil
}

func (r *region) label() string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("region %#x+%#x", r.Start, r.Len)
}

// lookup returns the region holding addr, or nil.
func (p *Pager) lookup(addr uintptr) *region {
	l := *p.layout.Load()
	lo, hi := 0, len(l)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if l[m].end() <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(l) && l[lo].Start <= addr {
		return l[lo]
	}
	return nil
}

// Resolved reports whether the page holding addr was resolved.
func (p *Pager) Resolved(addr uintptr) bool {
	r := p.lookup(addr)
	if r == nil {
		return false
	}
	return r.st.done.get(r.base + int((addr-r.Start)>>r.shift))
}

// serveCtx holds what one call of Serve shares with its goroutines.
type serveCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // retries, fill, children
	efd    int            // ReaderThread's shutdown eventfd
}

// ErrServing is returned by Serve when the Pager is already serving.
var ErrServing = errors.New("pager: Serve is already running")

// serveIsolated is the isolated mode's engine, when built with cgo.
var serveIsolated func(ctx context.Context, p *Pager) error

// ErrNoIsolation is returned by Serve with Config.Isolated in a build
// without cgo.
var ErrNoIsolation = errors.New("pager: Config.Isolated needs a build with cgo")

// errOutside reports a fault in no region.
type outsideError struct{ addr uintptr }

func (e *outsideError) Error() string {
	return fmt.Sprintf("pager: fault at %#x is in no region; the thread is left waiting", e.addr)
}

// ErrOutside matches the errors reported for faults in no region.
var ErrOutside = errors.New("pager: fault in no region")

func (e *outsideError) Is(target error) bool { return target == ErrOutside }

func (p *Pager) report(err error) {
	if p.cfg.OnError != nil {
		p.cfg.OnError(err)
	}
}

// sortLayout sorts regions by address.
func sortLayout(l []*region) {
	slices.SortFunc(l, func(a, b *region) int { return cmp.Compare(a.Start, b.Start) })
}
