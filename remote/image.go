//go:build linux

package remote

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/gouffd/uffd/pager"
)

// An Image is a pager.Fetcher: the pager's engine copies the pages
// present in the cache straight from its mapping, reading the shared
// state of State with atomic operations only, and asks Fetch for the
// others. A page of Data may be copied only while its chunk is pinned and
// its Present bit is set; the cache evicts a chunk by clearing its Present
// bits, waiting until its pin count is 0 (a bounded wait: a chunk pinned
// by a process that died is skipped) and only then dropping its bytes.
var _ pager.Fetcher = (*Image)(nil)

// Config configures Open. The zero value is the defaults.
type Config struct {
	// Cache is the host-wide cache to keep chunks in. nil: a private
	// cache in a temporary directory, removed on Close.
	Cache *Cache
	// ChunkSize is the unit of fetching (a power of two, at least
	// PageSize). 0: the index's chunk size, or DefaultChunkSize.
	ChunkSize int64
	// Concurrency is the number of range requests in flight at most
	// (default DefaultConcurrency). A quarter of them (at least one) is
	// kept for urgent requests.
	Concurrency int
	// ReadAhead bounds how far ahead of a sequential stream of requests
	// chunks are fetched in the background, in bytes (default
	// DefaultReadAhead; negative: no readahead): as far ahead as the
	// stream has read, at most this much. See Image.Fetch.
	ReadAhead int64
	Timeouts
	// NoIndex ignores the image's index.
	NoIndex bool
	// Source configures the connections.
	Source SourceConfig
	// Logger receives warnings (an index ignored, retries). nil: none.
	Logger *slog.Logger
}

// Image is a remote memory image opened through a Cache: a pager.Fetcher for
// the pager, and an io.ReaderAt for anyone.
type Image struct {
	url   string
	src   Source
	idx   *Index
	cache *Cache
	v     *version
	cfg   Config
	ctx   context.Context
	stop  context.CancelFunc
	stats counters

	r *retrier

	failed atomic.Pointer[error]
	bufs   chan []byte // free read buffers, kept across garbage collections

	raMu    sync.Mutex
	streams [raStreams]stream
	raTick  uint64

	mu         sync.Mutex
	cond       *sync.Cond
	urgentQ    []*job
	backQ      []*job
	backActive int
	closed     bool
	workers    sync.WaitGroup
	closeOnce  sync.Once
	ownClient  bool
}

// stream is a run of requests for consecutive chunks, which readahead
// follows.
type stream struct {
	start int64  // the chunk it started at
	pos   int64  // the highest chunk asked for
	front int64  // the highest chunk read ahead (pos when none)
	seen  int    // advances
	used  uint64 // raTick when last asked; 0: free
}

// raStreams is the number of sequential streams readahead follows.
const raStreams = 4

// job fetches one chunk for every waiter of this process.
type job struct {
	img *Image
	c   int64

	taken atomic.Bool
	// urgentWaits counts the urgent waiters whose first page has not been
	// handed on: while there are any, pages are handed on as each
	// arrives; otherwise in batches.
	urgentWaits atomic.Int32
	front       atomic.Int64 // the next page the running span writes

	// guarded by v.mu
	urgent    bool
	start     int64 // page to start from
	locked    bool  // holds the chunk's lock: side fetches allowed
	finishing bool
	waiters   []*waiter
	sides     sync.WaitGroup
}

type waiter struct {
	next, end int64 // bytes, page-aligned
	fn        func(off, n int64, err error)
	urgent    bool
	t0        time.Time // urgent: when asked, until the first delivery
	firstDone bool      // urgent: its first pages were handed on (guarded by v.mu while in a job)
}

