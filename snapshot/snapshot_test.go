//go:build linux && cgo

package snapshot_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/snapshot"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// kinds are the memory kinds every test runs on.
var kinds = []mem.Kind{mem.Anonymous, mem.Shmem, mem.ShmemPrivate, mem.Hugetlb}

// sizeFor returns a test region's size for kind: small pages, or huge.
func sizeFor(t testing.TB, kind mem.Kind, small, huge int) int {
	if kind.Huge() {
		hps, err := mem.HugePageSize()
		if err != nil {
			t.Skipf("no hugetlbfs: %v", err)
		}
		testutil.ReserveHugePages(t, huge+2)
		return huge * hps
	}
	return small * mem.PageSize()
}

// fixture is registered memory with a Snapshotter.
type fixture struct {
	m    *mem.Mapping
	u    *uffd.UFFD
	s    *snapshot.Snapshotter
	dir  string
	kind mem.Kind
}

func newFixture(t *testing.T, kind mem.Kind, size int, cfg snapshot.Config) *fixture {
	t.Helper()
	m, err := mem.Map(kind, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	u, err := uffd.Open(uffd.Config{Features: snapshot.Features(kind.FileBacked())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	cfg.Regions = []snapshot.Region{{Start: m.Addr(), Len: m.Len(), PageSize: m.PageSize}}
	s, err := snapshot.New(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &fixture{m: m, u: u, s: s, dir: t.TempDir(), kind: kind}
}

// words are the memory's 8-byte words.
func words(b []byte) []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
}

// Writers: writer w owns the words k with k%n == w (so that every page is
// written by every writer) and writes tag(w, seq) with seq its write
// count, logging each word it wrote: the log's index is the sequence
// number.
// Tags also carry the writers' run, so that no run writes a value an
// earlier one left.
func tag(run, w, seq int) uint64 { return uint64(run)<<56 | uint64(w+1)<<48 | uint64(seq) }

var runs atomic.Int64

func initial(k int) uint64 { return 1<<63 | uint64(k) }

type writers struct {
	run   int
	n     int
	logs  [][]uint32
	stop  atomic.Bool
	wg    sync.WaitGroup
	count atomic.Int64
}

// fill sets every word to its initial value (populating the memory).
func fill(b []byte) {
	for k, p := 0, words(b); k < len(p); k++ {
		p[k] = initial(k)
	}
}

// start runs n writers over b; write performs one write of val at word k.
func startWriters(b []byte, n, limit int, write func(p []uint64, b []byte, k int, val uint64)) *writers {
	ws := &writers{run: int(runs.Add(1)), n: n, logs: make([][]uint32, n)}
	p := words(b)
	per := len(p) / n
	for w := range n {
		ws.wg.Add(1)
		go func() {
			defer ws.wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			log := make([]uint32, 0, limit)
			for seq := 0; seq < limit && !ws.stop.Load(); seq++ {
				k := r.IntN(per)*n + w
				write(p, b, k, tag(ws.run, w, seq))
				log = append(log, uint32(k))
				ws.count.Add(1)
			}
			ws.logs[w] = log
		}()
	}
	return ws
}

func (ws *writers) finish() {
	ws.stop.Store(true)
	ws.wg.Wait()
}

func plainWrite(p []uint64, _ []byte, k int, val uint64) { atomic.StoreUint64(&p[k], val) }

// checkCut checks that img is the memory as it was at one instant of the
// writers' runs: for each writer, its words hold exactly the effect of a
// prefix of its writes (the longest seen in img), every byte checked.
// before holds the words as they were when the writers started (nil:
// their initial values).
func checkCut(t *testing.T, img []byte, ws *writers, before []uint64) (cuts []int) {
	t.Helper()
	p := words(img)
	was := func(k int) uint64 {
		if before != nil {
			return before[k]
		}
		return initial(k)
	}
	cuts = make([]int, ws.n)
	for k, v := range p {
		if v != was(k) {
			w, seq := int(v>>48&0xff)-1, int(v&(1<<48-1))
			if int(v>>56) != ws.run || w != k%ws.n || seq >= len(ws.logs[w]) || int(ws.logs[w][seq]) != k {
				t.Fatalf("word %d holds %#x: no such write by writer %d", k, v, w)
			}
			cuts[w] = max(cuts[w], seq+1)
		}
	}
	want := make([]uint64, len(p))
	for k := range want {
		want[k] = was(k)
	}
	for w, log := range ws.logs {
		for seq, k := range log[:cuts[w]] {
			want[k] = tag(ws.run, w, seq)
		}
	}
	bad := 0
	for k := range p {
		if p[k] != want[k] {
			if bad++; bad <= 5 {
				t.Errorf("word %d (page %d) = %#x, want %#x (writer %d's cut at %d writes)", k, k*8/4096, p[k], want[k], k%ws.n, cuts[k%ws.n])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d words differ from the cut", bad)
	}
	return cuts
}

func readData(t *testing.T, path string, size int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < size {
		t.Fatalf("%s has %d bytes, want at least %d", path, len(b), size)
	}
	return b[:size]
}

func forKinds(t *testing.T, fn func(t *testing.T, kind mem.Kind)) {
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) { fn(t, k) })
	}
}

// TestConsistentUnderWriters: writers keep writing at full speed through
// the arming, the instant and the save; the image is exactly one cut of
// their writes, and the writers wrote during the save.
func TestConsistentUnderWriters(t *testing.T) {
	forKinds(t, func(t *testing.T, kind mem.Kind) {
		size := sizeFor(t, kind, 2048, 4)
		f := newFixture(t, kind, size, snapshot.Config{ArmChunk: 1 << 20, Buffer: 8 << 20})
		fill(f.m.Data)
		for _, dest := range []string{"file", "writerat"} {
			t.Run(dest, func(t *testing.T) {
				ws := startWriters(f.m.Data, 3, 4<<20, plainWrite)
				for ws.count.Load() < 1000 {
					time.Sleep(time.Millisecond)
				}
				before := ws.count.Load()
				path := filepath.Join(f.dir, dest)
				var res *snapshot.Result
				var err error
				if dest == "file" {
					res, err = f.s.TakeFile(context.Background(), path)
				} else {
					var fw *os.File
					fw, err = os.Create(path)
					if err != nil {
						t.Fatal(err)
					}
					res, err = f.s.Take(context.Background(), onlyWriterAt{fw})
					fw.Close()
				}
				during := ws.count.Load() - before
				ws.finish()
				if err != nil {
					t.Fatal(err)
				}
				cuts := checkCut(t, readData(t, path, size), ws, nil)
				t.Logf("%s: cut at %v of %d writes; %d writes during the snapshot; arm %v, pause %v (%d rounds, %d pages at the instant), save %v; %+v",
					dest, cuts, ws.count.Load(), during, res.Arm, res.Pause, res.Rounds, res.Final, res.Save, res.Stats)
				if !res.Full || res.Pages != int64(size/f.m.PageSize) {
					t.Errorf("Full %v, Pages %d: want a full snapshot of %d pages", res.Full, res.Pages, size/f.m.PageSize)
				}
				if st := res.Stats; st.CowPages+st.BgPages != uint64(size/f.m.PageSize) {
					t.Errorf("saved %d pages by faults and %d in the background, want %d in all", st.CowPages, st.BgPages, size/f.m.PageSize)
				}
				l, err := snapshot.OpenLayer(path)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				if !l.Full || l.Size != int64(size) || l.Units != int64(size/snapshot.Unit) {
					t.Errorf("layer header %+v: want a full layer of %d bytes", l.Header, size)
				}
				fill(f.m.Data)
			})
		}
	})
}

// onlyWriterAt hides *os.File, so that the Go drain is used.
type onlyWriterAt struct{ f *os.File }

func (w onlyWriterAt) WriteAt(b []byte, off int64) (int, error) { return w.f.WriteAt(b, off) }

var _ = binary.LittleEndian
var _ = fmt.Sprint
