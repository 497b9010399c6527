//go:build linux && cgo

// Package snapbench is `uffd bench snapshot`: writers update random 8-byte
// words of a large region at full speed while it is saved to a file,
// (a) with package snapshot and (b) with fork() and a child writing out
// its copy, as Redis' BGSAVE does; and an incremental snapshot after 1%
// of the pages were written. It reports the writers' longest stall,
// their throughput during the snapshot relative to before it, the
// snapshot's duration and the peak extra memory.
package snapbench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/snapshot"
)

// Config is a benchmark's setup.
type Config struct {
	Size    int64  // bytes of memory (default 4 GiB)
	Writers int    // writing goroutines, each on its own OS thread (default 2)
	Dir     string // where the images go (default os.TempDir()); removed after
	THP     bool   // MADV_HUGEPAGE (default MADV_NOHUGEPAGE: 4 KiB pages)
	Methods []string
	Runs    int           // runs of each method (default 1)
	Before  time.Duration // the writers' throughput is measured this long before (default 1 s)
	Buffer  int           // snapshot.Config.Buffer
	Block   int           // snapshot.Config.Block
	// Dirty is the fraction of the pages written before the incremental
	// snapshot (default 0.01).
	Dirty float64
}

// Methods.
const (
	MethodUffd = "uffd" // package snapshot
	MethodFork = "fork" // fork() and a child writing out its copy
)

// Figures are one run's results.
type Figures struct {
	Method string
	// Stall is the writers' longest pause between two writes during
	// the snapshot; StallBefore the same before it (the noise floor).
	Stall, StallBefore time.Duration
	// Rate is the writes per second before the snapshot; Ratio the rate
	// during it relative to Rate.
	Rate  float64
	Ratio float64
	// Duration is from the start of the snapshot to the last byte
	// written (fork: to the child's exit).
	Duration time.Duration
	// Extra is the peak memory used beyond the region, sampled
	// (proportional set size of the process, and of the fork's child).
	Extra int64
	// Written is the image's bytes.
	Written int64
	// Pause is the snapshot's own measure of its instant (uffd), or the
	// fork() call's duration in the parent (fork).
	Pause time.Duration
	// Incremental: bytes the diff wrote after Dirty of the pages were
	// written, relative to the region (uffd only).
	IncrementalRatio float64
	IncrementalPause time.Duration
	Notes            string
}

func (c *Config) defaults() error {
	if c.Size == 0 {
		c.Size = 4 << 30
	}
	if c.Writers == 0 {
		c.Writers = 2
	}
	if c.Dir == "" {
		c.Dir = os.TempDir()
	}
	if len(c.Methods) == 0 {
		c.Methods = []string{MethodUffd, MethodFork}
	}
	if c.Runs == 0 {
		c.Runs = 1
	}
	if c.Before == 0 {
		c.Before = time.Second
	}
	if c.Dirty == 0 {
		c.Dirty = 0.01
	}
	ps := int64(os.Getpagesize())
	switch {
	case c.Size < 64*ps || c.Size%(2<<20) != 0:
		return fmt.Errorf("snapbench: size %d: want a multiple of 2 MiB", c.Size)
	case c.Writers < 1 || c.Writers > 64:
		return fmt.Errorf("snapbench: %d writers: want 1 to 64", c.Writers)
	case c.Runs < 1:
		return fmt.Errorf("snapbench: %d runs", c.Runs)
	case c.Dirty < 0 || c.Dirty > 1:
		return fmt.Errorf("snapbench: dirty fraction %v: want 0 to 1", c.Dirty)
	}
	for _, m := range c.Methods {
		if m != MethodUffd && m != MethodFork {
			return fmt.Errorf("snapbench: method %q: want %s or %s", m, MethodUffd, MethodFork)
		}
	}
	return nil
}

