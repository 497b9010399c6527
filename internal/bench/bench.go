//go:build linux

package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/pager"
)

// Op is how faults are resolved, ref_handler's -o.
type Op int

const (
	// OpCopy copies pages from an in-memory image of 0x5a bytes
	// (pager.Image, UFFDIO_COPY).
	OpCopy Op = iota
	// OpZero serves zero pages (pager.Zero, UFFDIO_ZEROPAGE).
	OpZero
)

func (o Op) String() string {
	switch o {
	case OpCopy:
		return "copy"
	case OpZero:
		return "zero"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// ParseOp parses an Op's name.
func ParseOp(s string) (Op, error) {
	switch s {
	case "copy":
		return OpCopy, nil
	case "zero":
		return OpZero, nil
	}
	return 0, fmt.Errorf("op %q: want copy or zero", s)
}

// Placement is where the faulting threads run.
type Placement int

const (
	// InProcess faults from threads of this process, which also serves.
	InProcess Placement = iota
	// Child faults from another process, started for each run, which
	// creates the userfaultfd, registers its region and hands the
	// descriptor over (package handoff), as a VM hands its guest memory
	// to its page-fault handler.
	Child
)

func (p Placement) String() string {
	switch p {
	case InProcess:
		return "process"
	case Child:
		return "child"
	}
	return fmt.Sprintf("Placement(%d)", int(p))
}

// ParsePlacement parses a Placement's name.
func ParsePlacement(s string) (Placement, error) {
	switch s {
	case "process":
		return InProcess, nil
	case "child":
		return Child, nil
	}
	return 0, fmt.Errorf("faulters-in %q: want process or child", s)
}

// Limits of the configuration, ref_handler's where it has them.
const (
	MaxThreads = 64 // faulters and workers (ref_handler's MAXT)
	MaxRuns    = 99
	MaxMiB     = 1 << 20
)

// ImageByte is every byte of the copy source; zero pages hold 0. A
// write-touch stores TouchByte at the start of each page.
const (
	ImageByte = 0x5a
	TouchByte = 1
)

// Config describes a benchmark. The zero value is ref_handler's default
// run: 256 MiB resolved 4 KiB per fault with UFFDIO_COPY by the pager at
// its defaults, write-touched in order by one faulter of this process,
// median of 5 runs.
type Config struct {
	// MiB is the region's size (ref_handler -s; default 256).
	MiB int
	// Chunk is the bytes resolved per fault, a multiple of the page size:
	// the pager's Prefetch is pager.Fixed(Chunk) (ref_handler -c; default
	// one page). It must be 0 with Adaptive.
	Chunk int
	// Adaptive serves with pager.Adaptive() prefetch instead.
	Adaptive bool
	// Faulters is the number of faulting threads, each touching its own
	// slice of the region (ref_handler -f; default 1).
	Faulters int
	// FaultersIn is where the faulters run: in this process, or in a
	// child process that hands its userfaultfd over.
	FaultersIn Placement
	// ChildExe is the program started as the child of FaultersIn Child
	// (default: this program, os.Executable): its main must call
	// ChildMain first when IsChild reports true.
	ChildExe string
	// Engine sets up the pager.
	Engine Engine
	// Op is how faults are resolved (ref_handler -o).
	Op Op
	// Runs is the number of runs; the median one is reported
	// (ref_handler -r; default 5).
	Runs int
	// ReadTouch reads each page's first byte, checking the served value,
	// instead of storing to it (ref_handler -R).
	ReadTouch bool
	// Random touches each faulter's pages in ref_handler's fixed random
	// order (ref_handler -x).
	Random bool
	// GOMAXPROCS is set for the duration of the runs. When 0 and the
	// faulters are in this process it is raised to Faulters+1 if lower: a
	// thread blocked in a page fault keeps its P, and the pager needs one
	// more (see the package documentation).
	GOMAXPROCS int

	// corrupt lists pages whose source bytes at corruptOffset (and the
	// first byte) are altered, for tests of the verification.
	corrupt []int
}

// corruptOffset is the byte of a page that tests alter in the source.
const corruptOffset = 7

// PageSize is the base page size, the unit of the workload.
var PageSize = unix.Getpagesize()

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.MiB == 0 {
		c.MiB = 256
	}
	if c.Chunk == 0 && !c.Adaptive {
		c.Chunk = PageSize
	}
	if c.Faulters == 0 {
		c.Faulters = 1
	}
	if c.Runs == 0 {
		c.Runs = 5
	}
	if c.GOMAXPROCS == 0 {
		c.GOMAXPROCS = runtime.GOMAXPROCS(0)
		if c.FaultersIn == InProcess {
			c.GOMAXPROCS = max(c.GOMAXPROCS, c.Faulters+1)
		}
	}
	return c
}

// Validate reports the first field of c (after defaults) that is out of
// range, naming it as `uffd bench` flags do.
func (c Config) Validate() error {
	if c.Adaptive && c.Chunk != 0 {
		return fmt.Errorf("--chunk %d with --prefetch adaptive: the adaptive window sets the bytes per fault", c.Chunk)
	}
	c = c.withDefaults()
	pages := int64(c.MiB) << 20 / int64(PageSize)
	switch {
	case c.MiB < 1 || c.MiB > MaxMiB:
		return fmt.Errorf("--mib %d: want 1 to %d", c.MiB, MaxMiB)
	case !c.Adaptive && (c.Chunk < PageSize || c.Chunk%PageSize != 0):
		return fmt.Errorf("--chunk %d: want a positive multiple of the page size %d", c.Chunk, PageSize)
	case !c.Adaptive && c.Chunk > c.MiB<<20:
		return fmt.Errorf("--chunk %d: larger than the %d MiB region", c.Chunk, c.MiB)
	case c.Faulters < 1 || c.Faulters > MaxThreads:
		return fmt.Errorf("--faulters %d: want 1 to %d", c.Faulters, MaxThreads)
	case int64(c.Faulters) > pages:
		return fmt.Errorf("--faulters %d: more than the region's %d pages", c.Faulters, pages)
	case c.FaultersIn != InProcess && c.FaultersIn != Child:
		return fmt.Errorf("faulters-in %v: want process or child", c.FaultersIn)
	case c.Runs < 1 || c.Runs > MaxRuns:
		return fmt.Errorf("--runs %d: want 1 to %d", c.Runs, MaxRuns)
	case c.Op != OpCopy && c.Op != OpZero:
		return fmt.Errorf("op %v: want copy or zero", c.Op)
	case c.GOMAXPROCS < 0:
		return fmt.Errorf("--gomaxprocs %d: want 0 (automatic) or more", c.GOMAXPROCS)
	}
	return c.Engine.validate()
}

// prefetch is the pager's prefetch setting for c.
func (c Config) prefetch() pager.Prefetch {
	if c.Adaptive {
		return pager.Adaptive()
	}
	return pager.Fixed(c.Chunk)
}

// PrefetchName is "fixed" or "adaptive".
func (c Config) PrefetchName() string {
	if c.Adaptive {
		return "adaptive"
	}
	return "fixed"
}

// want is the byte a page holds where the faulter did not write.
func (c Config) want() byte {
	if c.Op == OpZero {
		return 0
	}
	return ImageByte
}

// Sample is one run's measurements.
type Sample struct {
	// Elapsed is the time from starting the faulters to joining them all.
	Elapsed time.Duration
	// P50 and P99 are percentiles of the time one touch took.
	P50, P99 time.Duration
	// Stats are the pager's counters at the end of the run (Go runs only).
	Stats pager.Stats
	// CPU is the process's CPU time, user and system, every thread, while
	// the faulters ran: theirs included when they are in this process,
	// the pager's (or the C handlers') alone when they are in a child.
	CPU time.Duration

	raw []byte // C runs: the JSON line the reference printed
}

// VerifyError reports a page that did not hold what it should, seen by a
// read-touch (Touch) or by the verification after the run.
type VerifyError struct {
	Offset int  `json:"offset"` // of the byte in the region
	Got    byte `json:"got"`    // its value
	Want   byte `json:"want"`   // the expected one
	Touch  bool `json:"touch"`  // seen by a faulter's read-touch
}

func (e *VerifyError) Error() string {
	what := "verify failed"
	if e.Touch {
		what = "bad byte on read-touch"
	}
	return fmt.Sprintf("bench: %s at offset %d (page %d): got %#02x, want %#02x", what, e.Offset, e.Offset/PageSize, e.Got, e.Want)
}

// verify checks every byte of region after a run: the first byte of each
// page holds TouchByte after a write-touch, every other byte the source's
// value. It must run once nothing can fault there any more (the
// userfaultfd closed): it reads the region with bytes.Equal.
func verify(region []byte, want byte, written bool) error {
	tmpl := bytes.Repeat([]byte{want}, PageSize)
	first := want
	if written {
		first = TouchByte
	}
	for off := 0; off < len(region); off += PageSize {
		page := region[off : off+PageSize]
		if page[0] != first {
			return &VerifyError{Offset: off, Got: page[0], Want: first}
		}
		if !bytes.Equal(page[1:], tmpl[1:]) {
			for k := 1; k < PageSize; k++ {
				if page[k] != want {
					return &VerifyError{Offset: off + k, Got: page[k], Want: want}
				}
			}
		}
	}
	return nil
}

// permutation returns ref_handler's page order: the identity, shuffled
// within each faulter's slice by its xorshift generator with a fixed seed
// that carries over from one slice to the next.
func permutation(pages, faulters int) []int {
	order := make([]int, pages)
	for i := range order {
		order[i] = i
	}
	seed := uint64(0x9e3779b97f4a7c15)
	for f := range faulters {
		lo, hi := pages*f/faulters, pages*(f+1)/faulters
		for i := hi - 1; i > lo; i-- {
			seed ^= seed << 13
			seed ^= seed >> 7
			seed ^= seed << 17
			j := lo + int(seed%uint64(i-lo+1))
			order[i], order[j] = order[j], order[i]
		}
	}
	return order
}

// Bench is a prepared benchmark: the source image and the page order are
// made once and serve every run.
type Bench struct {
	cfg    Config
	size   int
	pages  int
	image  []byte // mmapped, OpCopy only
	source pager.Source
	order  []int   // nil unless Random
	lat    []int64 // per page touch latency of the current run, ns
	eng    *engineRun
}

// New validates cfg and prepares the runs. Close releases the source image.
func New(cfg Config) (*Bench, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.FaultersIn == Child && cfg.ChildExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: the faulters' program: %w", err)
		}
		cfg.ChildExe = exe
	}
	b := &Bench{cfg: cfg, size: cfg.MiB << 20}
	eng, err := cfg.Engine.start()
	if err != nil {
		return nil, fmt.Errorf("bench: engine: %w", err)
	}
	b.eng = eng
	b.pages = b.size / PageSize
	if cfg.FaultersIn == InProcess {
		b.lat = make([]int64, b.pages)
		if cfg.Random {
			b.order = permutation(b.pages, cfg.Faulters)
		}
	}
	if cfg.Op == OpZero {
		b.source = pager.Zero(int64(b.size))
		return b, nil
	}
	// Like ref_handler's source: private anonymous memory, filled once.
	img, err := unix.Mmap(-1, 0, b.size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		b.eng.close()
		return nil, fmt.Errorf("bench: mmap %d MiB source image: %w", cfg.MiB, err)
	}
	for i := range img {
		img[i] = ImageByte
	}
	for _, p := range cfg.corrupt {
		img[p*PageSize] = ^byte(ImageByte)
		img[p*PageSize+corruptOffset] = ^byte(ImageByte)
	}
	b.image = img
	b.source = pager.Image(img)
	return b, nil
}

