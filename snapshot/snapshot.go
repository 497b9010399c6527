//go:build linux && cgo

package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/remote"
)

// Region is memory to snapshot: a range of the process whose userfaultfd
// the Snapshotter holds.
type Region struct {
	Start, Len uintptr
	// PageSize is the memory's page size: 0 for the base page size, the
	// huge page size for hugetlbfs (its pages are protected and saved
	// whole).
	PageSize int
}

// Config holds a Snapshotter's options. The zero value of every field but
// Regions means its default.
type Config struct {
	// Regions are laid out in the image one after the other, in order.
	Regions []Region
	// Pid is the process the regions belong to, when the userfaultfd was
	// handed over by another process (0: this process).
	Pid int
	// Track keeps tracking writes after each snapshot, so that the next
	// one saves only the pages written since (an incremental snapshot).
	// Tracking costs one write-protect fault on the first write to each
	// page after a snapshot.
	Track bool
	// Buffer bounds the memory of pages copied and not yet written out
	// (default pager.DefaultProtectBuffer). A slow destination makes
	// writers wait for room instead of growing it.
	Buffer int
	// Block is the most bytes a write fault saves around its page
	// (default pager.DefaultProtectBlock).
	Block int
	// ArmChunk is the bytes write-protected per ioctl while arming, with
	// writers running (default 64 MiB).
	ArmChunk int
	// Rounds bounds the passes that protect again the pages written while
	// arming (default 8); Small ends them early: a dirty set of at most
	// Small pages is protected at the instant itself (default 64).
	Rounds, Small int
	// SaveRun is the most pages the background pass copies at once
	// (default 64).
	SaveRun int
	// Engine serves the faults; nil starts one for the Snapshotter.
	Engine *pager.Engine
	// Buffered writes the image through the page cache. By default it is
	// written with O_DIRECT where the file system has it: the kernel puts
	// buffered writers to sleep for up to 200 ms when dirty pages pile up,
	// and writers waiting for room in the buffer would wait as long.
	Buffered bool
	// TempDir holds the staged copy of a layer whose destination is not
	// an *os.File (default os.TempDir()).
	TempDir string
}

// Features returns the userfaultfd features a Snapshotter needs for
// memory of the given kinds of mapping: write-protect faults, protection
// of unpopulated pages, and write-protection of shmem and hugetlbfs.
func Features(fileBacked bool) uffd.Feature {
	f := uffd.FeatureWPFaults | uffd.FeatureWPUnpopulated
	if fileBacked {
		f |= uffd.FeatureWPHugetlbfsShmem
	}
	return f
}

// Snapshotter takes snapshots of registered memory while its writers keep
// running. Its methods are not for concurrent use, except Close.
type Snapshotter struct {
	u    *uffd.UFFD
	cfg  Config
	p    *pager.Pager
	prot *pager.Protector
	size int64

	cancel context.CancelFunc
	served chan error

	mu       sync.Mutex
	closed   bool
	tracking bool // the last snapshot succeeded and Track is on
	last     ID   // the last layer written

	armHook  func(chunk int) // tests: called after each chunk of the first protect pass
	saveHook func(step int)  // tests: called after each step of the background pass
}

// Errors.
var (
	// ErrClosed is returned by a Snapshotter that was closed.
	ErrClosed = errors.New("snapshot: closed")
)