// Run runs the benchmark, printing each run's figures to out, and returns
// them.
func Run(ctx context.Context, cfg Config, out io.Writer) ([]Figures, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	mem, err := unix.Mmap(-1, 0, int(cfg.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("snapbench: mmap %d bytes: %w", cfg.Size, err)
	}
	defer unix.Munmap(mem)
	advice := unix.MADV_NOHUGEPAGE
	if cfg.THP {
		advice = unix.MADV_HUGEPAGE
	}
	if err := unix.Madvise(mem, advice); err != nil {
		return nil, fmt.Errorf("snapbench: madvise: %w", err)
	}
	ps := os.Getpagesize()
	for i := 0; i < len(mem); i += ps { // populate: every page holds data
		mem[i] = byte(i/ps) | 1
	}
	fmt.Fprintf(out, "memory: %d MiB of private anonymous memory (%s), %d writers updating random 8-byte words\n",
		cfg.Size>>20, map[bool]string{false: "4 KiB pages", true: "transparent huge pages"}[cfg.THP], cfg.Writers)
	var all []Figures
	for run := range cfg.Runs {
		for _, m := range cfg.Methods {
			if err := ctx.Err(); err != nil {
				return all, err
			}
			var f Figures
			var err error
			switch m {
			case MethodUffd:
				f, err = runUffd(ctx, cfg, mem)
			case MethodFork:
				f, err = runFork(ctx, cfg, mem)
			}
			if err != nil {
				return all, err
			}
			all = append(all, f)
			fmt.Fprintf(out, "run %d %s\n", run+1, f)
		}
	}
	if cfg.Runs > 1 {
		for _, m := range cfg.Methods {
			fmt.Fprintf(out, "median %s\n", Median(all, m))
		}
	}
	return all, nil
}

func (f Figures) String() string {
	s := fmt.Sprintf("%-4s stall %8.3f ms (before %6.3f)  pause %8.3f ms  throughput %.3f of %.1f M writes/s  duration %7.1f ms  extra memory %6.1f MiB  written %6.1f MiB",
		f.Method, ms(f.Stall), ms(f.StallBefore), ms(f.Pause), f.Ratio, f.Rate/1e6, ms(f.Duration), float64(f.Extra)/(1<<20), float64(f.Written)/(1<<20))
	if f.Method == MethodUffd {
		s += fmt.Sprintf("  incremental %.4f of the bytes (pause %.3f ms)", f.IncrementalRatio, ms(f.IncrementalPause))
	}
	if f.Notes != "" {
		s += "  " + f.Notes
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// Median returns the median of each figure over the runs of method m.
func Median(all []Figures, m string) Figures {
	var fs []Figures
	for _, f := range all {
		if f.Method == m {
			fs = append(fs, f)
		}
	}
	if len(fs) == 0 {
		return Figures{Method: m}
	}
	med := func(get func(Figures) float64) float64 {
		v := make([]float64, len(fs))
		for i, f := range fs {
			v[i] = get(f)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	d := func(get func(Figures) time.Duration) time.Duration {
		return time.Duration(med(func(f Figures) float64 { return float64(get(f)) }))
	}
	return Figures{
		Method:           m,
		Stall:            d(func(f Figures) time.Duration { return f.Stall }),
		StallBefore:      d(func(f Figures) time.Duration { return f.StallBefore }),
		Pause:            d(func(f Figures) time.Duration { return f.Pause }),
		Duration:         d(func(f Figures) time.Duration { return f.Duration }),
		IncrementalPause: d(func(f Figures) time.Duration { return f.IncrementalPause }),
		Rate:             med(func(f Figures) float64 { return f.Rate }),
		Ratio:            med(func(f Figures) float64 { return f.Ratio }),
		Extra:            int64(med(func(f Figures) float64 { return float64(f.Extra) })),
		Written:          int64(med(func(f Figures) float64 { return float64(f.Written) })),
		IncrementalRatio: med(func(f Figures) float64 { return f.IncrementalRatio }),
		Notes:            fmt.Sprintf("(median of %d)", len(fs)),
	}
}

// ---------------------------------------------------------------------
// Writers.

type writer struct {
	count atomic.Uint64
	gap   atomic.Int64  // the longest gap between two clock reads this phase
	seen  atomic.Uint64 // the phase the writer measures
	_     [40]byte
}

type writerSet struct {
	ws    []writer
	phase atomic.Uint64
	stop  atomic.Bool
	wg    sync.WaitGroup
}

// startWriters runs n writers over mem, each on a locked OS thread: an
// xorshift picks the word, the clock is read every 64 writes, and the
// longest gap between reads is kept per phase.
func startWriters(mem []byte, n int) *writerSet {
	s := &writerSet{ws: make([]writer, n)}
	p := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(mem))), len(mem)/8)
	mask := uint64(len(p) - 1) // a power of two, or close: see below
	pow2 := len(p)&(len(p)-1) == 0
	for i := range n {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			w := &s.ws[i]
			x := uint64(i)*0x9e3779b97f4a7c15 + 0x2545f4914f6cdd1d
			last, phase, max := nanotime(), s.phase.Load(), int64(0)
			var cnt uint64
			for !s.stop.Load() {
				for range 64 {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					k := x & mask
					if !pow2 {
						k = x % uint64(len(p))
					}
					p[k] = x
				}
				cnt += 64
				now := nanotime()
				if ph := s.phase.Load(); ph != phase {
					phase, max = ph, 0
					w.gap.Store(0)
					w.seen.Store(ph)
				} else if g := now - last; g > max {
					max = g
					w.gap.Store(g)
				}
				last = now
				w.count.Store(cnt)
			}
		}()
	}
	return s
}

func (s *writerSet) writes() (n uint64) {
	for i := range s.ws {
		n += s.ws[i].count.Load()
	}
	return n
}

// newPhase starts a new phase of gap measure and returns the old phase's
// longest gap.
func (s *writerSet) newPhase() time.Duration {
	var g int64
	for i := range s.ws {
		g = max(g, s.ws[i].gap.Load())
	}
	ph := s.phase.Add(1)
	// The writers see the new phase within 64 writes.
	for i := range s.ws {
		for s.ws[i].seen.Load() != ph && !s.stop.Load() {
			runtime.Gosched()
		}
	}
	return time.Duration(g)
}

func (s *writerSet) finish() {
	s.stop.Store(true)
	s.wg.Wait()
}

// baseline measures the writers' rate over d, and their longest stall.
func (s *writerSet) baseline(d time.Duration) (rate float64, stall time.Duration) {
	time.Sleep(100 * time.Millisecond) // warm
	s.newPhase()
	n0, t0 := s.writes(), time.Now()
	time.Sleep(d)
	n1, t1 := s.writes(), time.Now()
	return float64(n1-n0) / t1.Sub(t0).Seconds(), s.newPhase()
}

// ---------------------------------------------------------------------
// Memory.

// pss returns the proportional set size of process pid (0: this one).
func pss(pid int) (int64, error) {
	path := "/proc/self/smaps_rollup"
	if pid > 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/smaps_rollup"
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no Pss in " + path)
}

// sampler samples the memory of this process (and of a child, once set)
// every 50 ms, keeping the peak.
type sampler struct {
	base  int64
	child atomic.Int64
	peak  atomic.Int64
	stop  chan struct{}
	done  chan struct{}
}

func newSampler() *sampler {
	base, _ := pss(0)
	return newSamplerFrom(base)
}

func newSamplerFrom(base int64) *sampler {
	s := &sampler{base: base, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	v, err := pss(0)
	if err != nil {
		return
	}
	if c := s.child.Load(); c > 0 {
		if cv, err := pss(int(c)); err == nil {
			v += cv
		}
	}
	if extra := v - s.base; extra > s.peak.Load() {
		s.peak.Store(extra)
	}
}

func (s *sampler) finish() int64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}

// ---------------------------------------------------------------------
// The methods.

func runUffd(ctx context.Context, cfg Config, mem []byte) (Figures, error) {
	f := Figures{Method: MethodUffd}
	u, err := uffd.Open(uffd.Config{Features: snapshot.Features(false)})
	if err != nil {
		return f, err
	}
	defer u.Close()
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	s, err := snapshot.New(u, snapshot.Config{
		Regions: []snapshot.Region{{Start: addr, Len: uintptr(len(mem))}},
		Track:   true, Buffer: cfg.Buffer, Block: cfg.Block,
	})
	if err != nil {
		return f, err
	}
	defer s.Close()
	full := filepath.Join(cfg.Dir, fmt.Sprintf("uffd-snapbench-%d.img", os.Getpid()))
	diff := full + ".diff"
	defer os.Remove(full)
	defer os.Remove(diff)

	ws := startWriters(mem, cfg.Writers)
	f.Rate, f.StallBefore = ws.baseline(cfg.Before)
	smp := newSampler()
	n0, t0 := ws.writes(), time.Now()
	res, err := s.TakeFile(ctx, full)
	n1, t1 := ws.writes(), time.Now()
	f.Stall = ws.newPhase()
	f.Extra = smp.finish()
	ws.finish()
	if err != nil {
		return f, err
	}
	f.Duration = t1.Sub(t0)
	f.Ratio = float64(n1-n0) / t1.Sub(t0).Seconds() / f.Rate
	f.Written = res.Written
	f.Pause = res.Pause
	st := res.Stats
	f.Notes = fmt.Sprintf("(arm %.1f ms, %d rounds, %d pages at the instant; %d copy-before-write faults, %d parked, longest %.1f ms; buffer peak %.1f MiB)",
		ms(res.Arm), res.Rounds, res.Final, st.CowFaults, st.Parked, ms(st.ParkMax), float64(st.SlotsPeak)/(1<<20))

	// Incremental: the writers stopped, Dirty of the pages written.
	ps := os.Getpagesize()
	pages := len(mem) / ps
	n := int(float64(pages) * cfg.Dirty)
	if _, err := s.TakeFile(ctx, diff); err != nil { // what the writers wrote during the save
		return f, err
	}
	stride := pages / max(n, 1)
	for i := range n {
		mem[i*stride*ps+8] ^= 0xff
	}
	res, err = s.TakeFile(ctx, diff)
	if err != nil {
		return f, err
	}
	f.IncrementalRatio = float64(res.Written) / float64(len(mem))
	f.IncrementalPause = res.Pause
	return f, nil
}

func runFork(ctx context.Context, cfg Config, mem []byte) (Figures, error) {
	f := Figures{Method: MethodFork}
	path := filepath.Join(cfg.Dir, fmt.Sprintf("uffd-snapbench-%d.fork", os.Getpid()))
	out, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return f, err
	}
	defer os.Remove(path)
	defer out.Close()
	ws := startWriters(mem, cfg.Writers)
	f.Rate, f.StallBefore = ws.baseline(cfg.Before)
	base, _ := pss(0)
	job := &forkJob{fd: out.Fd(), addr: unsafe.Pointer(unsafe.SliceData(mem)), n: uintptr(len(mem)), chunk: 1 << 20}
	n0, t0 := ws.writes(), time.Now()
	runtime.LockOSThread()
	pid, errno := forkWrite(job)
	f.Pause = time.Since(t0)
	runtime.UnlockOSThread()
	if errno != 0 {
		ws.finish()
		return f, fmt.Errorf("snapbench: fork: %w", errno)
	}
	// Sampled from here on: reading smaps takes the mmap lock, which
	// fork takes exclusively.
	smp := newSamplerFrom(base)
	smp.child.Store(int64(pid))
	var status syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &status, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	n1, t1 := ws.writes(), time.Now()
	f.Stall = ws.newPhase()
	smp.child.Store(0)
	f.Extra = smp.finish()
	ws.finish()
	if !status.Exited() || status.ExitStatus() != 0 {
		return f, fmt.Errorf("snapbench: the fork's child failed writing: %v", status)
	}
	f.Duration = t1.Sub(t0)
	f.Ratio = float64(n1-n0) / t1.Sub(t0).Seconds() / f.Rate
	if st, err := out.Stat(); err == nil {
		f.Written = st.Size()
	}
	return f, nil
}