// Config returns the configuration with its defaults filled in.
func (b *Bench) Config() Config { return b.cfg }

// Close unmaps the source image.
func (b *Bench) Close() error {
	b.eng.close()
	b.eng = nil
	if b.image == nil {
		return nil
	}
	err := unix.Munmap(b.image)
	b.image = nil
	return err
}

// errStopped ends the faulters of a run whose pager stopped early.
var errStopped = errors.New("bench: pager stopped before the faulters finished")

// Run does one run: a fresh userfaultfd and region served by a new pager,
// touched by the faulters, then verified.
func (b *Bench) Run(ctx context.Context) (Sample, error) {
	if b.cfg.FaultersIn == Child {
		return b.runChild(ctx)
	}
	cfg := b.cfg
	u, err := uffd.Open(uffd.Config{Features: cfg.Engine.features()})
	if err != nil {
		return Sample{}, err
	}
	var closeOnce sync.Once
	closeUFFD := func() { closeOnce.Do(func() { u.Close() }) }
	defer closeUFFD()
	region, err := mapRegion(b.size)
	if err != nil {
		return Sample{}, err
	}
	defer unix.Munmap(region)
	start := uintptr(unsafe.Pointer(unsafe.SliceData(region)))
	if _, err := u.Register(start, uintptr(b.size), uffd.ModeMissing); err != nil {
		return Sample{}, err
	}
	sv, err := b.serve(ctx, u, start, b.size)
	if err != nil {
		return Sample{}, err
	}
	p := sv.p
	// When the pager stops before the faulters are done (an error, or ctx
	// ended), closing the userfaultfd lets the kernel fill the rest of the
	// region with zero pages, and the stop flag ends the faulters.
	var stop atomic.Bool
	var elapsed, cpu time.Duration
	var touchErr error
	serveErr, serveDone := sv.while(func() {
		c0 := processCPU()
		elapsed, touchErr = fault(region, cfg.Faulters, b.order, b.lat, cfg.ReadTouch, cfg.want(), &stop)
		cpu = processCPU() - c0
	}, func() {
		stop.Store(true)
		closeUFFD()
	})
	s := Sample{Elapsed: elapsed, Stats: p.Stats(), CPU: cpu}
	// Verify with the userfaultfd closed: a page that was never served then
	// reads as zeroes instead of blocking for good.
	closeUFFD()
	switch {
	case serveErr != nil:
		return s, fmt.Errorf("bench: serve: %w", serveErr)
	case ctx.Err() != nil:
		return s, ctx.Err()
	case serveDone:
		return s, errStopped
	}
	if touchErr != nil {
		return s, touchErr
	}
	if err := verify(region, cfg.want(), !cfg.ReadTouch); err != nil {
		return s, err
	}
	s.P50, s.P99 = percentiles(b.lat)
	return s, nil
}