// Open opens the image at url (see OpenSource) through cfg.Cache. It
// reads the image's index (IndexURL) unless cfg.NoIndex; an image without
// one works as well, fetching every chunk.
func Open(ctx context.Context, url string, cfg Config) (*Image, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.ReadAhead == 0 {
		cfg.ReadAhead = DefaultReadAhead
	}
	if cfg.Source.Connections == 0 {
		cfg.Source.Connections = cfg.Concurrency + 4
	}
	ownClient := cfg.Source.HTTPClient == nil
	if ownClient {
		cfg.Source.HTTPClient = NewHTTPClient(cfg.Source.Connections)
	}
	if cfg.ChunkSize != 0 && (cfg.ChunkSize < PageSize || cfg.ChunkSize&(cfg.ChunkSize-1) != 0 || cfg.ChunkSize > 1<<30) {
		return nil, fmt.Errorf("remote: open %s: chunk size %d: want a power of two from 4 KiB to 1 GiB", url, cfg.ChunkSize)
	}
	src, err := OpenSource(ctx, url, cfg.Source)
	if err != nil {
		if ownClient {
			cfg.Source.HTTPClient.CloseIdleConnections()
		}
		return nil, err
	}
	im := &Image{url: url, src: src, cfg: cfg, ownClient: ownClient}
	im.r = &retrier{src: src, timeouts: cfg.timeouts(), stats: &im.stats, logger: cfg.Logger}
	if !cfg.NoIndex {
		im.idx = im.loadIndex(ctx)
	}
	shift := uint(bits.TrailingZeros64(DefaultChunkSize))
	switch {
	case cfg.ChunkSize != 0:
		shift = uint(bits.TrailingZeros64(uint64(cfg.ChunkSize)))
	case im.idx != nil:
		shift = im.idx.ChunkShift
	}
	if im.cache = cfg.Cache; im.cache == nil {
		if im.cache, err = tempCache(); err != nil {
			src.Close()
			return nil, err
		}
	}
	id := src.Identity()
	name := fmt.Sprintf("%s-%d", id.Key(url), shift)
	if im.v, err = im.cache.openVersion(name, id.Size, shift, im.idx, true); err != nil {
		src.Close()
		return nil, fmt.Errorf("remote: open %s: %w", url, err)
	}
	im.ctx, im.stop = context.WithCancel(context.Background())
	im.cond = sync.NewCond(&im.mu)
	im.bufs = make(chan []byte, 2*cfg.Concurrency)
	for range cfg.Concurrency {
		im.workers.Add(1)
		go im.worker()
	}
	return im, nil
}

// loadIndex reads the index beside the image, or returns nil (logging
// why) when there is none or it is not this version's.
func (im *Image) loadIndex(ctx context.Context) *Index {
	x, err := ReadIndex(ctx, im.url, im.cfg.Source)
	id := im.src.Identity()
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		im.warn("index ignored", "err", err)
		return nil
	case x.Size != id.Size:
		im.warn("index ignored: of another size", "index", x.Size, "image", id.Size)
		return nil
	case x.ETag != "" && id.ETag != "" && x.ETag != id.ETag:
		im.warn("index ignored: of another version", "index_etag", x.ETag, "image_etag", id.ETag)
		return nil
	}
	return x
}

func (im *Image) warn(msg string, args ...any) {
	if im.cfg.Logger != nil {
		im.cfg.Logger.Warn(msg, append([]any{"url", im.url}, args...)...)
	}
}

// URL returns the image's URL.
func (im *Image) URL() string { return im.url }

// Identity returns the version opened.
func (im *Image) Identity() Identity { return im.src.Identity() }

// Size returns the image's length in bytes.
func (im *Image) Size() int64 { return im.v.l.size }

// Index returns the image's index, nil when it has none.
func (im *Image) Index() *Index { return im.idx }

// ChunkSize returns the unit of fetching.
func (im *Image) ChunkSize() int64 { return 1 << im.v.l.chunkShift }

// Stats returns the image's counters.
func (im *Image) Stats() Stats {
	s := im.stats.snapshot()
	s.Evictions = im.cache.evictions.Load()
	return s
}

