//go:build linux && cgo

package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/snapshot"
)

// restore serves src into fresh memory through the pager and reads it
// back from inside a system call (write(2) of the memory into a memfd),
// as a process restored from the image would fault it in.
func restore(t *testing.T, src pager.Mapped) []byte {
	t.Helper()
	size := int(src.Size())
	m, err := mem.Map(mem.Anonymous, size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	p, err := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: src}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	<-p.Serving()
	fd, err := unix.MemfdCreate("restored", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for off := 0; off < size; {
		n, err := unix.Write(fd, m.Data[off:])
		if err != nil {
			t.Fatalf("write(2) of the restored memory at %d: %v", off, err)
		}
		off += n
	}
	out := make([]byte, size)
	if _, err := unix.Pread(fd, out, 0); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Pages == 0 {
		t.Errorf("the pager served no page: %+v", st)
	}
	return out
}

func openChain(t *testing.T, paths []string) *snapshot.Chain {
	t.Helper()
	c, err := snapshot.OpenChain(paths...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func firstDiff(a, b []byte) string {
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d (page %d): %#x, want %#x", i, i/4096, a[i], b[i])
		}
	}
	return "same"
}

// TestIncrementalChain: a full snapshot under writers, then diffs (after
// the writers stopped; after 1% of the pages were written; under writers
// again), each holding exactly the pages written since the one before;
// the chain, restored through the pager, is byte for byte the memory at
// each instant; Compact folds it into one layer with the same bytes.
func TestIncrementalChain(t *testing.T) {
	forKinds(t, func(t *testing.T, kind mem.Kind) {
		size := sizeFor(t, kind, 4096, 8)
		f := newFixture(t, kind, size, snapshot.Config{Track: true, ArmChunk: 1 << 20, Buffer: 16 << 20})
		ps := f.m.PageSize
		pages := size / ps
		fill(f.m.Data)
		var paths []string
		take := func(name string) *snapshot.Result {
			t.Helper()
			path := filepath.Join(f.dir, name)
			res, err := f.s.TakeFile(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			paths = append(paths, path)
			t.Logf("%s: full %v, %d pages, %d bytes written; arm %v pause %v save %v", name, res.Full, res.Pages, res.Written, res.Arm, res.Pause, res.Save)
			return res
		}

		ws := startWriters(f.m.Data, 2, 1<<20, plainWrite)
		for ws.count.Load() < 1000 {
		}
		if res := take("base"); !res.Full {
			t.Fatal("the first snapshot is not full")
		}
		ws.finish()
		checkCut(t, openChain(t, paths).Bytes(), ws, nil)

		// Quiescent: the diff holds what the writers wrote after the
		// base's instant; the chain is the memory.
		take("d1")
		if c := openChain(t, paths); !bytes.Equal(c.Bytes(), f.m.Data) {
			t.Fatalf("base+d1 differs from the memory: %s", firstDiff(c.Bytes(), f.m.Data))
		}

		// 1% of the pages written: the diff holds exactly those.
		written := max(pages/100, 1)
		for i := range written {
			pg := (i * 97) % pages
			words(f.m.Data[pg*ps:])[3] = 0xd2<<56 | uint64(pg)
		}
		res := take("d2")
		if res.Full || res.Pages != int64(written) || res.Units != int64(written*ps/snapshot.Unit) {
			t.Errorf("d2: full %v, %d pages (%d units): want a diff of the %d pages written", res.Full, res.Pages, res.Units, written)
		}
		if res.Written > int64(written*ps) {
			t.Errorf("d2 wrote %d bytes for %d pages of %d bytes", res.Written, written, ps)
		}
		if c := openChain(t, paths); !bytes.Equal(c.Bytes(), f.m.Data) {
			t.Fatalf("base+d1+d2 differs from the memory: %s", firstDiff(c.Bytes(), f.m.Data))
		}

		// Under writers again.
		before := append([]uint64(nil), words(f.m.Data)...)
		ws = startWriters(f.m.Data, 2, 1<<20, plainWrite)
		for ws.count.Load() < 1000 {
		}
		take("d3")
		ws.finish()
		c := openChain(t, paths)
		checkCut(t, c.Bytes(), ws, before)

		got := restore(t, c)
		if !bytes.Equal(got, c.Bytes()) {
			t.Fatalf("the chain restored through the pager differs from the chain: %s", firstDiff(got, c.Bytes()))
		}
		checkCut(t, got, ws, before)

		compacted := filepath.Join(f.dir, "compacted")
		h, err := snapshot.Compact(compacted, paths...)
		if err != nil {
			t.Fatal(err)
		}
		if !h.Full || h.Size != int64(size) {
			t.Errorf("compacted header %+v", h)
		}
		one := openChain(t, []string{compacted})
		if !bytes.Equal(one.Bytes(), c.Bytes()) {
			t.Fatalf("the compacted layer differs from the chain: %s", firstDiff(one.Bytes(), c.Bytes()))
		}
	})
}

// TestChainRejectsBadOrder: a chain must start with a full layer and
// follow parents.
func TestChainRejectsBadOrder(t *testing.T) {
	f := newFixture(t, mem.Anonymous, 64*mem.PageSize(), snapshot.Config{Track: true})
	fill(f.m.Data)
	var paths []string
	for i := range 3 {
		p := filepath.Join(f.dir, fmt.Sprint(i))
		words(f.m.Data)[i*512] = uint64(i)
		if _, err := f.s.TakeFile(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	for _, bad := range [][]string{{paths[1]}, {paths[0], paths[2]}, {paths[0], paths[0]}, {paths[0], paths[2], paths[1]}} {
		if c, err := snapshot.OpenChain(bad...); err == nil {
			c.Close()
			t.Errorf("OpenChain(%v) succeeded", bad)
		} else {
			t.Log(err)
		}
	}
	if _, err := snapshot.Compact(paths[0], paths...); err == nil {
		t.Error("Compact into a layer of its own chain succeeded")
	}
}
