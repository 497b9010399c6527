package snapshot

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
)

// The image format. A layer is one file:
//
//	[0, Size)             the memory's bytes at their image offsets; pages
//	                      not in the layer, and zero pages, are holes
//	[IndexOff, +Words*8)  a bit per 4 KiB unit of the image: set for the
//	                      units this layer holds (zero or not)
//	the last 96 bytes     the footer (little-endian)
//
// A full layer holds every unit; a diff holds the units written since its
// parent's instant. The data part starts at offset 0, so a full layer is
// served as it is (pager.OpenFile, Offset 0).

// Unit is the granularity of a layer's index.
const Unit = 4096

const (
	footerSize = 96
	magic      = "UFFDSNAP"
	version    = 1
	flagFull   = 1
)

// ID names a layer; a diff names its parent's.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID (no parent).
func (id ID) IsZero() bool { return id == ID{} }

func newID() ID {
	var id ID
	rand.Read(id[:])
	return id
}

// Header describes a layer.
type Header struct {
	Full   bool
	Size   int64 // bytes of the image
	Units  int64 // units (4 KiB) this layer holds
	ID     ID
	Parent ID // zero for a full layer
}

func indexOff(size int64) int64 { return (size + Unit - 1) / Unit * Unit }

func words(size int64) int64 { return ((size+Unit-1)/Unit + 63) / 64 }

func (h *Header) marshal() []byte {
	b := make([]byte, footerSize)
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[8:], version)
	var fl uint32
	if h.Full {
		fl |= flagFull
	}
	binary.LittleEndian.PutUint32(b[12:], fl)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.Size))
	binary.LittleEndian.PutUint64(b[24:], uint64(indexOff(h.Size)))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.Units))
	copy(b[40:], h.ID[:])
	copy(b[56:], h.Parent[:])
	return b
}

func unmarshalHeader(b []byte, fileSize int64) (*Header, error) {
	if len(b) != footerSize || string(b[:8]) != magic {
		return nil, errors.New("not a snapshot layer (no footer)")
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != version {
		return nil, fmt.Errorf("layer format version %d, want %d", v, version)
	}
	h := &Header{
		Full:  binary.LittleEndian.Uint32(b[12:])&flagFull != 0,
		Size:  int64(binary.LittleEndian.Uint64(b[16:])),
		Units: int64(binary.LittleEndian.Uint64(b[32:])),
	}
	copy(h.ID[:], b[40:])
	copy(h.Parent[:], b[56:])
	off := int64(binary.LittleEndian.Uint64(b[24:]))
	if h.Size <= 0 || off != indexOff(h.Size) || off+words(h.Size)*8+footerSize != fileSize {
		return nil, fmt.Errorf("layer of %d bytes does not match its file of %d bytes", h.Size, fileSize)
	}
	return h, nil
}

// Layer is an open layer file.
type Layer struct {
	Header
	Path  string
	f     *os.File
	index []uint64 // a bit per unit
}

// OpenLayer opens the layer at path and reads its index.
func OpenLayer(path string) (*Layer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	l, err := readLayer(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot: %s: %w", path, err)
	}
	l.Path = path
	return l, nil
}

func readLayer(f *os.File) (*Layer, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() < footerSize {
		return nil, errors.New("not a snapshot layer (too short)")
	}
	foot := make([]byte, footerSize)
	if _, err := f.ReadAt(foot, st.Size()-footerSize); err != nil {
		return nil, err
	}
	h, err := unmarshalHeader(foot, st.Size())
	if err != nil {
		return nil, err
	}
	raw := make([]byte, words(h.Size)*8)
	if _, err := f.ReadAt(raw, indexOff(h.Size)); err != nil {
		return nil, fmt.Errorf("reading the index: %w", err)
	}
	idx := make([]uint64, len(raw)/8)
	var n int64
	for i := range idx {
		idx[i] = binary.LittleEndian.Uint64(raw[8*i:])
		n += int64(bits.OnesCount64(idx[i]))
	}
	if n != h.Units {
		return nil, fmt.Errorf("index has %d units, footer says %d", n, h.Units)
	}
	return &Layer{Header: *h, f: f, index: idx}, nil
}

// Has reports whether the layer holds the unit at image offset off.
func (l *Layer) Has(off int64) bool {
	u := off / Unit
	return l.index[u/64]>>(u%64)&1 != 0
}

// Runs calls fn for each run of units the layer holds, as byte ranges
// [off, off+n) of the image, in order.
func (l *Layer) Runs(fn func(off, n int64) error) error {
	total := (l.Size + Unit - 1) / Unit
	for u := int64(0); u < total; {
		w := l.index[u/64] >> (u % 64)
		if w&1 == 0 {
			if w == 0 {
				u += 64 - u%64
			} else {
				u += int64(bits.TrailingZeros64(w))
			}
			continue
		}
		e := u
		for e < total && l.index[e/64]>>(e%64)&1 != 0 {
			e++
		}
		n := min(e*Unit, l.Size) - u*Unit
		if err := fn(u*Unit, n); err != nil {
			return err
		}
		u = e
	}
	return nil
}

// File returns the layer's open file.
func (l *Layer) File() *os.File { return l.f }

// Close closes the layer's file.
func (l *Layer) Close() error { return l.f.Close() }

// writeIndex writes a layer's index and footer after its data.
func writeIndex(w io.WriterAt, h *Header, index []uint64) error {
	raw := make([]byte, len(index)*8)
	for i, v := range index {
		binary.LittleEndian.PutUint64(raw[8*i:], v)
	}
	off := indexOff(h.Size)
	if _, err := w.WriteAt(raw, off); err != nil {
		return fmt.Errorf("snapshot: writing the layer index: %w", err)
	}
	if _, err := w.WriteAt(h.marshal(), off+int64(len(raw))); err != nil {
		return fmt.Errorf("snapshot: writing the layer footer: %w", err)
	}
	return nil
}