// Err returns the error that ended the image's fetching for good (its
// object changed), or nil.
func (im *Image) Err() error {
	if p := im.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Fingerprint identifies the image's contents by the identity fixed at
// Open (size, and ETag, version id or modification time), reading nothing:
// what a record-replay trace is checked against.
func (im *Image) Fingerprint() (uint64, error) {
	id := im.src.Identity()
	h := fnv.New64a()
	fmt.Fprintf(h, "%d\x00%s\x00%s\x00%d", id.Size, id.ETag, id.VersionID, id.LastModified.UnixNano())
	return h.Sum64(), nil
}

// State returns the shared state the pager's fault path reads.
func (im *Image) State() pager.CacheState {
	st := pager.CacheState{Data: im.v.data, Present: im.v.present, Pins: im.v.pins, ChunkShift: im.v.l.chunkShift}
	if im.idx != nil {
		st.Zero = im.idx.Zero
	}
	return st
}

// Present reports whether the page at off is in the cache.
func (im *Image) Present(off int64) bool { return im.v.isPresent(off >> pageShift) }

// Fetch implements pager.Fetcher.
func (im *Image) Fetch(off, n int64, urgent bool, arrived func(off, n int64, err error)) {
	v := im.v
	limit := v.l.pages << pageShift
	if off < 0 || n <= 0 || off%PageSize != 0 || n%PageSize != 0 || off+n > limit {
		err := &Error{Op: "fetch", URL: im.url, Kind: KindOther, Err: fmt.Errorf("range [%d, %d): want page-aligned within %d bytes", off, off+n, limit)}
		go arrived(off, n, err)
		return
	}
	failed := im.Err()
	var failures [][2]int64
	now := time.Now()
	var ready [][2]int64
	var sides []*job
	var sideRanges [][2]int64
	var queue []*job
	for a := off; a < off+n; {
		c := a >> v.l.chunkShift
		b := min(off+n, (c+1)<<v.l.chunkShift)
		p, q := a>>pageShift, b>>pageShift
		atomic.StoreInt64(&v.stamps[c], now.UnixNano())
		if v.allPresent(p, q) {
			im.stats.hits.Add(1)
			ready = append(ready, [2]int64{a, b - a})
			a = b
			continue
		}
		if failed != nil {
			failures = append(failures, [2]int64{a, b - a})
			a = b
			continue
		}
		w := &waiter{next: a, end: b, fn: arrived, urgent: urgent}
		if urgent {
			w.t0 = now
		}
		v.mu.Lock()
		j := v.busy[c]
		if j == nil || j.finishing {
			if j != nil { // finishing: its waiters are being delivered; start anew
				j = nil
			}
			j = &job{img: im, c: c, start: p, urgent: urgent}
			v.busy[c] = j
			queue = append(queue, j)
		} else if urgent && !j.urgent {
			j.urgent = true
			if !j.taken.Load() {
				j.start = p
				queue = append(queue, j)
			}
		}
		if urgent && j.locked && !j.finishing {
			// Running: unless its stream reaches the page soon, fetch
			// the page's range beside it.
			if f := j.front.Load(); p < f || p > f+sideAhead {
				j.sides.Add(1)
				sides = append(sides, j)
				sideRanges = append(sideRanges, [2]int64{p, q})
			}
		}
		j.waiters = append(j.waiters, w)
		if urgent {
			j.urgentWaits.Add(1)
		}
		v.mu.Unlock()
		a = b
	}
	if len(ready) > 0 || len(failures) > 0 {
		go func() {
			for _, r := range ready {
				arrived(r[0], r[1], nil)
			}
			for _, r := range failures {
				arrived(r[0], r[1], failed)
			}
		}()
	}
	for i, j := range sides {
		go im.side(j, sideRanges[i][0], sideRanges[i][1])
	}
	if failed == nil {
		queue = im.readAhead(off>>v.l.chunkShift, (off+n-1)>>v.l.chunkShift, queue)
	}
	if len(queue) > 0 {
		im.mu.Lock()
		for _, j := range queue {
			if j.urgent {
				im.urgentQ = append(im.urgentQ, j)
			} else {
				im.backQ = append(im.backQ, j)
			}
		}
		closed := im.closed
		im.cond.Broadcast()
		im.mu.Unlock()
		if closed {
			for _, j := range queue {
				if j.taken.CompareAndSwap(false, true) {
					im.finish(j, ErrClosed)
				}
			}
		}
	}
}

// sideAhead: an urgent page this many pages or fewer ahead of a running
// stream waits for it rather than being fetched beside it.
const sideAhead = 16

// readAhead follows sequential streams of requests: a request for chunks
// [c0, c1] that continues a stream (its first chunk at most one past what
// the stream asked for or read ahead, its last beyond the stream's
// position) advances it, and from its second advance on, the chunks ahead
// of its position are queued in the background (in order: the workers
// take them first come, first served, so that they arrive in the order
// the stream reads them), as far ahead as the stream has gone since it
// started (two chunks at least, ReadAhead at most). A request that
// continues no stream starts one, in place of the one used longest ago.
//
// Pages already present are copied by the pager without a request, so a
// stream whose readahead keeps ahead of it is not seen again until it
// reaches the readahead's front (or pages still arriving): it then asks,
// and its readahead doubles. Fetching ahead by as much as was read keeps
// what is fetched and never read within what was read in order, and the
// stalls at the front to one per doubling. It returns queue with the jobs
// it made for chunks neither present nor being fetched.
func (im *Image) readAhead(c0, c1 int64, queue []*job) []*job {
	v := im.v
	limit := im.cfg.ReadAhead >> v.l.chunkShift
	if im.cfg.ReadAhead < 0 || limit < 1 {
		return queue
	}
	last := (v.l.size - 1) >> v.l.chunkShift
	im.raMu.Lock()
	im.raTick++
	var s *stream
	for i := range im.streams {
		t := &im.streams[i]
		if t.used == 0 {
			continue
		}
		if c1 > t.pos && c0 <= t.front+1 {
			s = t
			break
		}
		if c1 <= t.pos && c1+2 >= t.pos { // again, or just behind: the same stream
			t.used = im.raTick
			im.raMu.Unlock()
			return queue
		}
	}
	if s == nil {
		s = &im.streams[0]
		for i := range im.streams {
			if im.streams[i].used < s.used {
				s = &im.streams[i]
			}
		}
		*s = stream{start: c0, pos: c1, front: c1, used: im.raTick}
		im.raMu.Unlock()
		return queue
	}
	s.pos, s.used = c1, im.raTick
	s.front = max(s.front, c1)
	if s.seen++; s.seen < 2 {
		im.raMu.Unlock()
		return queue
	}
	lead := min(max(2, s.pos-s.start+1), limit)
	from, to := s.front+1, min(s.pos+lead, last)
	s.front = max(s.front, to)
	im.raMu.Unlock()
	for c := from; c <= to; c++ {
		p, q := v.pageRange(c)
		if v.allPresent(p, q) {
			continue
		}
		v.mu.Lock()
		if v.busy[c] == nil { // one finishing completes the chunk
			j := &job{img: im, c: c, start: p}
			v.busy[c] = j
			queue = append(queue, j)
		}
		v.mu.Unlock()
	}
	return queue
}

// ReadAt reads p from the image at off through the cache, fetching what
// is missing (as urgent requests). It makes an Image a pager.Source.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	size := im.v.l.size
	if off < 0 || off >= size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), size-off)
	a := off &^ (PageSize - 1)
	b := min((off+want+PageSize-1)&^(PageSize-1), im.v.l.pages<<pageShift)
	if !im.v.allPresent(a>>pageShift, b>>pageShift) {
		done := make(chan error, 1)
		var left atomic.Int64
		left.Store(b - a)
		var once sync.Once
		im.Fetch(a, b-a, true, func(_, n int64, err error) {
			if err != nil {
				once.Do(func() { done <- err })
				return
			}
			if left.Add(-n) == 0 {
				once.Do(func() { done <- nil })
			}
		})
		if err := <-done; err != nil {
			return 0, err
		}
	}
	// Pin while copying, as the fault path does.
	v := im.v
	c0, c1 := a>>v.l.chunkShift, (b-1)>>v.l.chunkShift
	for c := c0; c <= c1; c++ {
		atomic.AddInt32(&v.pins[c], 1)
	}
	ok := v.allPresent(a>>pageShift, b>>pageShift)
	if ok {
		copy(p[:want], v.data[off:off+want])
	}
	for c := c0; c <= c1; c++ {
		atomic.AddInt32(&v.pins[c], -1)
	}
	if !ok { // evicted meanwhile: again
		return im.ReadAt(p, off)
	}
	if want < int64(len(p)) {
		return int(want), io.EOF
	}
	return int(want), nil
}