// New registers cfg.Regions in write-protect mode on u and returns a
// Snapshotter for them. u needs Features (FeatureWPHugetlbfsShmem for
// shmem and hugetlbfs); its regions must not be registered on another
// userfaultfd. The Snapshotter does not own u; Close unregisters the
// regions.
func New(u *uffd.UFFD, cfg Config) (*Snapshotter, error) {
	if len(cfg.Regions) == 0 {
		return nil, errors.New("snapshot: no regions")
	}
	if missing := (uffd.FeatureWPFaults | uffd.FeatureWPUnpopulated) &^ u.Features(); missing != 0 {
		return nil, fmt.Errorf("snapshot: the userfaultfd lacks %v (open it with snapshot.Features)", missing)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.ArmChunk, 64<<20)
	def(&cfg.Rounds, 8)
	def(&cfg.Small, 64)
	def(&cfg.SaveRun, 64)
	if cfg.ArmChunk < 0 || cfg.Rounds < 0 || cfg.Small < 0 || cfg.SaveRun < 0 || cfg.Pid < 0 {
		return nil, errors.New("snapshot: negative ArmChunk, Rounds, Small, SaveRun or Pid")
	}
	cfg.Regions = append([]Region(nil), cfg.Regions...)
	ranges := make([]pager.ProtectRange, len(cfg.Regions))
	var off int64
	for i, r := range cfg.Regions {
		if r.PageSize == 0 {
			cfg.Regions[i].PageSize = os.Getpagesize()
			r.PageSize = cfg.Regions[i].PageSize
		}
		ranges[i] = pager.ProtectRange{Start: r.Start, Len: r.Len, PageSize: r.PageSize, Offset: off}
		off += int64(r.Len)
	}
	p, err := pager.New(u, pager.Config{Engine: cfg.Engine})
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	var registered []Region
	unregister := func() {
		for _, r := range registered {
			u.Unregister(r.Start, r.Len)
		}
	}
	for _, r := range cfg.Regions {
		if _, err := u.Register(r.Start, r.Len, uffd.ModeWriteProtect); err != nil {
			unregister()
			return nil, fmt.Errorf("snapshot: register %#x+%#x for write-protection: %w", r.Start, r.Len, err)
		}
		registered = append(registered, r)
	}
	prot, err := p.NewProtector(pager.ProtectorConfig{Ranges: ranges, Buffer: cfg.Buffer, Block: cfg.Block, Pid: cfg.Pid})
	if err != nil {
		unregister()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	s := &Snapshotter{u: u, cfg: cfg, p: p, prot: prot, size: off, served: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.served <- p.Serve(ctx) }()
	select {
	case <-p.Serving():
	case err := <-s.served:
		s.served <- err
		prot.Close()
		unregister()
		cancel()
		if err == nil {
			err = uffd.ErrClosed
		}
		return nil, fmt.Errorf("snapshot: serving: %w", err)
	}
	return s, nil
}

// Size returns the bytes of the image: the regions' lengths added up.
func (s *Snapshotter) Size() int64 { return s.size }

// Regions returns the regions, with their page sizes filled in.
func (s *Snapshotter) Regions() []Region { return append([]Region(nil), s.cfg.Regions...) }

// Stats returns the protector's counters since New.
func (s *Snapshotter) Stats() pager.ProtectStats { return s.prot.Stats() }

// Close ends the Snapshotter: nothing stays protected, every writer is
// released, the regions are unregistered.
func (s *Snapshotter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.prot.Close()
	s.cancel()
	if e := <-s.served; e != nil && err == nil {
		err = e
	}
	for _, r := range s.cfg.Regions {
		if e := s.u.Unregister(r.Start, r.Len); e != nil && err == nil && !errors.Is(e, uffd.ErrClosed) {
			err = e
		}
	}
	return err
}

// Result describes a snapshot taken.
type Result struct {
	Header
	// Instant is when the snapshot's contents were the memory's.
	Instant time.Time
	// Arm is how long arming took (writers running, faulting at most
	// once per page); Pause is the last part, when writers of pages not
	// yet protected again were held; Save is from the instant to the
	// last byte written.
	Arm, Pause, Save time.Duration
	// Rounds of protecting again the pages written while arming, and the
	// pages protected at the instant.
	Rounds, Final int
	// Pages saved (of each region's page size), and bytes written out
	// (zero pages are holes).
	Pages   int64
	Written int64
	// Stats are the protector's counters for this snapshot.
	Stats pager.ProtectStats
}

// Take takes a snapshot and writes it to dst as a layer (see OpenLayer):
// a full one the first time, after a failed snapshot or without
// Config.Track; else a diff holding the pages written since the last
// snapshot. dst must read as zeroes where nothing was written (a new or
// truncated file): zero pages are not written. An *os.File is written by
// a thread of the snapshot's own, with no Go code in the loop; any other
// io.WriterAt gets a copy of the layer staged in a temporary file
// (Config.TempDir), once the writers run free again: a goroutine draining
// the buffer would stop with the world at each garbage collection, and a
// writer of this process faulting inside runtime assembly on a full buffer
// would then hang it. When ctx ends or dst fails, everything is
// unprotected, every writer released, and the error returned.
func (s *Snapshotter) Take(ctx context.Context, dst io.WriterAt) (*Result, error) {
	if f, ok := dst.(*os.File); ok {
		return s.take(ctx, f, false)
	}
	return s.stage(ctx, false, copyTo(ctx, dst))
}

// TakeFull takes a full snapshot, whatever the tracking state.
func (s *Snapshotter) TakeFull(ctx context.Context, dst io.WriterAt) (*Result, error) {
	if f, ok := dst.(*os.File); ok {
		return s.take(ctx, f, true)
	}
	return s.stage(ctx, true, copyTo(ctx, dst))
}

// copyTo delivers a staged layer to dst.
func copyTo(ctx context.Context, dst io.WriterAt) func(*os.File) error {
	return func(tmp *os.File) error {
		if err := copyData(ctx, dst, tmp); err != nil {
			return fmt.Errorf("snapshot: copying the staged layer: %w", err)
		}
		return nil
	}
}

// TakeURL takes a snapshot (Take) and uploads its layer to url
// (s3://BUCKET/KEY) with remote.Push, the image's index beside it. The
// layer is staged in a temporary file (Config.TempDir) and uploaded once
// the writers run free again, so that the store's speed never holds a
// writer. A full layer is a plain memory image at the regions' offsets
// (its index and footer follow them), which remote.Open and 'uffd
// firecracker --mem-file s3://...' serve as they are; a diff layer is
// stored as it is, to be pulled (remote.Pull) and opened with OpenChain.
// When the upload fails, the next snapshot is full.
func (s *Snapshotter) TakeURL(ctx context.Context, url string, cfg remote.PushConfig) (*Result, error) {
	return s.stage(ctx, false, func(tmp *os.File) error {
		if _, err := remote.Push(ctx, fmt.Sprintf("/proc/self/fd/%d", tmp.Fd()), url, cfg); err != nil {
			return fmt.Errorf("snapshot: uploading the layer to %s: %w", url, err)
		}
		return nil
	})
}

// TakeFile takes a snapshot into a new file at path (Take), created or
// truncated, and synced.
func (s *Snapshotter) TakeFile(ctx context.Context, path string) (*Result, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	res, err := s.Take(ctx, f)
	if err == nil {
		if err = f.Sync(); err != nil {
			err = fmt.Errorf("snapshot: %w", err)
		}
	}
	if e := f.Close(); e != nil && err == nil {
		err = fmt.Errorf("snapshot: %w", e)
	}
	if err != nil {
		if res != nil { // taken, but not on disk
			s.lost()
		}
		return nil, err
	}
	return res, nil
}

func (s *Snapshotter) take(ctx context.Context, dst *os.File, forceFull bool) (res *Result, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	w := s.prot
	full := forceFull || !s.tracking
	track := s.cfg.Track
	s.tracking = false // until this one succeeds
	res = &Result{}
	aborted := false
	abort := func() {
		if !aborted {
			aborted = true
			w.Abort()
		}
	}
	defer func() {
		if err != nil {
			abort()
		}
	}()
	t0 := time.Now()
	st0 := w.Stats()
	// The drain runs from before the instant: from then on, faults copy
	// into the buffer, and only the drain frees it. Go code may be stopped
	// by a garbage collection at any point here; the drain, a C thread,
	// is not.
	if err := w.DrainTo(dst, !s.cfg.Buffered); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	drained := false
	defer func() {
		if !drained {
			w.Abort()
			w.DrainWait()
		}
	}()

	// Arm: protect everything (full) in chunks while faults are answered
	// at once and marked; then protect the marked pages again until few
	// are left.
	if full {
		w.SetMode(pager.ProtectTrack, track)
		for _, r := range s.cfg.Regions {
			chunk := uintptr(s.cfg.ArmChunk) / uintptr(r.PageSize) * uintptr(r.PageSize)
			chunk = max(chunk, uintptr(r.PageSize))
			for a := r.Start; a < r.Start+r.Len; a += chunk {
				if err := ctx.Err(); err != nil {
					return nil, fmt.Errorf("snapshot: %w", err)
				}
				if err := w.Protect(a, min(chunk, r.Start+r.Len-a), true); err != nil {
					return nil, fmt.Errorf("snapshot: arming: %w", err)
				}
				if s.armHook != nil {
					s.armHook(int((a - r.Start) / chunk))
				}
			}
		}
	}
	for res.Rounds < s.cfg.Rounds && w.DirtyPages() > s.cfg.Small {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		if _, _, err := w.ProtectDirty(); err != nil {
			return nil, fmt.Errorf("snapshot: arming: %w", err)
		}
		res.Rounds++
	}
	// The instant: hold new faults, protect the last marked pages. Every
	// page is then protected and unwritten since its protection.
	final, pause, err := w.Instant(full, track)
	if err != nil {
		return nil, fmt.Errorf("snapshot: the instant: %w", err)
	}
	res.Instant = time.Now()
	res.Final, res.Pause = final, pause
	res.Arm = res.Instant.Sub(t0)

	// Save: the background pass in address order, faults first; runs go
	// to dst.
	hdr := Header{Full: full, Size: s.size, ID: newID()}
	if !full {
		hdr.Parent = s.last
	}
	index, units, pages := s.layerIndex()
	hdr.Units, res.Pages = units, pages
	saveErr := s.save(ctx, w, dst)
	drained = true
	if saveErr != nil {
		return nil, saveErr
	}
	if err := writeIndex(dst, &hdr, index); err != nil {
		return nil, err
	}
	if err := w.Finish(track); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	res.Save = time.Since(res.Instant)
	res.Header = hdr
	res.Stats = w.Stats().Sub(st0)
	res.Written = int64(res.Stats.Written)
	s.tracking = track
	s.last = hdr.ID
	return res, nil
}

// layerIndex returns the layer's index (a bit per unit) for the save
// begun, and its units and pages.
func (s *Snapshotter) layerIndex() (index []uint64, units, pages int64) {
	index = make([]uint64, words(s.size))
	var off int64
	for i, r := range s.cfg.Regions {
		per := int64(r.PageSize / Unit)
		for j, w := range s.prot.Layer(i) {
			for w != 0 {
				b := int64(j*64) + int64(bits.TrailingZeros64(w))
				w &= w - 1
				pages++
				u0 := (off + b*int64(r.PageSize)) / Unit
				for u := u0; u < u0+per; u++ {
					index[u/64] |= 1 << (u % 64)
				}
				units += per
			}
		}
		off += int64(r.Len)
	}
	return index, units, pages
}

// save runs the background pass while the drain thread writes the saved
// runs to f.
func (s *Snapshotter) save(ctx context.Context, w *pager.Protector, f *os.File) error {
	var err error
	for step := 0; ; step++ {
		if err = ctx.Err(); err != nil {
			err = fmt.Errorf("snapshot: %w", err)
			break
		}
		if err = w.Err(); err != nil {
			err = fmt.Errorf("snapshot: %w", err)
			break
		}
		_, done, e := w.SaveStep(s.cfg.SaveRun, 10*time.Millisecond)
		if e != nil {
			err = fmt.Errorf("snapshot: %w", e)
			break
		}
		if done {
			break
		}
		if s.saveHook != nil {
			s.saveHook(step)
		}
	}
	if err != nil {
		w.Abort() // releases every writer; the drain writes nothing more
	}
	if e := w.DrainWait(); err == nil && e != nil {
		err = fmt.Errorf("snapshot: writing to %s: %w", f.Name(), e)
	}
	return err
}

// stage takes a snapshot into a temporary file (unlinked), then hands it
// to deliver once every writer runs free again.
func (s *Snapshotter) stage(ctx context.Context, forceFull bool, deliver func(tmp *os.File) error) (*Result, error) {
	dir := s.cfg.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapshot: a temporary file in %s: %w", dir, err)
	}
	tmp := os.NewFile(uintptr(fd), filepath.Join(dir, "(snapshot staging)"))
	defer tmp.Close()
	res, err := s.take(ctx, tmp, forceFull)
	if err != nil {
		return nil, err
	}
	if err := deliver(tmp); err != nil {
		s.lost()
		return nil, err
	}
	return res, nil
}

// lost records that the layer just taken did not arrive: the next one is
// full, and nothing stays protected for tracking meanwhile.
func (s *Snapshotter) lost() {
	s.mu.Lock()
	s.tracking = false
	s.prot.Abort()
	s.mu.Unlock()
}

// copyData copies the data of src (skipping its holes) to dst at the same
// offsets.
func copyData(ctx context.Context, dst io.WriterAt, src *os.File) error {
	st, err := src.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	buf := make([]byte, 1<<20)
	fd := int(src.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if err == unix.ENXIO { // only a hole is left
				return nil
			}
			return err
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for off = data; off < hole; {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := src.ReadAt(buf[:min(int64(len(buf)), hole-off)], off)
			if n > 0 {
				if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
				off += int64(n)
			}
			if err != nil && n == 0 {
				return err
			}
		}
	}
	return nil
}
