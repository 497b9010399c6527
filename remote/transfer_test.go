//go:build linux

package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gouffd/uffd/remote"
)

// Push writes the image and its index; Stat reads them; Images opened
// from it never fetch its zero chunks, and check every chunk against the
// index; Pull brings the same bytes back without fetching zero chunks.
func TestPushStatPull(t *testing.T) {
	const chunk = 256 << 10
	data := makeImage(12<<20+8192, 13) // every fifth MiB zero: 4 zero chunks of 256 KiB each
	s := newS3(t, true)
	dir := t.TempDir()
	file := filepath.Join(dir, "vm.mem")
	os.WriteFile(file, data, 0o600)
	url := "s3://" + s.bucket + "/vm.mem"
	var mu sync.Mutex
	var last int64
	idx, err := remote.Push(context.Background(), file, url, remote.PushConfig{ChunkSize: chunk, PartSize: 5 << 20, Concurrency: 3,
		Progress: func(done, total int64) { mu.Lock(); last = max(last, done); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if last != int64(len(data)) {
		t.Fatalf("progress ended at %d of %d", last, len(data))
	}
	zeroChunks := idx.ZeroChunks()
	if zeroChunks < 4 || idx.ChunkShift != 18 {
		t.Fatalf("index: %d zero chunks, shift %d", zeroChunks, idx.ChunkShift)
	}
	nonZero := int64(0)
	for c := int64(0); c < int64(len(idx.Sums)); c++ {
		off := c * chunk
		end := min(off+chunk, int64(len(data)))
		if !bytes.Equal(data[off:end], make([]byte, end-off)) {
			nonZero += end - off
		}
	}

	info, err := remote.Stat(context.Background(), url, remote.SourceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Index == nil || info.Identity.Size != int64(len(data)) || info.Index.ETag != info.Identity.ETag {
		t.Fatalf("stat: %+v (index err %v)", info, info.IndexErr)
	}

	s.proxy.ResetCounts()
	im, err := remote.Open(context.Background(), url, remote.Config{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.ChunkSize() != chunk || im.Index() == nil || im.State().Zero == nil {
		t.Fatalf("image: chunk %d, index %v", im.ChunkSize(), im.Index() != nil)
	}
	if err := fetchAll(t, im, false); err != nil {
		t.Fatal(err)
	}
	checkData(t, im, data)
	if st := im.Stats(); int64(st.Bytes) != nonZero {
		t.Fatalf("fetched %d bytes; want the %d bytes of non-zero chunks", st.Bytes, nonZero)
	}
	for _, r := range s.proxy.Requests() {
		if r.Path != "/images/vm.mem" || r.Range == "" {
			continue
		}
		var a, b int64
		fmt.Sscanf(r.Range, "bytes=%d-%d", &a, &b)
		if bytes.Equal(data[a:b+1], make([]byte, b+1-a)) && b+1-a >= chunk {
			t.Fatalf("range %s of zero bytes was fetched", r.Range)
		}
	}

	out := filepath.Join(dir, "pulled.mem")
	st, err := remote.Pull(context.Background(), url, out, remote.PullConfig{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, data) {
		t.Fatal("pulled file differs")
	}
	if int64(st.Bytes) != nonZero {
		t.Fatalf("pull fetched %d bytes; want %d", st.Bytes, nonZero)
	}

	// Replaced without its index: the index is of another version, and
	// ignored (every chunk fetched, nothing checked against it).
	repl := makeImage(int64(len(data)), 14)
	s.put(t, "vm.mem", repl)
	info, err = remote.Stat(context.Background(), url, remote.SourceConfig{})
	if err != nil || info.Index != nil || info.IndexErr == nil || !strings.Contains(info.IndexErr.Error(), "ignored") {
		t.Fatalf("stat of the replaced image: %+v, %v", info, err)
	}
	im2, err := remote.Open(context.Background(), url, remote.Config{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if im2.Index() != nil {
		t.Fatal("stale index used")
	}
	if err := fetchAll(t, im2, true); err != nil {
		t.Fatal(err)
	}
	checkData(t, im2, repl)
}

// A chunk whose bytes disagree with the index fails with ErrCorrupt and
// is not kept.
func TestIndexChecksumMismatch(t *testing.T) {
	data := makeImage(2<<20, 15)
	h := newHTTP(t, false, false)
	url := h.put(t, "c.mem", data)
	if _, err := remote.WriteIndexFile(context.Background(), filepath.Join(h.dir, "c.mem"), 1<<20); err != nil {
		t.Fatal(err)
	}
	// The index's ETag is unknown ("" for files): bend the image's second
	// chunk without changing its identity's size; the modification time
	// is set back so that the HTTP identity stays the same.
	st, _ := os.Stat(filepath.Join(h.dir, "c.mem"))
	bad := append([]byte(nil), data...)
	bad[1<<20+100] ^= 0xff
	os.WriteFile(filepath.Join(h.dir, "c.mem"), bad, 0o644)
	os.Chtimes(filepath.Join(h.dir, "c.mem"), st.ModTime(), st.ModTime())
	im, err := remote.Open(context.Background(), url, remote.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.Index() == nil {
		t.Fatal("index not read")
	}
	if err := fetchRange(im, 0, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	err = fetchRange(im, 1<<20, 1<<20, false)
	if !errorsIs(err, remote.ErrCorrupt) {
		t.Fatalf("fetch of a chunk that differs from the index: %v", err)
	}
	if im.Present(1 << 20) {
		t.Fatal("the corrupt chunk stays present")
	}
}

func TestIndexRoundTrip(t *testing.T) {
	data := makeImage(3<<20+5000, 16)
	x, err := remote.BuildIndex(context.Background(), bytes.NewReader(data), int64(len(data)), 20, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := x.MarshalBinary()
	var y remote.Index
	if err := y.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if y.Size != x.Size || y.ChunkShift != x.ChunkShift || len(y.Sums) != 4 || y.ZeroPages() != x.ZeroPages() || y.ZeroChunks() != 1 {
		t.Fatalf("round trip: %+v", y)
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 1
		if err := y.UnmarshalBinary(c); err == nil {
			t.Fatalf("a flipped bit at byte %d went unnoticed", i)
		}
	}
	if err := y.UnmarshalBinary(b[:len(b)-1]); err == nil {
		t.Fatal("a truncated index was accepted")
	}
}

func FuzzIndexUnmarshal(f *testing.F) {
	x, _ := remote.BuildIndex(context.Background(), bytes.NewReader(makeImage(1<<20, 17)), 1<<20, 16, 1, nil)
	b, _ := x.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var y remote.Index
		if y.UnmarshalBinary(b) == nil {
			c, _ := y.MarshalBinary()
			if !bytes.Equal(b, c) {
				t.Fatal("decoded index does not encode back to its bytes")
			}
		}
	})
}