// Close stops fetching: pending requests get ErrClosed. The cache keeps
// what was fetched. Stop serving from the image first (a pager copies from
// its mapping, which Close of its Cache unmaps).
func (im *Image) Close() error {
	im.closeOnce.Do(func() {
		im.stop()
		im.mu.Lock()
		im.closed = true
		queued := append(im.urgentQ, im.backQ...)
		im.urgentQ, im.backQ = nil, nil
		im.cond.Broadcast()
		im.mu.Unlock()
		for _, j := range queued {
			if j.taken.CompareAndSwap(false, true) {
				im.finish(j, ErrClosed)
			}
		}
		im.workers.Wait()
		im.cache.release(im.v)
		im.src.Close()
		if im.ownClient {
			im.cfg.Source.HTTPClient.CloseIdleConnections()
		}
	})
	return nil
}

func (im *Image) worker() {
	defer im.workers.Done()
	reserve := max(1, im.cfg.Concurrency/4)
	for {
		im.mu.Lock()
		var j *job
		back := false
		for j == nil {
			if im.closed {
				im.mu.Unlock()
				return
			}
			if len(im.urgentQ) > 0 {
				j, im.urgentQ = im.urgentQ[0], im.urgentQ[1:]
			} else if len(im.backQ) > 0 && (im.backActive < im.cfg.Concurrency-reserve || im.cfg.Concurrency == 1) {
				j, im.backQ = im.backQ[0], im.backQ[1:]
				back = true
				im.backActive++
			} else {
				im.cond.Wait()
			}
			if j != nil && !j.taken.CompareAndSwap(false, true) {
				if back {
					im.backActive--
				}
				j, back = nil, false
			}
		}
		im.mu.Unlock()
		im.run(j)
		if back {
			im.mu.Lock()
			im.backActive--
			im.cond.Broadcast()
			im.mu.Unlock()
		}
	}
}

