package pager

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/gouffd/uffd"
)

// Pager serves the faults of the regions added to it on one userfaultfd.
// Its methods are safe for concurrent use.
type Pager struct {
	u      *uffd.UFFD
	cfg    Config
	events bool // the userfaultfd reports layout changes
	poison bool // UFFDIO_POISON is available

	mu      sync.Mutex
	regions []*source // by id, as added; events split regions, never sources

	sys     *sysPager
	serving atomic.Bool
	ready   chan struct{}
	once    sync.Once
}

// source is a region as added, and what the engine needs of its source.
type source struct {
	Region
	fetcher Fetcher // nil unless the source is one
}

var basePageSize = os.Getpagesize()

// New returns a Pager for u with the configuration cfg, or an error when
// cfg makes no sense. It does not take ownership of u. It fails with an
// error matching uffd.ErrNotSupported in builds without cgo (the engine is
// C) and off Linux.
func New(u *uffd.UFFD, cfg Config) (*Pager, error) {
	if u == nil {
		return nil, errors.New("pager: New: no userfaultfd")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Pager{
		u:      u,
		cfg:    cfg,
		events: u.Features()&eventFeatures != 0,
		poison: u.Features().Has(uffd.FeaturePoison),
		ready:  make(chan struct{}),
	}
	if err := p.newSys(); err != nil {
		return nil, err
	}
	return p, nil
}

// UFFD returns the userfaultfd the pager serves.
func (p *Pager) UFFD() *uffd.UFFD { return p.u }

// Config returns the pager's configuration, with defaults filled in.
func (p *Pager) Config() Config { return p.cfg }

// Serving returns a channel that is closed once Serve serves: the engine
// has the userfaultfd, and faults from then on are resolved. Faults raised
// before that wait in the userfaultfd and are served then.
func (p *Pager) Serving() <-chan struct{} { return p.ready }

// Add adds a region. It checks that the region is aligned to its page
// size, lies within its source and overlaps no other region. Regions may
// be added while Serve runs; faults there that came before are served then.
func (p *Pager) Add(r Region) error {
	if r.PageSize == 0 {
		r.PageSize = basePageSize
	}
	what := r.label()
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
	case r.OnError != PoisonOnError && r.OnError != WaitOnError:
		return fmt.Errorf("pager: %s: unknown error policy %d", what, int(r.OnError))
	}
	s := &source{Region: r}
	if f, ok := r.Source.(Fetcher); ok {
		st := f.State()
		if err := st.validate(f.Size()); err != nil {
			return fmt.Errorf("%w (%s)", err, what)
		}
		if r.Offset%4096 != 0 {
			return fmt.Errorf("pager: %s: offset %d in a fetched source must be a multiple of 4096", what, r.Offset)
		}
		s.fetcher = f
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.regionsLocked() {
		if r.Start < o.Start+o.Len && o.Start < r.Start+r.Len {
			return fmt.Errorf("pager: %s overlaps %s (%#x+%#x)", what, o.label(), o.Start, o.Len)
		}
	}
	if err := p.sysAdd(s, len(p.regions)); err != nil {
		return fmt.Errorf("pager: %s: %w", what, err)
	}
	p.regions = append(p.regions, s)
	return nil
}

// region returns the source of id.
func (p *Pager) region(id int) *source {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id < 0 || id >= len(p.regions) {
		return nil
	}
	return p.regions[id]
}

func (p *Pager) report(err error) {
	if p.cfg.OnError != nil {
		p.cfg.OnError(err)
	}
}
