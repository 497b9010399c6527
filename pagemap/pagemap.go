package pagemap

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/abi"
)

// ErrClosed is returned by a scan on a closed Pagemap.
var ErrClosed = os.ErrClosed

var pageSize = uintptr(os.Getpagesize())

// Pagemap is an open /proc/PID/pagemap file, scanned with PAGEMAP_SCAN.
// Its methods are safe for concurrent use.
type Pagemap struct {
	f    *os.File
	fd   int // f's descriptor, valid while mu is read-held and closed is false
	path string

	// mu is held for reading around every ioctl and for writing by Close,
	// so that a closed (and perhaps reused) descriptor number is never used.
	mu     sync.RWMutex
	closed atomic.Bool
}

// OpenSelf opens this process's pagemap.
func OpenSelf() (*Pagemap, error) { return open("/proc/self/pagemap") }

// Open opens the pagemap of process pid, which needs the right to read its
// memory (the same user, or CAP_SYS_PTRACE). The file stays bound to the
// address space pid had when it was opened, even if pid later execs.
func Open(pid int) (*Pagemap, error) {
	return open("/proc/" + strconv.Itoa(pid) + "/pagemap")
}

// open opens path and checks, with a scan of an empty range, that the
// kernel has PAGEMAP_SCAN, so that a kernel without it fails here.
func open(path string) (*Pagemap, error) {
	if runtime.GOOS != "linux" {
		return nil, &uffd.NotSupportedError{What: "PAGEMAP_SCAN", OS: runtime.GOOS}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	p := &Pagemap{f: f, fd: int(f.Fd()), path: path}
	arg := abi.PMScanArg{Size: uint64(unsafe.Sizeof(abi.PMScanArg{}))}
	if _, errno := p.ioctl(&arg); errno != 0 {
		f.Close()
		return nil, scanError(0, 0, nil, errno)
	}
	return p, nil
}

// Close closes the file. It waits for scans in progress and is idempotent.
func (p *Pagemap) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.f.Close()
}

func (p *Pagemap) String() string { return "pagemap(" + p.path + ")" }

// ScanOptions select the pages a scan reports and what it does to them.
// The zero value (or a nil *ScanOptions) reports every page of the range,
// with its BaseCategories.
//
// A page matches when, after its categories in Inverted are flipped, it has
// every category of Mask and, if AnyOf is not zero, at least one of AnyOf.
type ScanOptions struct {
	// Mask lists categories a page must all have (category_mask).
	Mask Category
	// AnyOf lists categories of which a page must have at least one
	// (category_anyof_mask).
	AnyOf Category
	// Inverted lists categories that match when absent
	// (category_inverted): Mask: Written with Inverted: Written selects
	// the pages not written.
	Inverted Category
	// Return lists the categories reported in Region.Categories
	// (return_mask); adjacent matching pages merge into one Region when
	// these agree. Zero means BaseCategories.
	Return Category
	// MaxPages stops the scan once this many pages matched (max_pages);
	// zero means no limit. It counts base pages.
	MaxPages uint64
	// WPMatching write-protects the matching pages as it reports them
	// (PM_SCAN_WP_MATCHING), atomically: it resets their Written state for
	// the next scan. Only ranges registered for asynchronous
	// write-protection are matched; others are skipped.
	WPMatching bool
	// CheckWPAsync fails the scan with EPERM when the range holds memory not
	// registered for asynchronous write-protection (PM_SCAN_CHECK_WPASYNC),
	// instead of skipping it (WPMatching) or reporting it without WPAllowed.
	CheckWPAsync bool
}

func (o *ScanOptions) arg(start, end uintptr) abi.PMScanArg {
	a := abi.PMScanArg{
		Size:       uint64(unsafe.Sizeof(abi.PMScanArg{})),
		Start:      uint64(start),
		End:        uint64(end),
		ReturnMask: uint64(BaseCategories),
	}
	if o == nil {
		return a
	}
	a.CategoryMask = uint64(o.Mask)
	a.CategoryAnyofMask = uint64(o.AnyOf)
	a.CategoryInverted = uint64(o.Inverted)
	if o.Return != 0 {
		a.ReturnMask = uint64(o.Return)
	}
	a.MaxPages = o.MaxPages
	if o.WPMatching {
		a.Flags |= abi.PMScanWPMatching
	}
	if o.CheckWPAsync {
		a.Flags |= abi.PMScanCheckWPAsync
	}
	return a
}