// run fetches chunk j.c, or follows another process fetching it.
func (im *Image) run(j *job) {
	v, c := im.v, j.c
	p, q := v.pageRange(c)
	// Wait out an eviction of the chunk by this process.
	for {
		v.mu.Lock()
		ev := v.evicting[c]
		v.mu.Unlock()
		if !ev {
			break
		}
		time.Sleep(time.Millisecond)
	}
	followed := false
	for wait := 50 * time.Microsecond; ; wait = min(2*wait, 2*time.Millisecond) {
		if v.allPresent(p, q) {
			if followed {
				im.stats.peerWaits.Add(1)
			}
			im.finish(j, nil)
			return
		}
		if im.ctx.Err() != nil {
			im.finish(j, ErrClosed)
			return
		}
		if v.tryChunkLock(c) {
			break
		}
		// Another process fetches it: deliver its pages as they come.
		followed = true
		time.Sleep(wait)
		im.notify(j)
	}
	if v.allPresent(p, q) { // completed before the lock was taken
		v.chunkUnlock(c)
		im.finish(j, nil)
		return
	}
	v.mu.Lock()
	j.locked = true
	start := j.start
	v.mu.Unlock()
	im.stats.misses.Add(1)
	off, end := v.chunkRange(c)
	im.cache.reserve(end - off) // room first: the bound holds once it is in
	err := im.fill(j, p, q, start)
	v.mu.Lock()
	j.finishing = true
	v.mu.Unlock()
	j.sides.Wait()
	if err == nil && !v.allPresent(p, q) {
		err = &Error{Op: "fetch", URL: im.url, Kind: KindOther, Err: fmt.Errorf("chunk %d incomplete", c)}
	}
	if err == nil {
		err = im.seal(c)
	}
	im.cache.unreserve(end - off)
	v.chunkUnlock(c)
	im.finish(j, err)
}

// fill fetches the missing pages of chunk [p, q), those from start first.
func (im *Image) fill(j *job, p, q, start int64) error {
	v := im.v
	if start < p || start >= q {
		start = p
	}
	for _, r := range [][2]int64{{start, q}, {p, start}} {
		for a := r[0]; a < r[1]; {
			for a < r[1] && v.isPresent(a) {
				a++
			}
			b := a
			for b < r[1] && !v.isPresent(b) {
				b++
			}
			if a == b {
				break
			}
			if err := im.fetchSpan(j, a, b, true); err != nil {
				return err
			}
			a = b
		}
	}
	return nil
}

// seal records chunk c complete (its lock held): checksum, checked
// against the index; the chunk is counted in the cache's usage.
func (im *Image) seal(c int64) error {
	v := im.v
	off, end := v.chunkRange(c)
	sum := xxhash.Sum64(v.data[off:end])
	if im.idx != nil && !im.idx.checkChunk(v.l.chunkShift, c, sum) {
		v.drop(c)
		err := &Error{Op: "fetch", URL: im.url, Kind: KindCorrupt, Err: fmt.Errorf("chunk %d (bytes %d-%d) does not match the index's checksum", c, off, end-1)}
		im.stats.errors[KindCorrupt].Add(1)
		return err
	}
	v.sums[c] = sum
	atomic.StoreInt64(&v.stamps[c], time.Now().UnixNano())
	if atomic.CompareAndSwapUint32(&v.states[c], chunkAbsent, chunkResident) {
		v.used().Add(end - off)
	}
	return nil
}

