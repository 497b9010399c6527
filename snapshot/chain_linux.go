package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Chain is a full layer and the diffs taken after it, oldest first, seen
// as one image: the newest layer holding a page wins. It is one mapping
// built from the layers' files (the base mapped whole, each diff's runs
// mapped over it with MAP_FIXED, in order), so that reading it copies
// nothing: it is a pager.Mapped, served straight from the page cache. Each
// run is a mapping of its own (vm.max_map_count bounds them, 65530 by
// default): compact long chains of scattered diffs (Compact).
type Chain struct {
	Layers []*Layer
	data   []byte
	size   int64
}

// OpenChain opens the layers at paths, a full layer and its diffs in the
// order they were taken, and checks that each diff's parent is the layer
// before it.
func OpenChain(paths ...string) (*Chain, error) {
	if len(paths) == 0 {
		return nil, errors.New("snapshot: an empty chain")
	}
	c := &Chain{}
	fail := func(err error) (*Chain, error) {
		c.Close()
		return nil, err
	}
	for i, p := range paths {
		l, err := OpenLayer(p)
		if err != nil {
			return fail(err)
		}
		c.Layers = append(c.Layers, l)
		switch {
		case i == 0 && !l.Full:
			return fail(fmt.Errorf("snapshot: %s is a diff (of %v), not a full layer: a chain starts with one", p, l.Parent))
		case i > 0 && l.Full:
			return fail(fmt.Errorf("snapshot: %s is a full layer: only the first of a chain is", p))
		case i > 0 && l.Parent != c.Layers[i-1].ID:
			return fail(fmt.Errorf("snapshot: %s is a diff of %v, not of %s (%v)", p, l.Parent, paths[i-1], c.Layers[i-1].ID))
		case l.Size != c.Layers[0].Size:
			return fail(fmt.Errorf("snapshot: %s is an image of %d bytes, %s of %d", p, l.Size, paths[0], c.Layers[0].Size))
		}
	}
	if err := c.mapLayers(); err != nil {
		return fail(err)
	}
	return c, nil
}

func (c *Chain) mapLayers() error {
	c.size = c.Layers[0].Size
	n := uintptr(indexOff(c.size))
	base, err := unix.MmapPtr(-1, 0, nil, n, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return fmt.Errorf("snapshot: reserve %d bytes for a chain: %w", n, err)
	}
	c.data = unsafe.Slice((*byte)(base), n)
	over := func(l *Layer, off, length int64) error {
		_, err := unix.MmapPtr(int(l.f.Fd()), off, unsafe.Add(base, off), uintptr(length), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_FIXED)
		if err != nil {
			return fmt.Errorf("snapshot: map %d bytes at offset %d of %s: %w", length, off, l.Path, err)
		}
		return nil
	}
	if err := over(c.Layers[0], 0, int64(n)); err != nil {
		return err
	}
	for _, l := range c.Layers[1:] {
		if err := l.Runs(func(off, length int64) error {
			return over(l, off, (length+Unit-1)/Unit*Unit)
		}); err != nil {
			return err
		}
	}
	c.data = c.data[:c.size]
	return nil
}

// Size returns the image's size.
func (c *Chain) Size() int64 { return c.size }

// Bytes returns the image (read-only memory).
func (c *Chain) Bytes() []byte { return c.data }

// ReadAt reads the image.
func (c *Chain) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= c.size {
		return 0, io.EOF
	}
	n := copy(p, c.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close unmaps the image and closes the layers.
func (c *Chain) Close() error {
	var first error
	if c.data != nil {
		if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(c.data)), uintptr(indexOff(c.size))); err != nil {
			first = err
		}
		c.data = nil
	}
	for _, l := range c.Layers {
		if err := l.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Compact folds the chain at paths into one full layer at dst (created or
// truncated): the image the chain serves, zero pages as holes.
func Compact(dst string, paths ...string) (*Header, error) {
	c, err := OpenChain(paths...)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if st, err := os.Stat(dst); err == nil {
		for _, l := range c.Layers {
			if lst, err := l.f.Stat(); err == nil && os.SameFile(st, lst) {
				return nil, fmt.Errorf("snapshot: compact into %s: it is a layer of the chain", dst)
			}
		}
	}
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	h, err := c.writeFull(f)
	if err == nil {
		err = f.Sync()
	}
	if e := f.Close(); e != nil && err == nil {
		err = e
	}
	if err != nil {
		os.Remove(dst)
		return nil, fmt.Errorf("snapshot: compact into %s: %w", dst, err)
	}
	return h, nil
}

var zeroUnit [Unit]byte

func (c *Chain) writeFull(w io.WriterAt) (*Header, error) {
	const most = 1 << 20
	for off := int64(0); off < c.size; {
		if bytes.Equal(c.data[off:min(off+Unit, c.size)], zeroUnit[:min(Unit, c.size-off)]) {
			off += Unit
			continue
		}
		e := off + Unit
		for e < c.size && e-off < most && !bytes.Equal(c.data[e:min(e+Unit, c.size)], zeroUnit[:min(Unit, c.size-e)]) {
			e += Unit
		}
		e = min(e, c.size)
		if _, err := w.WriteAt(c.data[off:e], off); err != nil {
			return nil, err
		}
		off = e
	}
	h := &Header{Full: true, Size: c.size, Units: (c.size + Unit - 1) / Unit, ID: newID()}
	index := make([]uint64, words(c.size))
	for u := int64(0); u < h.Units; u++ {
		index[u/64] |= 1 << (u % 64)
	}
	return h, writeIndex(w, h, index)
}
