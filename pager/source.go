package pager

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// Source supplies the contents of pages.
//
// ReadAt fills p (a whole number of the region's pages) with the bytes at
// off, as io.ReaderAt does: an error is returned when fewer than len(p)
// bytes were read, and the pager retries it (Config.Retry) before applying
// the region's OnError policy. It is called from the fault path, by several
// goroutines at once.
type Source interface {
	io.ReaderAt
	// Size is the source's length in bytes: regions must lie within it.
	Size() int64
}

// Mapped is a Source whose contents are in memory: the pager copies pages
// into the faulting process straight from Bytes, with no intermediate copy
// and no call to ReadAt. Image and File are Mapped.
type Mapped interface {
	Source
	Bytes() []byte
}

// zeroSource is the Source of Zero. The pager resolves its pages with
// UFFDIO_ZEROPAGE (or a copy from a zero page on hugetlbfs).
type zeroSource struct{ size int64 }

// Zero returns a source of size zero bytes. Its faults are resolved
// without copying (UFFDIO_ZEROPAGE) where the memory allows.
func Zero(size int64) Source { return zeroSource{size} }

func (z zeroSource) Size() int64 { return z.size }

func (z zeroSource) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= z.size {
		return 0, io.EOF
	}
	n := len(p)
	if rest := z.size - off; int64(n) > rest {
		n = int(rest)
	}
	clear(p[:n])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func isZero(s Source) bool { _, ok := s.(zeroSource); return ok }

// image is the Source of Image.
type image []byte

// Image returns a source of the bytes of b, which must not change while
// pages are served from it.
func Image(b []byte) Mapped { return image(b) }

func (b image) Size() int64   { return int64(len(b)) }
func (b image) Bytes() []byte { return b }

func (b image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// File is a Source backed by a file mapped once, read-only: faults are
// served straight from the mapping (the page cache), with no read(2) and
// no intermediate copy.
type File struct {
	name string
	data []byte
	once sync.Once
	err  error
}

// OpenFile maps the file at path.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pager: %w", err)
	}
	defer f.Close()
	return MapFile(f)
}

// MapFile maps f, which the caller may close afterwards. An empty file is
// an error: there is nothing to serve from it.
func MapFile(f *os.File) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pager: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("pager: %s is not a regular file", f.Name())
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("pager: %s is empty", f.Name())
	}
	if st.Size() != int64(int(st.Size())) {
		return nil, fmt.Errorf("pager: %s: %d bytes do not fit in the address space", f.Name(), st.Size())
	}
	data, err := mapFile(f, int(st.Size()))
	if err != nil {
		return nil, fmt.Errorf("pager: %w", &os.PathError{Op: "mmap", Path: f.Name(), Err: err})
	}
	return &File{name: f.Name(), data: data}, nil
}

// Name returns the file's name.
func (f *File) Name() string { return f.name }

// Size returns the file's length.
func (f *File) Size() int64 { return int64(len(f.data)) }

// Bytes returns the mapping. It is valid until Close.
func (f *File) Bytes() []byte { return f.data }

// ReadAt copies from the mapping.
func (f *File) ReadAt(p []byte, off int64) (int, error) { return image(f.data).ReadAt(p, off) }

// Close unmaps the file. Stop serving from it first.
func (f *File) Close() error {
	f.once.Do(func() {
		if f.data != nil {
			f.err = unmapFile(f.data)
		}
	})
	return f.err
}

// funcSource is the Source of Func.
type funcSource struct {
	size int64
	fn   func(p []byte, off int64) error
}

// Func returns a source of size bytes whose pages fn fills: fn must fill
// all of p with the contents at off, or return an error (which the pager
// retries).
func Func(size int64, fn func(p []byte, off int64) error) Source {
	return funcSource{size, fn}
}

func (s funcSource) Size() int64 { return s.size }

func (s funcSource) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > s.size {
		return 0, io.EOF
	}
	if err := s.fn(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Fetcher is a Source whose bytes arrive over time into memory: a remote
// image fetched into a cache file that is mapped, for instance. The
// engine's fault path copies straight from that memory, without calling
// Go, once a page's bytes are there, and asks Fetch for the pages that are
// not.
type Fetcher interface {
	Source
	// State returns the memory and the bits the engine reads. They must
	// stay valid (and at the same addresses) for as long as the source is
	// used.
	State() CacheState
	// Fetch asks for the bytes [off, off+n), page-aligned. It returns at
	// once; urgent requests (a thread waits) overtake the others. arrived
	// is called, from any goroutine, as sub-ranges become present (their
	// Present bits already set), so that a waiting page is installed as
	// soon as its own bytes are there, and with a non-nil error for a
	// range that cannot be had; the pager then retries per Config.Retry
	// and applies the region's ErrorPolicy.
	Fetch(off, n int64, urgent bool, arrived func(off, n int64, err error))
}

// CacheState is the memory of a Fetcher and the state the engine reads
// with atomic operations, shared with the code that fills it (possibly
// other processes, through shared mappings).
type CacheState struct {
	// Data holds the whole source.
	Data []byte
	// Present has one bit per 4 KiB page of Data (bit i%64 of word i/64),
	// set only once the page's bytes are in Data.
	Present []uint64
	// Zero, optional, has one bit per 4 KiB page known to be all zeroes:
	// such pages are never fetched and are installed with UFFDIO_ZEROPAGE.
	Zero []uint64
	// Pins has a count per chunk of 1<<ChunkShift bytes. The engine
	// increments a chunk's count, then checks Present, copies, and
	// decrements. To evict a chunk, clear its Present bits first, then
	// wait for its count to be zero before dropping its bytes.
	Pins       []int32
	ChunkShift uint
}

func (s *CacheState) validate(size int64) error {
	pages := (size + 4095) >> 12
	switch {
	case int64(len(s.Data)) < size:
		return fmt.Errorf("pager: cache: %d bytes of data for a source of %d", len(s.Data), size)
	case int64(len(s.Present))*64 < pages:
		return fmt.Errorf("pager: cache: %d presence words for %d pages", len(s.Present), pages)
	case s.Zero != nil && int64(len(s.Zero))*64 < pages:
		return fmt.Errorf("pager: cache: %d zero words for %d pages", len(s.Zero), pages)
	case s.ChunkShift < 12 || s.ChunkShift > 40:
		return fmt.Errorf("pager: cache: chunk shift %d: want 12..40", s.ChunkShift)
	case int64(len(s.Pins)) < (size+(1<<s.ChunkShift)-1)>>s.ChunkShift:
		return fmt.Errorf("pager: cache: %d pin counts for %d chunks", len(s.Pins), (size+(1<<s.ChunkShift)-1)>>s.ChunkShift)
	}
	return nil
}

// sourceKind names a source's kind, for logs.
func sourceKind(s Source) string {
	switch s.(type) {
	case nil:
		return "no source"
	case zeroSource:
		return "zeroes"
	case *File:
		return "file"
	case image:
		return "image"
	case Fetcher:
		return "fetched"
	case Mapped:
		return "mapped"
	}
	return "reader"
}