// check validates a scan before it reaches the kernel, and rounds end up
// to a page as the kernel does.
func check(start, end uintptr, o *ScanOptions) (uintptr, error) {
	var why string
	switch {
	case start%pageSize != 0:
		why = fmt.Sprintf("start %#x is not aligned to the %d-byte page size", start, pageSize)
	case end < start:
		why = fmt.Sprintf("end %#x is below start %#x", end, start)
	case end > ^uintptr(0)-pageSize+1:
		why = fmt.Sprintf("end %#x is past the last page", end)
	case o != nil && (o.Mask|o.AnyOf|o.Inverted|o.Return)&^AllCategories != 0:
		why = fmt.Sprintf("unknown categories %v", (o.Mask|o.AnyOf|o.Inverted|o.Return)&^AllCategories)
	default:
		return (end + pageSize - 1) &^ (pageSize - 1), nil
	}
	return 0, &uffd.OpError{Op: "PAGEMAP_SCAN", Addr: start, Len: end - start, Err: fmt.Errorf("%w: %s", syscall.EINVAL, why)}
}

// ioctl runs PAGEMAP_SCAN. It allocates nothing.
func (p *Pagemap) ioctl(arg *abi.PMScanArg) (int, syscall.Errno) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed.Load() {
		return 0, syscall.EBADF
	}
	return abi.IoctlRet(p.fd, abi.PAGEMAP_SCAN, unsafe.Pointer(arg))
}

// regionsShareLayout is true where Region has struct page_region's layout
// (64-bit architectures), so that the kernel can write into a []Region.
const regionsShareLayout = unsafe.Sizeof(Region{}) == unsafe.Sizeof(abi.PageRegion{}) &&
	unsafe.Offsetof(Region{}.Start) == unsafe.Offsetof(abi.PageRegion{}.Start) &&
	unsafe.Offsetof(Region{}.End) == unsafe.Offsetof(abi.PageRegion{}.End) &&
	unsafe.Offsetof(Region{}.Categories) == unsafe.Offsetof(abi.PageRegion{}.Categories) &&
	unsafe.Sizeof(Region{}.Start) == unsafe.Sizeof(abi.PageRegion{}.Start)

// copyRegions makes ScanInto go through a bounce buffer even where the
// layouts agree (for tests of the 32-bit path).
var copyRegions = !regionsShareLayout

// ScanInto scans [start, end) and writes the matching regions into
// regions, returning how many it wrote and where the scan stopped. It
// allocates nothing; the kernel writes to regions by address, so the
// compiler keeps a caller's buffer on the heap (see abi.Escape).
//
// start must be page-aligned; end is rounded up to a page. The scan stops
// early, returning next < end, when regions is full or MaxPages pages
// matched; continue from next (with MaxPages lowered by what was found).
// A region cut by such a stop continues in the next call's first region.
//
// With an empty regions slice the whole range is walked and nothing
// reported, which with WPMatching just resets the Written state.
func (p *Pagemap) ScanInto(regions []Region, start, end uintptr, opts *ScanOptions) (n int, next uintptr, err error) {
	end, err = check(start, end, opts)
	if err != nil {
		return 0, start, err
	}
	arg := opts.arg(start, end)
	if len(regions) > 0 && copyRegions {
		return p.scanCopy(regions, &arg, opts)
	}
	if len(regions) > 0 {
		abi.Escape(unsafe.Pointer(unsafe.SliceData(regions)))
		arg.Vec = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(regions))))
		arg.VecLen = uint64(len(regions))
	}
	n, errno := p.ioctl(&arg)
	runtime.KeepAlive(regions)
	if errno != 0 {
		return 0, start, scanError(start, end, opts, errno)
	}
	return n, uintptr(arg.WalkEnd), nil
}

// bouncePool holds scanCopy's buffers: on the heap, where the kernel may
// write to them by address (see abi.Escape), and reused.
var bouncePool = sync.Pool{New: func() any { return new([16]abi.PageRegion) }}

