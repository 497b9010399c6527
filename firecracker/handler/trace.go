package handler

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"

	"github.com/gouffd/uffd/pager"
)

// A Trace is the order in which a restored VM first touched the pages of a
// snapshot, as offsets into the memory file: addresses change from one
// restore to the next, file offsets do not. Replaying it prefetches those
// pages in that order on the next restore of the same snapshot.
//
// A trace only ever decides the order of resolves: every page still comes
// from the memory file at its own offset. A stale or damaged trace can cost
// time, never correctness; offsets outside the VM's regions are skipped.
//
// File format (little-endian): the 8-byte magic "UFFDTRC1", the memory
// file's size (uint64), its fingerprint (uint64, see Fingerprint), the
// number of entries (uint64), then one uint64 file offset per entry, and
// nothing after them.
type Trace struct {
	// Size and Fingerprint identify the memory file the trace was recorded
	// against.
	Size        int64
	Fingerprint uint64
	// Offsets are file offsets of pages in the order of first touch.
	Offsets []uint64
}

const (
	traceMagic  = "UFFDTRC1"
	traceHeader = 32
)

// MaxTraceEntries bounds a trace read (a 1 TiB guest in 4 KiB pages).
const MaxTraceEntries = 1 << 28

// ErrTraceMismatch means a trace was recorded against another memory file.
var ErrTraceMismatch = errors.New("trace recorded against another memory file")

// Fingerprint identifies the contents of a memory file cheaply: a hash of
// its size and of 64 blocks of 4 KiB spread evenly through it. It is meant
// to tell snapshots apart, not to resist forgery (a trace cannot make the
// handler serve wrong data; see Trace). A source with a Fingerprint method
// of its own (a remote image, which knows its version) is asked instead.
func Fingerprint(src pager.Source) (uint64, error) {
	if f, ok := src.(interface{ Fingerprint() (uint64, error) }); ok {
		return f.Fingerprint() // a remote image knows its version
	}
	size := src.Size()
	h := fnv.New64a()
	var sz [8]byte
	binary.LittleEndian.PutUint64(sz[:], uint64(size))
	h.Write(sz[:])
	const blocks, block = 64, 4096
	buf := make([]byte, block)
	read := func(off, n int64) error {
		if _, err := src.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+n == size) {
			return fmt.Errorf("handler: fingerprint: read %d bytes at %#x: %w", n, off, err)
		}
		h.Write(buf[:n])
		return nil
	}
	if size <= blocks*block {
		for off := int64(0); off < size; off += block {
			if err := read(off, min(block, size-off)); err != nil {
				return 0, err
			}
		}
		return h.Sum64(), nil
	}
	step := (size - block) / (blocks - 1)
	for i := range int64(blocks) {
		if err := read(i*step, block); err != nil {
			return 0, err
		}
	}
	return h.Sum64(), nil
}

// WriteTrace writes t to path atomically (a temporary file renamed over
// it), so that a reader never sees half a trace.
func WriteTrace(path string, t *Trace) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("handler: write trace: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	w := bufio.NewWriterSize(tmp, 256<<10)
	err = t.Encode(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("handler: write trace %s: %w", path, err)
	}
	return nil
}

// Encode writes t in the trace file format (see Trace; DecodeTrace reads it).
func (t *Trace) Encode(w io.Writer) error {
	var hdr [traceHeader]byte
	copy(hdr[:8], traceMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(t.Size))
	binary.LittleEndian.PutUint64(hdr[16:], t.Fingerprint)
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(t.Offsets)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	var b [8]byte
	for _, off := range t.Offsets {
		binary.LittleEndian.PutUint64(b[:], off)
		if _, err := w.Write(b[:]); err != nil {
			return err
		}
	}
	return nil
}

// ReadTrace reads a trace written by WriteTrace.
func ReadTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := DecodeTrace(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return t, nil
}

// DecodeTrace reads a trace in the file format from r, to its end: bytes
// after the entries the header announces are an error, as are fewer.
func DecodeTrace(r io.Reader) (*Trace, error) {
	var hdr [traceHeader]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("short header (%d bytes): %w", n, err)
	}
	if string(hdr[:8]) != traceMagic {
		return nil, fmt.Errorf("not a trace file (magic %q)", hdr[:8])
	}
	t := &Trace{
		Size:        int64(binary.LittleEndian.Uint64(hdr[8:])),
		Fingerprint: binary.LittleEndian.Uint64(hdr[16:]),
	}
	n := binary.LittleEndian.Uint64(hdr[24:])
	if n > MaxTraceEntries {
		return nil, fmt.Errorf("header announces %d entries, more than %d", n, MaxTraceEntries)
	}
	// Grow as entries arrive: a header cannot make us allocate what the
	// data does not hold.
	t.Offsets = make([]uint64, 0, min(n, 1<<16))
	var b [8 << 10]byte
	for left := n; left > 0; {
		chunk := b[:8*min(left, uint64(len(b)/8))]
		if m, err := io.ReadFull(r, chunk); err != nil {
			return nil, fmt.Errorf("header announces %d entries, the data ends after %d: %w", n, len(t.Offsets)+m/8, err)
		}
		for i := 0; i < len(chunk); i += 8 {
			t.Offsets = append(t.Offsets, binary.LittleEndian.Uint64(chunk[i:]))
		}
		left -= uint64(len(chunk) / 8)
	}
	var one [1]byte
	if m, _ := io.ReadFull(r, one[:]); m != 0 {
		return nil, fmt.Errorf("bytes after the %d entries the header announces", n)
	}
	return t, nil
}

// Matches reports whether t was recorded against a memory file of this
// size and fingerprint.
func (t *Trace) Matches(size int64, fingerprint uint64) error {
	if t.Size != size || t.Fingerprint != fingerprint {
		return fmt.Errorf("%w (trace: %d bytes, fingerprint %#x; memory file: %d bytes, fingerprint %#x)", ErrTraceMismatch, t.Size, t.Fingerprint, size, fingerprint)
	}
	return nil
}
