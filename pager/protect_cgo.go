//go:build cgo && linux

package pager

/*
#cgo noescape ps_new
#cgo nocallback ps_new
#cgo noescape ps_free
#cgo nocallback ps_free
#cgo noescape ps_add
#cgo nocallback ps_add
#cgo noescape ps_buffer
#cgo nocallback ps_buffer
#cgo noescape pg_set_snap
#cgo nocallback pg_set_snap
#cgo noescape ps_set_mode
#cgo nocallback ps_set_mode
#cgo noescape ps_protect
#cgo nocallback ps_protect
#cgo noescape ps_protect_dirty
#cgo nocallback ps_protect_dirty
#cgo noescape ps_dirty_count
#cgo nocallback ps_dirty_count
#cgo noescape ps_begin_save
#cgo nocallback ps_begin_save
#cgo noescape ps_instant
#cgo nocallback ps_instant
#cgo noescape ps_save_step
#cgo nocallback ps_save_step
#cgo noescape ps_take
#cgo nocallback ps_take
#cgo noescape ps_release
#cgo nocallback ps_release
#cgo noescape ps_drain_fd
#cgo nocallback ps_drain_fd
#cgo noescape ps_drain_stop
#cgo nocallback ps_drain_stop
#cgo noescape ps_error
#cgo nocallback ps_error
#cgo noescape ps_clear_err
#cgo nocallback ps_clear_err
#cgo noescape ps_pending
#cgo nocallback ps_pending
#cgo noescape ps_layer_bits
#cgo nocallback ps_layer_bits
#cgo noescape ps_finish
#cgo nocallback ps_finish
#cgo noescape ps_abort
#cgo nocallback ps_abort
#cgo noescape ps_unprotect_all
#cgo nocallback ps_unprotect_all
#cgo noescape ps_counters_read
#cgo nocallback ps_counters_read
#include "engine.h"
#include "snap.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
)

// Protector answers the write-protect faults of a Pager's userfaultfd in
// the engine, for live snapshots and dirty tracking (package snapshot
// builds on it): faults are tracked (unprotected at once and marked
// dirty), held, or answered by copy-before-write into a bounded buffer of
// C memory, from which the copies are written out, by a thread of the
// protector's own to a file or by Go. All of it runs in C, on the engine's
// reader threads and in cgo calls: no page is claimed while Go code runs,
// so that a goroutine writer that faults inside runtime assembly while the
// world is stopped is still answered.
//
// The Pager's Serve must run for faults to be answered. The ranges must be
// registered in uffd.ModeWriteProtect on the Pager's userfaultfd.
type Protector struct {
	p      *Pager
	c      *C.pg_snap
	fd     int
	nf     *os.File
	buf    unsafe.Pointer // the slots (C memory)
	unit   int
	ranges []ProtectRange

	mu     sync.Mutex
	closed bool
	file   *os.File // the drain thread's destination
}

// ProtectRange is a range of registered memory a Protector saves, and
// where its bytes go in the image.
type ProtectRange struct {
	Start, Len uintptr
	// PageSize is the range's page size (0: the base page size).
	PageSize int
	// Offset is the image offset of Start.
	Offset int64
}

// ProtectorConfig holds a Protector's options.
type ProtectorConfig struct {
	Ranges []ProtectRange
	// Buffer bounds the bytes of pages copied and not yet written out
	// (default DefaultProtectBuffer). A full buffer makes faults wait.
	Buffer int
	// Block is the most bytes a fault saves around its page, within the
	// aligned block that holds it (default DefaultProtectBlock; at least
	// one page).
	Block int
	// Pid is the process whose memory the ranges are, when it is not this
	// one: pages are read with process_vm_readv.
	Pid int
}

// Defaults of ProtectorConfig.
const (
	DefaultProtectBuffer = 64 << 20
	DefaultProtectBlock  = 64 << 10
)

// ProtectMode is what a write-protect fault gets.
type ProtectMode int

// Modes.
const (
	ProtectOff   ProtectMode = C.PS_OFF   // unprotected at once
	ProtectTrack ProtectMode = C.PS_TRACK // marked dirty, unprotected at once
	ProtectHold  ProtectMode = C.PS_HOLD  // kept waiting
	ProtectSave  ProtectMode = C.PS_SAVE  // saved first if still to save
)

// SavedRun is a run of pages copied into the buffer, waiting to be
// written out: Data (a view of the buffer, valid until Release) goes at
// image offset Off.
type SavedRun struct {
	Addr  uintptr
	Off   int64
	Data  []byte
	Fault bool // saved by a fault (copy-before-write)
	slot  int64
}

// ProtectStats are a Protector's counters: totals, but for SlotsPeak,
// HoldMax and ParkMax, which are those of the last save (BeginSave).
type ProtectStats struct {
	WPFaults      uint64 // write-protect fault messages
	Tracked       uint64 // answered in ProtectTrack (marked dirty)
	Late          uint64 // in ProtectSave, on a page saved already
	Held          uint64 // kept in ProtectHold
	CowFaults     uint64 // faults that saved their block first
	CowPages      uint64 // pages those saved
	BgPages       uint64 // pages the background pass saved
	ZeroPages     uint64 // saved pages found all zero (not written out)
	Parked        uint64 // faults that waited for free slots
	Written       uint64 // bytes the drain thread wrote
	ProtectIoctls uint64 // UFFDIO_WRITEPROTECT calls
	SlotsPeak     uint64 // most bytes in the buffer at once
	HoldMax       time.Duration
	ParkMax       time.Duration
}

// Sub returns the counters counted since o was read (peaks as in s).
func (s ProtectStats) Sub(o ProtectStats) ProtectStats {
	d := s
	d.WPFaults -= o.WPFaults
	d.Tracked -= o.Tracked
	d.Late -= o.Late
	d.Held -= o.Held
	d.CowFaults -= o.CowFaults
	d.CowPages -= o.CowPages
	d.BgPages -= o.BgPages
	d.ZeroPages -= o.ZeroPages
	d.Parked -= o.Parked
	d.Written -= o.Written
	d.ProtectIoctls -= o.ProtectIoctls
	return d
}

// NewProtector attaches a Protector to p: from now on p's write-protect
// faults go to it. Close detaches it.
func (p *Pager) NewProtector(cfg ProtectorConfig) (*Protector, error) {
	if len(cfg.Ranges) == 0 {
		return nil, errors.New("pager: protector: no ranges")
	}
	if cfg.Buffer < 0 || cfg.Block < 0 || cfg.Pid < 0 {
		return nil, fmt.Errorf("pager: protector: negative Buffer %d, Block %d or Pid %d", cfg.Buffer, cfg.Block, cfg.Pid)
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultProtectBuffer
	}
	if cfg.Block == 0 {
		cfg.Block = DefaultProtectBlock
	}
	maxPage := basePageSize
	for i, r := range cfg.Ranges {
		ps := r.PageSize
		if ps == 0 {
			ps = basePageSize
			cfg.Ranges[i].PageSize = ps
		}
		switch {
		case ps < basePageSize || ps&(ps-1) != 0:
			return nil, fmt.Errorf("pager: protector: range %#x+%#x: page size %d is not a power of two of at least %d", r.Start, r.Len, ps, basePageSize)
		case r.Len == 0 || r.Start%uintptr(ps) != 0 || r.Len%uintptr(ps) != 0:
			return nil, fmt.Errorf("pager: protector: range %#x+%#x: not a non-empty range of whole %d-byte pages", r.Start, r.Len, ps)
		case r.Offset < 0:
			return nil, fmt.Errorf("pager: protector: range %#x+%#x: negative image offset %d", r.Start, r.Len, r.Offset)
		}
		maxPage = max(maxPage, ps)
	}
	if cfg.Buffer < 4*maxPage {
		return nil, fmt.Errorf("pager: protector: a buffer of %d bytes holds fewer than 4 pages of %d bytes", cfg.Buffer, maxPage)
	}
	fd, err := p.u.Dup()
	if err != nil {
		return nil, err
	}
	nfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, &uffd.OpError{Op: "eventfd", Err: err}
	}
	var errno C.int
	c := C.ps_new(C.int(fd), C.int(cfg.Pid), C.int(nfd), C.uint64_t(cfg.Buffer), C.uint64_t(cfg.Block), &errno)
	if c == nil {
		unix.Close(fd)
		unix.Close(nfd)
		return nil, &uffd.OpError{Op: "protector", Err: syscall.Errno(errno)}
	}
	w := &Protector{p: p, c: c, fd: fd, nf: os.NewFile(uintptr(nfd), "protector-events"), unit: basePageSize, ranges: cfg.Ranges}
	w.buf = unsafe.Pointer(C.ps_buffer(c))
	for _, r := range cfg.Ranges {
		if errno := C.ps_add(c, C.uint64_t(r.Start), C.uint64_t(r.Len), C.uint64_t(r.PageSize), C.uint64_t(r.Offset)); errno != 0 {
			w.free()
			return nil, &uffd.OpError{Op: "protector", Addr: r.Start, Len: r.Len, Err: syscall.Errno(errno)}
		}
	}
	C.pg_set_snap(p.sys.c, c)
	return w, nil
}

// Ranges returns the protector's ranges.
func (w *Protector) Ranges() []ProtectRange { return append([]ProtectRange(nil), w.ranges...) }

func (w *Protector) free() {
	C.ps_free(w.c)
	w.c = nil
	unix.Close(w.fd)
	w.nf.Close()
}

// Close detaches the protector, unprotecting everything and releasing
// every fault it kept. It is idempotent.
func (w *Protector) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	C.ps_abort(w.c)
	C.pg_set_snap(w.p.sys.c, nil)
	w.free()
	return nil
}

func (w *Protector) errno(op string, e C.int) error {
	if e == 0 {
		return nil
	}
	return &uffd.OpError{Op: op, Err: syscall.Errno(e)}
}

// SetMode sets what write-protect faults get; when it returns, no fault
// is being answered under the previous mode. track: faults answered in
// ProtectSave also mark their page dirty.
func (w *Protector) SetMode(m ProtectMode, track bool) { C.ps_set_mode(w.c, C.int(m), cbool(track)) }

// Protect write-protects [start, start+length) (on) or removes the
// protection, in one UFFDIO_WRITEPROTECT.
func (w *Protector) Protect(start, length uintptr, on bool) error {
	if e := C.ps_protect(w.c, C.uint64_t(start), C.uint64_t(length), cbool(on)); e != 0 {
		return &uffd.OpError{Op: "UFFDIO_WRITEPROTECT", Addr: start, Len: length, Err: syscall.Errno(e)}
	}
	return nil
}

// ProtectDirty write-protects again the pages marked dirty since the last
// call, one ioctl per run, and adds them to the set written since the
// last snapshot. It returns the pages and runs protected.
func (w *Protector) ProtectDirty() (pages, runs int, err error) {
	var p, r C.int64_t
	e := C.ps_protect_dirty(w.c, &p, &r)
	return int(p), int(r), w.errno("UFFDIO_WRITEPROTECT", e)
}

// DirtyPages counts the pages marked dirty now.
func (w *Protector) DirtyPages() int { return int(C.ps_dirty_count(w.c)) }

// BeginSave starts the save of the instant just taken: every page (full)
// or those written since the last snapshot; the mode becomes ProtectSave
// and held faults are answered.
func (w *Protector) BeginSave(full bool) {
	C.ps_clear_err(w.c)
	C.ps_begin_save(w.c, cbool(full))
}

// Instant takes the instant in one call into C: ProtectHold, the last
// ProtectDirty, BeginSave. It returns the pages protected then, and how
// long new faults were held before every page was protected (the pause).
func (w *Protector) Instant(full, track bool) (final int, pause time.Duration, err error) {
	var f C.int64_t
	var h, i C.uint64_t
	e := C.ps_instant(w.c, cbool(full), cbool(track), &f, &h, &i)
	return int(f), time.Duration(i - h), w.errno("UFFDIO_WRITEPROTECT", e)
}

// SaveStep saves the next run of at most maxPages pages in address order.
// With no free slots it waits up to wait for some and returns 0. done:
// nothing is left to save.
func (w *Protector) SaveStep(maxPages int, wait time.Duration) (n int, done bool, err error) {
	var d C.int
	r := C.ps_save_step(w.c, C.int64_t(maxPages), C.int(wait/time.Millisecond), &d)
	if r < 0 {
		return 0, false, &uffd.OpError{Op: "save", Err: syscall.Errno(-r)}
	}
	return int(r), d != 0, nil
}

// Take fills out with saved runs waiting to be written out, oldest first,
// and returns how many. Release each once written. A goroutine draining
// the buffer this way stops with the world at each garbage collection: a
// goroutine of this process that faults inside runtime assembly on a full
// buffer then hangs the collection. Drain with DrainTo when the writers
// may be goroutines of this process.
func (w *Protector) Take(out []SavedRun) int {
	var es [64]C.ps_entry
	want := min(len(out), len(es))
	if want == 0 {
		return 0
	}
	n := int(C.ps_take(w.c, &es[0], C.int(want)))
	for i, e := range es[:n] {
		out[i] = SavedRun{
			Addr:  uintptr(e.addr),
			Off:   int64(e.off),
			Data:  unsafe.Slice((*byte)(unsafe.Add(w.buf, uintptr(e.slot)*uintptr(w.unit))), int(e.len)),
			Fault: e.flags&C.PS_E_FAULT != 0,
			slot:  int64(e.slot),
		}
	}
	return n
}

// Release frees the slots of a run taken with Take.
func (w *Protector) Release(r SavedRun) {
	C.ps_release(w.c, C.int64_t(r.slot), C.uint64_t(len(r.Data)))
}

// Wait waits until runs may be waiting to be taken, an error was
// recorded, or d passed.
func (w *Protector) Wait(ctx context.Context, d time.Duration) {
	if ctx.Err() != nil {
		return
	}
	w.nf.SetReadDeadline(time.Now().Add(d))
	var b [8]byte
	w.nf.Read(b[:])
}

// DrainTo starts a thread of the protector's own that writes saved runs
// to f at their image offsets (pwrite), with no Go code in the loop. Stop
// it with DrainWait. direct: write with O_DIRECT where f's file system
// has it (f's flags are restored after), so that the kernel's throttling
// of buffered writes (sleeps of up to 200 ms) does not stall the faults
// waiting for free slots.
func (w *Protector) DrainTo(f *os.File, direct bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.file != nil {
		return errors.New("pager: protector: already draining")
	}
	if e := C.ps_drain_fd(w.c, C.int(f.Fd()), cbool(direct)); e != 0 {
		return &uffd.OpError{Op: "drain", Err: syscall.Errno(e)}
	}
	w.file = f
	return nil
}

// DrainWait waits until the drain thread wrote every run queued, stops it
// and returns the first error of the snapshot (copying or writing).
func (w *Protector) DrainWait() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := C.ps_drain_stop(w.c)
	w.file = nil
	return w.errno("save", e)
}

// Err returns the first error recorded since BeginSave: a page that could
// not be read, an ioctl that failed, or a write of the drain thread.
func (w *Protector) Err() error { return w.errno("save", C.ps_error(w.c)) }

// Pending counts the pages still to save plus the runs not yet written
// by the drain thread (0: the save is complete).
func (w *Protector) Pending() int { return int(C.ps_pending(w.c)) }

// Layer returns, for range i, a bit per page (of its page size) set for
// the pages the current save covers.
func (w *Protector) Layer(i int) []uint64 {
	r := w.ranges[i]
	pages := int(r.Len) / r.PageSize
	out := make([]uint64, (pages+63)/64)
	if len(out) > 0 {
		C.ps_layer_bits(w.c, C.int(i), (*C.uint64_t)(unsafe.Pointer(&out[0])), C.int64_t(len(out)))
	}
	return out
}

// Finish ends a completed save: track keeps the pages written since its
// instant marked (the others stay protected) for an incremental save; else
// everything is unprotected.
func (w *Protector) Finish(track bool) error {
	return w.errno("UFFDIO_WRITEPROTECT", C.ps_finish(w.c, cbool(track)))
}

// Abort gives up the save in progress: nothing stays protected, every
// fault kept is released, runs not written are dropped, and tracking
// starts over (the next save must be full).
func (w *Protector) Abort() { C.ps_abort(w.c) }

// UnprotectAll removes the protection from every range.
func (w *Protector) UnprotectAll() error {
	return w.errno("UFFDIO_WRITEPROTECT", C.ps_unprotect_all(w.c))
}

// Stats returns the counters.
func (w *Protector) Stats() ProtectStats {
	var c C.ps_counters
	C.ps_counters_read(w.c, &c)
	return ProtectStats{
		WPFaults: uint64(c.wp_faults), Tracked: uint64(c.tracked), Late: uint64(c.late), Held: uint64(c.held),
		CowFaults: uint64(c.cow_faults), CowPages: uint64(c.cow_pages), BgPages: uint64(c.bg_pages),
		ZeroPages: uint64(c.zero_pages), Parked: uint64(c.parked), Written: uint64(c.written),
		ProtectIoctls: uint64(c.protect_ioctls), SlotsPeak: uint64(c.slots_peak) * uint64(w.unit),
		HoldMax: time.Duration(c.hold_ns_max), ParkMax: time.Duration(c.park_ns_max),
	}
}