// scanCopy is ScanInto through a small bounce buffer of struct
// page_region, for architectures where Region's layout differs. It
// repeats the scan until regions is full, the range is done or MaxPages
// is reached, merging regions cut at the bounce buffer's boundaries.
func (p *Pagemap) scanCopy(regions []Region, arg *abi.PMScanArg, opts *ScanOptions) (int, uintptr, error) {
	bounce := bouncePool.Get().(*[16]abi.PageRegion)
	defer bouncePool.Put(bounce)
	start, end := uintptr(arg.Start), uintptr(arg.End)
	limited, left := arg.MaxPages != 0, arg.MaxPages
	n := 0
	for {
		arg.Vec = uint64(uintptr(unsafe.Pointer(&bounce[0])))
		arg.VecLen = uint64(min(len(bounce), len(regions)-n))
		arg.MaxPages = left
		got, errno := p.ioctl(arg)
		if errno != 0 {
			return n, uintptr(arg.Start), scanError(start, end, opts, errno)
		}
		for _, pr := range bounce[:got] {
			r := Region{Start: uintptr(pr.Start), End: uintptr(pr.End), Categories: Category(pr.Categories)}
			if limited {
				left -= min(left, uint64(r.Len()/pageSize))
			}
			if n > 0 && regions[n-1].End == r.Start && regions[n-1].Categories == r.Categories {
				regions[n-1].End = r.End
				continue
			}
			regions[n] = r
			n++
		}
		if arg.WalkEnd <= arg.Start {
			return n, uintptr(arg.WalkEnd), &uffd.OpError{Op: "PAGEMAP_SCAN", Addr: start, Len: end - start,
				Err: fmt.Errorf("the kernel made no progress (stopped at %#x)", arg.WalkEnd)}
		}
		arg.Start = arg.WalkEnd
		if arg.WalkEnd >= arg.End || n == len(regions) || (limited && left == 0) {
			return n, uintptr(arg.WalkEnd), nil
		}
	}
}

// Scan scans [start, end) and returns every matching region, resuming
// the kernel's scan as often as needed and merging regions cut at the
// resumptions. next is end, unless MaxPages stopped the scan first; then
// it is where to continue.
//
// start must be page-aligned; end is rounded up to a page.
func (p *Pagemap) Scan(start, end uintptr, opts *ScanOptions) (regions []Region, next uintptr, err error) {
	end, err = check(start, end, opts)
	if err != nil {
		return nil, start, err
	}
	var o ScanOptions
	if opts != nil {
		o = *opts
	}
	buf := make([]Region, 64)
	for start < end {
		n, walkEnd, err := p.ScanInto(buf, start, end, &o)
		for _, r := range buf[:n] {
			if k := len(regions); k > 0 && regions[k-1].End == r.Start && regions[k-1].Categories == r.Categories {
				regions[k-1].End = r.End
			} else {
				regions = append(regions, r)
			}
			if o.MaxPages != 0 {
				o.MaxPages -= min(o.MaxPages, uint64(r.Len()/pageSize))
				if o.MaxPages == 0 {
					return regions, walkEnd, nil
				}
			}
		}
		if err != nil {
			return regions, walkEnd, err
		}
		if walkEnd <= start {
			return regions, walkEnd, &uffd.OpError{Op: "PAGEMAP_SCAN", Addr: start, Len: end - start,
				Err: fmt.Errorf("the kernel made no progress (stopped at %#x)", walkEnd)}
		}
		start = walkEnd
		if n == len(buf) && len(buf) < 4096 {
			buf = make([]Region, 2*len(buf))
		}
	}
	return regions, end, nil
}

// scanError explains a failed PAGEMAP_SCAN.
func scanError(start, end uintptr, o *ScanOptions, errno syscall.Errno) error {
	var err error = errno
	switch errno {
	case syscall.ENOTTY:
		err = &uffd.NotSupportedError{What: "PAGEMAP_SCAN (Linux 6.7)"}
	case syscall.EPERM:
		if o != nil && o.CheckWPAsync {
			err = fmt.Errorf("%w: the range holds memory not registered for asynchronous write-protection (uffd.FeatureWPAsync and uffd.ModeWriteProtect)", errno)
		}
	case syscall.EINVAL:
		if o != nil && (o.Mask|o.AnyOf|o.Inverted|o.Return)&Guard != 0 {
			err = fmt.Errorf("%w (category Guard needs Linux 6.15)", errno)
		}
	case syscall.EBADF:
		err = ErrClosed
	}
	return &uffd.OpError{Op: "PAGEMAP_SCAN", Addr: start, Len: end - start, Err: err}
}
