//go:build linux && cgo

package snapshot_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/gouffd/uffd/internal/miniotest"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/remote"
	"github.com/gouffd/uffd/snapshot"
)

// TestTakeURL: snapshots uploaded to a real S3 server (MinIO). A full
// layer taken under running writers is a remote image served as it is
// (remote.Open reads one cut of the writes); diffs are stored beside it,
// and pulled back they make a chain that reads as the memory; an upload
// that fails makes the next snapshot full.
func TestTakeURL(t *testing.T) {
	srv := miniotest.Start(t)
	srv.Env(t, "")
	ctx := context.Background()
	srv.Bucket(t, "snaps")

	const size = 2 << 20
	f := newFixture(t, mem.Anonymous, size, snapshot.Config{Track: true, Buffer: 1 << 20})
	fill(f.m.Data)
	ws := startWriters(f.m.Data, 2, 1<<20, plainWrite)
	for ws.count.Load() < 1000 {
	}
	push := remote.PushConfig{ChunkSize: 256 << 10, PartSize: 5 << 20}
	res, err := f.s.TakeURL(ctx, "s3://snaps/base.img", push)
	ws.finish()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full: pause %v, %d pages, %d bytes written", res.Pause, res.Pages, res.Written)

	im, err := remote.Open(ctx, "s3://snaps/base.img", remote.Config{})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, size)
	if _, err := im.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	im.Close()
	checkCut(t, img, ws, nil)

	// d1 holds what the writers wrote after base's instant; d2, 1% of
	// the pages, written with the writers stopped.
	if _, err := f.s.TakeURL(ctx, "s3://snaps/d1.img", push); err != nil {
		t.Fatal(err)
	}
	p := words(f.m.Data)
	for pg := 0; pg < size/4096; pg += 100 {
		p[pg*512+7] = 0xd1ff
	}
	if _, err := f.s.TakeURL(ctx, "s3://snaps/d2.img", push); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, name := range []string{"base.img", "d1.img", "d2.img"} {
		path := filepath.Join(dir, name)
		if _, err := remote.Pull(ctx, "s3://snaps/"+name, path, remote.PullConfig{}); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	want := int64(size/4096+99) / 100
	if l, err := snapshot.OpenLayer(paths[2]); err != nil {
		t.Fatal(err)
	} else if l.Header.Full || l.Header.Units != want {
		t.Errorf("the uploaded diff: full %v, %d units, want a diff of %d", l.Header.Full, l.Header.Units, want)
	} else {
		l.Close()
	}
	chain, err := snapshot.OpenChain(paths...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(chain.Bytes()[:size], f.m.Data) {
		t.Error("the chain pulled from the store differs from the memory")
	}
	chain.Close()

	// A failed upload: the layer did not arrive, so the next one is full.
	if _, err := f.s.TakeURL(ctx, "s3://no-such-bucket/d2.img", push); err == nil {
		t.Fatal("an upload to a missing bucket succeeded")
	}
	requireUnprotected(t, f)
	next := filepath.Join(dir, "next.img")
	if _, err := f.s.TakeFile(ctx, next); err != nil {
		t.Fatal(err)
	}
	if l, err := snapshot.OpenLayer(next); err != nil {
		t.Fatal(err)
	} else if !l.Header.Full {
		t.Error("the snapshot after a failed upload is a diff, want full")
	} else {
		l.Close()
	}
}