// processCPU is the process's CPU time so far, user and system.
func processCPU() time.Duration {
	var u unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &u) != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// mapRegion maps a region to fault on, as ref_handler does: private
// anonymous memory without transparent huge pages.
func mapRegion(size int) ([]byte, error) {
	region, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("bench: mmap %d MiB region: %w", size>>20, err)
	}
	if err := unix.Madvise(region, unix.MADV_NOHUGEPAGE); err != nil {
		unix.Munmap(region)
		return nil, fmt.Errorf("bench: madvise(MADV_NOHUGEPAGE): %w", err)
	}
	return region, nil
}

// percentiles sorts lat and returns its 50th and 99th percentiles as
// ref_handler picks them.
func percentiles(lat []int64) (p50, p99 time.Duration) {
	slices.Sort(lat)
	return time.Duration(lat[len(lat)/2]), time.Duration(lat[len(lat)*99/100])
}

// fault runs the faulters over region, each a goroutine locked to its
// thread touching its own slice, and returns the time from their start to
// the last one's end. order, when not nil, is the page order; lat receives
// each page's touch latency.
func fault(region []byte, faulters int, order []int, lat []int64, read bool, want byte, stop *atomic.Bool) (time.Duration, error) {
	pages := len(region) / PageSize
	errs := make([]error, faulters)
	var wg sync.WaitGroup
	t0 := nanotime()
	for f := range faulters {
		lo, hi := pages*f/faulters, pages*(f+1)/faulters
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			errs[f] = touch(region, lo, hi, order, lat, read, want, stop)
		})
	}
	wg.Wait()
	return time.Duration(nanotime() - t0), errors.Join(errs...)
}