// side fetches pages [p, q) of a running job's chunk for an urgent
// waiter, beside the job's own stream.
func (im *Image) side(j *job, p, q int64) {
	defer j.sides.Done()
	v := im.v
	for a := p; a < q; {
		for a < q && v.isPresent(a) {
			a++
		}
		b := a
		for b < q && !v.isPresent(b) {
			b++
		}
		if a == b {
			return
		}
		if err := im.fetchSpan(j, a, b, false); err != nil {
			return // the job's own stream will bring them, or fail
		}
		a = b
	}
}

// finish ends job j: its waiters get what is present, or err for the
// rest (all of it, for background waiters of an image with an index: its
// pages were not checked).
func (im *Image) finish(j *job, err error) {
	v := im.v
	v.mu.Lock()
	j.finishing = true
	if v.busy[j.c] == j {
		delete(v.busy, j.c)
	}
	ws := j.waiters
	j.waiters = nil
	v.mu.Unlock()
	if err != nil && im.ctx.Err() != nil {
		err = ErrClosed
	}
	if KindOf(err) == KindChanged {
		im.failed.CompareAndSwap(nil, &err)
	}
	for _, w := range ws {
		if err == nil || w.urgent || im.idx == nil {
			im.deliver(w)
		}
		if w.next < w.end {
			fail := err
			if fail == nil {
				fail = &Error{Op: "fetch", URL: im.url, Kind: KindOther, Err: errors.New("chunk evicted before delivery")}
			}
			w.fn(w.next, w.end-w.next, fail)
		}
	}
}

// deliver calls w.fn for the pages present from w.next on.
func (im *Image) deliver(w *waiter) {
	v := im.v
	a := w.next
	for w.next < w.end && v.isPresent(w.next>>pageShift) {
		w.next += PageSize
	}
	if w.next > a {
		if !w.t0.IsZero() {
			observe(&im.stats.faultWait, time.Since(w.t0))
			w.t0 = time.Time{}
		}
		w.fn(a, w.next-a, nil)
	}
}

// notify delivers to j's waiters the pages that have arrived.
func (im *Image) notify(j *job) {
	v := im.v
	type call struct {
		w    *waiter
		a, n int64
	}
	var calls []call
	v.mu.Lock()
	keep := j.waiters[:0]
	for _, w := range j.waiters {
		if !w.urgent && im.idx != nil {
			// Background requests get their pages once the chunk
			// matches the index's checksum (finish); faults get them
			// as they arrive.
			keep = append(keep, w)
			continue
		}
		a := w.next
		for w.next < w.end && v.isPresent(w.next>>pageShift) {
			w.next += PageSize
		}
		if w.next > a {
			calls = append(calls, call{w, a, w.next - a})
			if w.urgent && !w.firstDone {
				w.firstDone = true
				j.urgentWaits.Add(-1)
			}
		}
		if w.next < w.end {
			keep = append(keep, w)
		}
	}
	clear(j.waiters[len(keep):])
	j.waiters = keep
	v.mu.Unlock()
	for _, c := range calls {
		if !c.w.t0.IsZero() {
			observe(&im.stats.faultWait, time.Since(c.w.t0))
			c.w.t0 = time.Time{}
		}
		c.w.fn(c.a, c.n, nil)
	}
}

// fetchSpan brings pages [p, q) into the cache (see retrier.read). main:
// the job's own stream (it moves j.front).
func (im *Image) fetchSpan(j *job, p, q int64, main bool) error {
	v := im.v
	off, end := p<<pageShift, min(q<<pageShift, v.l.size)
	buf := im.getBuf()
	defer im.putBuf(buf)
	if main {
		j.front.Store(p)
	}
	eager := func() bool { return j.urgentWaits.Load() > 0 }
	return im.r.read(im.ctx, off, end, buf, eager, func(a, b int64, data []byte) error {
		if _, err := v.dataF.WriteAt(data, a); err != nil {
			return &Error{Op: "cache write", URL: im.url, Kind: KindOther, Err: err}
		}
		v.setPresent(a>>pageShift, (b+PageSize-1)>>pageShift)
		if main {
			j.front.Store((b + PageSize - 1) >> pageShift)
		}
		im.notify(j)
		return nil
	})
}

// getBuf returns a read buffer; putBuf gives it back.
func (im *Image) getBuf() []byte {
	select {
	case b := <-im.bufs:
		return b
	default:
		return make([]byte, flushBytes)
	}
}

func (im *Image) putBuf(b []byte) {
	select {
	case im.bufs <- b:
	default:
	}
}
