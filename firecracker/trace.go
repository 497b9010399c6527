//go:build linux

package firecracker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
)

// A trace is the order in which a restored VM first touched the pages of a
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
// number of entries (uint64), then one uint64 file offset per entry.
type Trace struct {
	// Size and Fingerprint identify the memory file the trace was recorded
	// against.
	Size        int64
	Fingerprint uint64
	// Offsets are file offsets of pages in the order of first touch.
	Offsets []uint64
}

const traceMagic = "UFFDTRC1"

// maxTraceEntries bounds a trace read from disk (a 1 TiB guest in 4 KiB
// pages).
const maxTraceEntries = 1 << 28

// ErrTraceMismatch means a trace was recorded against another memory file.
var ErrTraceMismatch = errors.New("trace recorded against another memory file")

// Fingerprint identifies the contents of a memory file cheaply: a hash of
// its size and of 64 blocks of 4 KiB spread evenly through it. It is meant
// to tell snapshots apart, not to resist forgery (a trace cannot make the
// handler serve wrong data; see Trace).
func Fingerprint(data []byte) uint64 {
	h := fnv.New64a()
	var sz [8]byte
	binary.LittleEndian.PutUint64(sz[:], uint64(len(data)))
	h.Write(sz[:])
	const blocks, block = 64, 4096
	if len(data) <= blocks*block {
		h.Write(data)
		return h.Sum64()
	}
	step := (len(data) - block) / (blocks - 1)
	for i := range blocks {
		off := i * step
		h.Write(data[off : off+block])
	}
	return h.Sum64()
}

// WriteTrace writes t to path atomically (a temporary file renamed over
// it), so that a reader never sees half a trace.
func WriteTrace(path string, t *Trace) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	w := bufio.NewWriterSize(tmp, 256<<10)
	var hdr [32]byte
	copy(hdr[:8], traceMagic)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(t.Size))
	binary.LittleEndian.PutUint64(hdr[16:], t.Fingerprint)
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(t.Offsets)))
	w.Write(hdr[:])
	var b [8]byte
	for _, off := range t.Offsets {
		binary.LittleEndian.PutUint64(b[:], off)
		w.Write(b[:])
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadTrace reads a trace written by WriteTrace.
func ReadTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	r := bufio.NewReaderSize(f, 256<<10)
	var hdr [32]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("trace %s: short header: %w", path, err)
	}
	if string(hdr[:8]) != traceMagic {
		return nil, fmt.Errorf("trace %s: not a trace file (magic %q)", path, hdr[:8])
	}
	t := &Trace{
		Size:        int64(binary.LittleEndian.Uint64(hdr[8:])),
		Fingerprint: binary.LittleEndian.Uint64(hdr[16:]),
	}
	n := binary.LittleEndian.Uint64(hdr[24:])
	if n > maxTraceEntries || int64(n)*8 != st.Size()-32 {
		return nil, fmt.Errorf("trace %s: header says %d entries, the file holds %d bytes after it", path, n, st.Size()-32)
	}
	t.Offsets = make([]uint64, n)
	var b [8]byte
	for i := range t.Offsets {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("trace %s: entry %d: %w", path, i, err)
		}
		t.Offsets[i] = binary.LittleEndian.Uint64(b[:])
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