// touch is a faulter: it touches one byte of each page of [lo, hi) (page
// indexes, through order when not nil) with a plain load or store, and
// records each touch's latency. It must not touch the region any other way:
// a fault inside runtime assembly (copy, bytes.Equal) cannot be preempted,
// and with the pager in this process a garbage collection would then wait
// for it forever (see the package documentation).
func touch(region []byte, lo, hi int, order []int, lat []int64, read bool, want byte, stop *atomic.Bool) error {
	for i := lo; i < hi; i++ {
		if stop.Load() {
			return errStopped
		}
		pg := i
		if order != nil {
			pg = order[i]
		}
		off := pg * PageSize
		t0 := nanotime()
		if read {
			if got := region[off]; got != want {
				return &VerifyError{Offset: off, Got: got, Want: want, Touch: true}
			}
		} else {
			region[off] = TouchByte
		}
		lat[pg] = nanotime() - t0
	}
	return nil
}

// Progress reports one finished run.
type Progress struct {
	Impl   string // "go", "ref", or a limit's name
	Run    int    // from 1
	Runs   int
	Sample Sample
}

// Run runs the benchmark cfg.Runs times and reports the median run.
// progress, when not nil, is called after each run.
func Run(ctx context.Context, cfg Config, progress func(Progress)) (*Result, error) {
	b, err := New(cfg)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	defer setGOMAXPROCS(b.cfg.GOMAXPROCS)()
	samples := make([]Sample, 0, b.cfg.Runs)
	for i := range b.cfg.Runs {
		s, err := b.Run(ctx)
		if err != nil {
			return nil, runError("go", i+1, b.cfg.Runs, err)
		}
		samples = append(samples, s)
		if progress != nil {
			progress(Progress{Impl: "go", Run: i + 1, Runs: b.cfg.Runs, Sample: s})
		}
	}
	return b.result(samples), nil
}

