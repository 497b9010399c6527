//go:build linux

package remote_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gouffd/uffd/remote"
)

// Transient failures: resets, a stalled body, the server stopped and
// started again mid-transfer. Every fetch completes with the right bytes.
func TestTransientFailures(t *testing.T) {
	data := makeImage(6<<20, 7)
	cfg := remote.Config{ChunkSize: 1 << 20, Concurrency: 3, Timeouts: remote.Timeouts{StallTimeout: 500 * time.Millisecond}}
	t.Run("resets", func(t *testing.T) {
		h := newHTTP(t, true, false)
		url := h.put(t, "t.mem", data)
		im, err := remote.Open(context.Background(), url, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		h.proxy.SetBandwidth(20 << 20)
		h.proxy.ResetAfter(300 << 10)
		done := make(chan error, 1)
		go func() { done <- fetchAll(t, im, false) }()
		for i := range 3 { // more resets while it runs
			time.Sleep(50 * time.Millisecond)
			h.proxy.ResetAfter(int64(i+1) << 19)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		checkData(t, im, data)
		if im.Stats().Retries == 0 {
			t.Fatal("no retries counted after resets")
		}
	})
	t.Run("stall", func(t *testing.T) {
		h := newHTTP(t, true, false)
		url := h.put(t, "t.mem", data)
		im, err := remote.Open(context.Background(), url, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		h.proxy.StallAfter(100<<10, 3*time.Second)
		if err := fetchAll(t, im, true); err != nil {
			t.Fatal(err)
		}
		checkData(t, im, data)
		if im.Stats().Retries == 0 {
			t.Fatal("a stalled body was not retried")
		}
	})
	t.Run("http server restarted", func(t *testing.T) {
		h := newHTTP(t, false, false)
		url := h.put(t, "t.mem", data)
		im, err := remote.Open(context.Background(), url, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		h.stop()
		done := make(chan error, 1)
		go func() { done <- fetchAll(t, im, true) }()
		time.Sleep(1500 * time.Millisecond)
		if im.Present(0) {
			t.Fatal("a page arrived while the server was down")
		}
		h.start(t)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		checkData(t, im, data)
	})
	t.Run("minio stopped mid-transfer", func(t *testing.T) {
		s := newS3(t, true)
		url := s.put(t, "t.mem", data)
		im, err := remote.Open(context.Background(), url, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		s.proxy.SetBandwidth(4 << 20) // so that the stop comes mid-transfer
		done := make(chan error, 1)
		go func() { done <- fetchAll(t, im, false) }()
		time.Sleep(300 * time.Millisecond)
		s.srv.Stop()
		s.proxy.ResetAll()
		time.Sleep(2 * time.Second)
		if err := s.srv.Restart(); err != nil {
			t.Fatal(err)
		}
		s.proxy.SetBandwidth(0)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		checkData(t, im, data)
		if im.Stats().Retries == 0 {
			t.Fatal("no retries while the server was down")
		}
	})
	t.Run("gives up after RetryFor", func(t *testing.T) {
		h := newHTTP(t, false, false)
		url := h.put(t, "t.mem", data)
		c := cfg
		c.RetryFor = 500 * time.Millisecond
		im, err := remote.Open(context.Background(), url, c)
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		h.stop()
		err = fetchRange(im, 0, 4096, true)
		if err == nil || remote.KindOf(err) != remote.KindTransient {
			t.Fatalf("fetch with the server down: %v; want a transient error after RetryFor", err)
		}
		if im.Present(0) {
			t.Fatal("page present after a failed fetch")
		}
	})
}

// Three processes (this one and two started again from the test binary)
// fetch one image through one cache directory at once: each chunk
// travels once.
func TestCacheSharedByProcesses(t *testing.T) {
	data := makeImage(8<<20, 8)
	h := newHTTP(t, true, false)
	url := h.put(t, "shared.mem", data)
	want := filepath.Join(t.TempDir(), "want")
	os.WriteFile(want, data, 0o600)
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	outs := make([][]byte, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"=fetch", "URL="+url, "CACHE="+dir, "WANT="+want)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			outs[i], errs[i] = cmd.Output()
			if errs[i] != nil {
				errs[i] = fmt.Errorf("helper %d: %v: %s", i, errs[i], stderr.String())
			}
		}()
	}
	cache, err := remote.OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	im, err := remote.Open(context.Background(), url, remote.Config{Cache: cache, ChunkSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := fetchAll(t, im, false); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkData(t, im, data)
	var misses uint64 = im.Stats().Misses
	for _, o := range outs {
		var st remote.Stats
		if err := json.Unmarshal(o, &st); err != nil {
			t.Fatalf("helper output %q: %v", o, err)
		}
		misses += st.Misses
	}
	n, ranges := rangeGets(h.proxy, "/shared.mem")
	chunks := len(data) / (256 << 10)
	if n != chunks || len(ranges) != chunks || misses != uint64(chunks) {
		t.Fatalf("%d range requests for %d distinct ranges, %d chunks fetched by the processes; want each of the %d chunks once", n, len(ranges), misses, chunks)
	}
}

// A handler restarted onto a warm cache fetches nothing again; a chunk
// whose bytes changed on disk while no process had the image open is
// fetched again (and only it).
func TestWarmRestart(t *testing.T) {
	data := makeImage(4<<20, 9)
	h := newHTTP(t, true, false)
	url := h.put(t, "warm.mem", data)
	dir := t.TempDir()
	open := func() *remote.Image {
		cache, err := remote.OpenCache(dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cache.Close() })
		im, err := remote.Open(context.Background(), url, remote.Config{Cache: cache, ChunkSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	im := open()
	if err := fetchAll(t, im, false); err != nil {
		t.Fatal(err)
	}
	im.Close()
	h.proxy.ResetCounts()

	im = open()
	if err := fetchAll(t, im, true); err != nil {
		t.Fatal(err)
	}
	checkData(t, im, data)
	if n, _ := rangeGets(h.proxy, "/warm.mem"); n != 0 || im.Stats().Misses != 0 {
		t.Fatalf("warm restart fetched %d ranges (%d chunks)", n, im.Stats().Misses)
	}
	im.Close()

	// Damage chunk 2 on disk.
	ents, _ := filepath.Glob(filepath.Join(dir, "*", "data"))
	if len(ents) != 1 {
		t.Fatalf("cache holds %v", ents)
	}
	f, err := os.OpenFile(ents[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("damage"), 2<<20+100)
	f.Close()
	h.proxy.ResetCounts()
	im = open()
	defer im.Close()
	if err := fetchAll(t, im, true); err != nil {
		t.Fatal(err)
	}
	checkData(t, im, data)
	n, ranges := rangeGets(h.proxy, "/warm.mem")
	if n != 1 || ranges[fmt.Sprintf("bytes=%d-%d", 2<<20, 3<<20-1)] != 1 {
		t.Fatalf("after damage to chunk 2: ranges %v; want chunk 2 alone", ranges)
	}
}

// Eviction under a size bound never hands out wrong bytes: readers pin
// chunks and check what they copy while fetches push the cache beyond
// its bound again and again.
func TestEvictionNeverWrongBytes(t *testing.T) {
	const chunk = 256 << 10
	data := makeImage(8<<20, 10)
	h := newHTTP(t, false, false)
	url := h.put(t, "evict.mem", data)
	cache, err := remote.OpenCache(t.TempDir(), 6*chunk)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	im, err := remote.Open(context.Background(), url, remote.Config{Cache: cache, ChunkSize: chunk, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	st := im.State()
	var stop atomic.Bool
	var copies, misses atomic.Int64
	var bad atomic.Pointer[string]
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			page := make([]byte, remote.PageSize)
			for i := 0; !stop.Load(); i++ {
				p := int64((i*7919 + r*104729) % (len(data) / remote.PageSize))
				off := p * remote.PageSize
				c := off >> st.ChunkShift
				// The fault path's protocol: pin, check Present, copy, unpin.
				atomic.AddInt32(&st.Pins[c], 1)
				if atomic.LoadUint64(&st.Present[p>>6])&(1<<(p&63)) != 0 {
					copy(page, st.Data[off:off+remote.PageSize])
					atomic.AddInt32(&st.Pins[c], -1)
					copies.Add(1)
					if !bytes.Equal(page, data[off:off+remote.PageSize]) {
						s := fmt.Sprintf("page %#x copied with the wrong bytes", off)
						bad.Store(&s)
						return
					}
				} else {
					atomic.AddInt32(&st.Pins[c], -1)
					misses.Add(1)
				}
			}
		}()
	}
	for round := range 6 {
		if err := fetchAll(t, im, round%2 == 0); err != nil && remote.KindOf(err) != remote.KindOther {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if s := bad.Load(); s != nil {
		t.Fatal(*s)
	}
	used, err := cache.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if used > 6*chunk || im.Stats().Evictions == 0 || copies.Load() == 0 {
		t.Fatalf("usage %d (limit %d), %d evictions, %d copies, %d misses", used, 6*chunk, im.Stats().Evictions, copies.Load(), misses.Load())
	}
}

// The faulting page is delivered as soon as its bytes have arrived, not
// when its whole chunk has: under a bandwidth cap, a fault in the middle
// of a 4 MiB chunk is delivered while most of the chunk is still missing.
func TestPageBeforeChunk(t *testing.T) {
	data := makeImage(4<<20, 11)
	for i := range 8 { // no zero pages: every page travels
		data[i] = 1
	}
	h := newHTTP(t, true, false)
	url := h.put(t, "p.mem", data)
	im, err := remote.Open(context.Background(), url, remote.Config{ChunkSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	h.proxy.SetBandwidth(2 << 20) // the chunk takes 2 s
	const page = 1<<20 + 5*4096
	got := make(chan int, 1)
	im.Fetch(page, 4096, true, func(off, n int64, err error) {
		if err != nil || off != page {
			t.Errorf("arrived %d+%d: %v", off, n, err)
		}
		present := 0
		for o := int64(0); o < int64(len(data)); o += 4096 {
			if im.Present(o) {
				present++
			}
		}
		got <- present
	})
	present := <-got
	if present > len(data)/4096/2 {
		t.Fatalf("the page came with %d of the chunk's %d pages present; want it well before the chunk", present, len(data)/4096)
	}
	if err := fetchAll(t, im, false); err != nil {
		t.Fatal(err)
	}
	checkData(t, im, data)
}

// Urgent requests overtake background ones: with the link capped and the
// background fetching the whole image, an urgent page of the last chunk
// arrives while most background chunks are still missing.
func TestUrgentOvertakesBackground(t *testing.T) {
	data := makeImage(16<<20, 12)
	h := newHTTP(t, true, false)
	url := h.put(t, "u.mem", data)
	im, err := remote.Open(context.Background(), url, remote.Config{ChunkSize: 1 << 20, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	h.proxy.SetBandwidth(4 << 20)
	back := make(chan error, 1)
	go func() { back <- fetchAll(t, im, false) }()
	time.Sleep(100 * time.Millisecond)
	last := int64(len(data)) - 3*4096
	got := make(chan int, 1)
	im.Fetch(last, 4096, true, func(off, n int64, err error) {
		if err != nil {
			t.Error(err)
		}
		present := 0
		for o := int64(0); o < int64(len(data)); o += 1 << 20 {
			if im.Present(o) {
				present++
			}
		}
		got <- present
	})
	if present := <-got; present > 8 {
		t.Fatalf("the urgent page arrived after %d of 16 chunks' first pages; want it ahead of the background", present)
	}
	if err := <-back; err != nil {
		t.Fatal(err)
	}
	checkData(t, im, data)
	st := im.Stats()
	if w := st.FaultWait.Count(); w == 0 {
		t.Fatal("no fault wait recorded")
	}
}

// The size bound covers every version in the directory: a process
// fetching one image evicts the cold chunks of another that a process
// before it left behind.
func TestEvictionAcrossVersions(t *testing.T) {
	const chunk = 256 << 10
	a, b := makeImage(2<<20, 20), makeImage(2<<20, 21)
	h := newHTTP(t, false, false)
	urlA, urlB := h.put(t, "a.mem", a), h.put(t, "b.mem", b)
	dir := t.TempDir()
	first, err := remote.OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	imA, err := remote.Open(context.Background(), urlA, remote.Config{Cache: first, ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	if err := fetchAll(t, imA, false); err != nil {
		t.Fatal(err)
	}
	imA.Close()
	first.Close()

	second, err := remote.OpenCache(dir, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	imB, err := remote.Open(context.Background(), urlB, remote.Config{Cache: second, ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	defer imB.Close()
	if err := fetchAll(t, imB, false); err != nil {
		t.Fatal(err)
	}
	checkData(t, imB, b)
	used, err := second.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if used > 3<<20 || imB.Stats().Evictions != 4 {
		t.Fatalf("usage %d of a 3 MiB bound, %d evictions; want image a's 4 oldest chunks evicted", used, imB.Stats().Evictions)
	}
	// What is left of a is still its own bytes.
	imA, err = remote.Open(context.Background(), urlA, remote.Config{Cache: second, ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	defer imA.Close()
	if err := fetchAll(t, imA, true); err != nil {
		t.Fatal(err)
	}
	checkData(t, imA, a)
}
