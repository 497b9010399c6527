//go:build linux

package remote_test

import (
	"context"
	"testing"
	"time"

	"github.com/gouffd/uffd/remote"
)

// TestReadAhead: requests for consecutive chunks make a stream, and the
// chunks ahead of it are fetched in the background, as far ahead as the
// stream has read (doubling each time the stream reaches the front);
// requests in no order fetch only what they ask for, and so does a
// stream with readahead off.
func TestReadAhead(t *testing.T) {
	const size, chunk = 32 << 20, 1 << 20
	h := newHTTP(t, true, false)
	url := h.put(t, "mem", makeImage(size, 31))
	open := func(readAhead int64) *remote.Image {
		im, err := remote.Open(context.Background(), url, remote.Config{ChunkSize: chunk, ReadAhead: readAhead, NoIndex: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { im.Close() })
		return im
	}
	page := func(im *remote.Image, c int64) {
		t.Helper()
		if err := fetchRange(im, c*chunk+8*remote.PageSize, remote.PageSize, true); err != nil {
			t.Fatal(err)
		}
	}
	present := func(im *remote.Image, c int64) bool {
		for off := c * chunk; off < (c+1)*chunk; off += remote.PageSize {
			if !im.Present(off) {
				return false
			}
		}
		return true
	}
	// settle waits until chunks [0, upto] are present and nothing is in
	// flight: readahead queues its chunks within the request that
	// triggers it, so nothing more comes after.
	settle := func(im *remote.Image, upto int64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			all := true
			for c := int64(0); c <= upto; c++ {
				all = all && present(im, c)
			}
			if all && im.Stats().InFlight == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("chunks 0-%d not all fetched in a minute (misses %d)", upto, im.Stats().Misses)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	im := open(0)
	for c := range int64(3) {
		page(im, c)
	}
	// The third consecutive chunk: as far ahead again as read, 3 chunks.
	settle(im, 5)
	if m := im.Stats().Misses; m != 6 || present(im, 6) {
		t.Fatalf("after chunks 0-2 in order: %d chunks fetched (chunk 6 present: %v), want 0-5", m, present(im, 6))
	}
	// At the front: 7 chunks read, 7 more ahead.
	page(im, 6)
	settle(im, 13)
	if m := im.Stats().Misses; m != 14 || present(im, 14) {
		t.Fatalf("after chunk 6: %d chunks fetched (chunk 14 present: %v), want 0-13", m, present(im, 14))
	}

	random := open(0)
	for _, c := range []int64{10, 3, 20, 7, 30} {
		page(random, c)
	}
	waitIdle(t, random)
	if m := random.Stats().Misses; m != 5 {
		t.Fatalf("5 chunks asked for in no order: %d fetched", m)
	}

	off := open(-1)
	for c := range int64(8) {
		page(off, c)
	}
	waitIdle(t, off)
	if m := off.Stats().Misses; m != 8 {
		t.Fatalf("readahead off, 8 chunks asked for: %d fetched", m)
	}
}

// waitIdle waits until im has no request in flight.
func waitIdle(t *testing.T, im *remote.Image) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for im.Stats().InFlight != 0 {
		if time.Now().After(deadline) {
			t.Fatal("requests still in flight after a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