func runError(impl string, run, runs int, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s run %d of %d: %w", impl, run, runs, err)
}

// setGOMAXPROCS sets GOMAXPROCS to n and returns a function that restores
// it.
func setGOMAXPROCS(n int) func() {
	old := runtime.GOMAXPROCS(n)
	return func() { runtime.GOMAXPROCS(old) }
}

// medianIndex is the index of the median sample by elapsed time, chosen
// as ref_handler chooses it: the element at runs/2 of the ascending order.
func medianIndex(samples []Sample) int {
	idx := make([]int, len(samples))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(samples[a].Elapsed, samples[b].Elapsed) })
	return idx[len(idx)/2]
}

// serving is a pager serving the benchmark's region while its faulters run.
type serving struct {
	p      *pager.Pager
	stop   context.CancelFunc
	served chan error
}

// serve starts a pager over [start, start+n) of u, serving from the
// benchmark's source, and returns once it serves: the faulters start then,
// as the C reference's once its handlers run.
func (b *Bench) serve(ctx context.Context, u *uffd.UFFD, start uintptr, n int) (*serving, error) {
	p, err := pager.New(u, b.eng.pagerConfig(b.cfg.prefetch()))
	if err != nil {
		return nil, err
	}
	if err := p.Add(pager.Region{Start: start, Len: uintptr(n), Source: b.source, Name: "bench"}); err != nil {
		return nil, err
	}
	serveCtx, stop := context.WithCancel(ctx)
	sv := &serving{p: p, stop: stop, served: make(chan error, 1)}
	go func() { sv.served <- p.Serve(serveCtx) }()
	select {
	case <-p.Serving():
		return sv, nil
	case err := <-sv.served:
		stop()
		return nil, fmt.Errorf("bench: pager: %w", err)
	}
}

// while runs faulters while the pager serves; if Serve ends first, early
// runs at once (to release the faulters). Then Serve is stopped. It
// returns Serve's error and whether it ended before the faulters did.
func (sv *serving) while(faulters, early func()) (serveErr error, ended bool) {
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case serveErr = <-sv.served:
			ended = true
			early()
		case <-done:
		}
	}()
	faulters()
	close(done)
	<-watched // after this, serveErr and ended belong to this goroutine again
	sv.stop()
	if !ended {
		serveErr = <-sv.served
	}
	return serveErr, ended
}

func (b *Bench) result(samples []Sample) *Result {
	cfg := b.cfg
	chunk := cfg.Chunk
	if cfg.Adaptive {
		chunk = PageSize
	}
	return &Result{
		Impl:       "go",
		Op:         cfg.Op,
		Chunk:      chunk,
		Faulters:   cfg.Faulters,
		Handlers:   cfg.Engine.handlers(),
		MiB:        cfg.MiB,
		Median:     samples[medianIndex(samples)],
		Samples:    samples,
		Prefetch:   cfg.PrefetchName(),
		Engine:     cfg.Engine.String(),
		FaultersIn: cfg.FaultersIn,
		ReadTouch:  cfg.ReadTouch,
		Random:     cfg.Random,
		GOMAXPROCS: cfg.GOMAXPROCS,
	}
}
