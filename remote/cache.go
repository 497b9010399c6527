//go:build linux

package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"
)

// Cache is a directory of image versions shared by the processes of a
// host. Each version (an object's URL and Identity) has a directory of
// its own holding
//
//   - data: a sparse file of the image's size, holding the chunks fetched;
//   - state: a header, the presence bitmap, pin counts, last-use stamps,
//     chunk states and checksums, mapped MAP_SHARED by every process that
//     uses the version;
//   - lock: the target of open-file-description locks: byte 0 is held
//     shared by every process using the version (exclusively by the one
//     that recovers it after the last user left), byte 1+i by the process
//     fetching or evicting chunk i.
//
// A version is never mixed with another (its directory is named after the
// identity), survives restarts (chunks are checked against their recorded
// checksums, and the index's, when the first process opens it again), and
// the directory is bounded by its size limit: cold chunks of any version
// are evicted when a fetch takes it beyond the limit.
type Cache struct {
	dir   string
	limit int64
	temp  bool

	mu        sync.Mutex
	versions  map[string]*version
	evicting  sync.Mutex
	evictions atomic.Uint64 // chunks this process evicted
	reserved  atomic.Int64  // bytes of chunks this process is fetching
}

// OpenCache opens (creating it if needed) the cache directory dir,
// bounded to limit bytes of chunk data (0: unbounded).
func OpenCache(dir string, limit int64) (*Cache, error) {
	if limit < 0 {
		return nil, fmt.Errorf("remote: cache %s: negative size limit %d", dir, limit)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("remote: cache: %w", err)
	}
	return &Cache{dir: dir, limit: limit, versions: map[string]*version{}}, nil
}

// tempCache makes a private cache in a temporary directory, removed when
// its last image is closed.
func tempCache() (*Cache, error) {
	dir, err := os.MkdirTemp("", "uffd-remote-")
	if err != nil {
		return nil, fmt.Errorf("remote: cache: %w", err)
	}
	c, err := OpenCache(dir, 0)
	if c != nil {
		c.temp = true
	}
	return c, err
}

// Dir returns the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// Limit returns the cache's size limit in bytes (0: none).
func (c *Cache) Limit() int64 { return c.limit }

// Usage returns the bytes of chunk data held by every version in the
// directory.
func (c *Cache) Usage() (int64, error) {
	var total int64
	err := c.each(func(v *version) { total += v.used().Load() })
	return total, err
}

// state-file layout.
const (
	stateMagic  = "UFFDRC\x00\x01"
	headerSize  = 4096
	hdrSize     = 8
	hdrShift    = 16
	hdrChunks   = 20
	hdrIdentity = 24 // the version's name, 64 bytes, NUL-padded
	hdrUsed     = 88
)

const (
	chunkAbsent   uint32 = iota
	chunkResident        // complete, checksummed, counted in used
	chunkZero            // all zeroes per the index: a hole, never fetched
)

type layout struct {
	pages, words, chunks           int64
	present, pins, stamps, states  int64
	sums, total                    int64
	chunkShift                     uint
	chunkPages, size, dataFileSize int64
}

func newLayout(size int64, shift uint) layout {
	l := layout{size: size, chunkShift: shift}
	l.pages = (size + PageSize - 1) >> pageShift
	l.words = (l.pages + 63) / 64
	l.chunks = (size + 1<<shift - 1) >> shift
	l.chunkPages = 1 << (shift - pageShift)
	l.present = headerSize
	l.pins = l.present + 8*l.words
	l.stamps = l.pins + 8*((4*l.chunks+7)/8)
	l.states = l.stamps + 8*l.chunks
	l.sums = l.states + 8*((4*l.chunks+7)/8)
	l.total = l.sums + 8*l.chunks
	l.dataFileSize = l.pages << pageShift
	return l
}

// version is one image version's files, mapped.
type version struct {
	cache *Cache
	name  string // directory name: Identity.Key
	dir   string
	l     layout
	ino   uint64 // the state file's inode, to notice a recreated version

	lockF, dataF, stateF *os.File
	data, state          []byte
	present, sums        []uint64
	stamps               []int64
	pins                 []int32
	states               []uint32

	refs  int  // Images of this process using it; 0: opened to evict
	users bool // holds byte 0 of lock shared

	mu       sync.Mutex
	busy     map[int64]*job // chunks this process fetches
	evicting map[int64]bool // chunks this process evicts
	held     map[int64]bool // chunk locks this process holds
}

func (v *version) used() *atomic.Int64 {
	return (*atomic.Int64)(unsafe.Pointer(&v.state[hdrUsed]))
}

func (v *version) chunkRange(c int64) (off, end int64) {
	off = c << v.l.chunkShift
	end = min(off+1<<v.l.chunkShift, v.l.size)
	return
}

// pageRange is the pages [p, q) of chunk c.
func (v *version) pageRange(c int64) (p, q int64) {
	p = c * v.l.chunkPages
	q = min(p+v.l.chunkPages, v.l.pages)
	return
}

func (v *version) isPresent(p int64) bool {
	return atomic.LoadUint64(&v.present[p>>6])&(1<<(p&63)) != 0
}

// setPresent sets the bits of pages [p, q), after their bytes are in data.
func (v *version) setPresent(p, q int64) {
	for p < q {
		w := p >> 6
		hi := min(q, (w+1)<<6)
		atomic.OrUint64(&v.present[w], bitsMask(p&63, hi-w<<6))
		p = hi
	}
}

func (v *version) clearPresent(p, q int64) {
	for p < q {
		w := p >> 6
		hi := min(q, (w+1)<<6)
		atomic.AndUint64(&v.present[w], ^bitsMask(p&63, hi-w<<6))
		p = hi
	}
}

// bitsMask has bits [lo, hi) of a word set (0 <= lo < hi <= 64).
func bitsMask(lo, hi int64) uint64 {
	m := ^uint64(0) << lo
	if hi < 64 {
		m &= (1 << hi) - 1
	}
	return m
}

// allPresent reports whether pages [p, q) are all present.
func (v *version) allPresent(p, q int64) bool {
	for ; p < q; p++ {
		if !v.isPresent(p) {
			return false
		}
	}
	return true
}

func (v *version) anyPresent(p, q int64) bool {
	for ; p < q; p++ {
		if v.isPresent(p) {
			return true
		}
	}
	return false
}

// lockRange takes (wait) or tries an OFD lock on the lock file.
func (v *version) lock(typ int16, start, n int64, wait bool) (bool, error) {
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: n}
	for {
		err := unix.FcntlFlock(v.lockF.Fd(), cmd, &lk)
		switch {
		case err == nil:
			return true, nil
		case err == unix.EINTR:
			continue
		case !wait && (err == unix.EAGAIN || err == unix.EACCES):
			return false, nil
		}
		return false, os.NewSyscallError("fcntl F_OFD_SETLK "+v.dir, err)
	}
}

// tryChunkLock takes chunk c's lock if no goroutine of this process and
// no other process holds it. (OFD locks are owned by the open file
// description, shared by this process's goroutines: held tells them
// apart.)
func (v *version) tryChunkLock(c int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.held[c] {
		return false
	}
	if ok, _ := v.lock(unix.F_WRLCK, 1+c, 1, false); !ok {
		return false
	}
	v.held[c] = true
	return true
}

func (v *version) chunkUnlock(c int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lock(unix.F_UNLCK, 1+c, 1, false)
	delete(v.held, c)
}

// openVersion opens (creating or recovering it) the version of the image
// at url with identity id, chunk size 1<<shift, and index idx (nil: none).
// active: the caller serves from it (it holds byte 0 shared); otherwise
// the version is only opened to evict from it.
func (c *Cache) openVersion(name string, size int64, shift uint, idx *Index, active bool) (*version, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.versions[name]
	if v != nil && (v.l.size != size || v.l.chunkShift != shift) {
		return nil, fmt.Errorf("remote: cache %s: version %s is open with chunks of %d bytes, not %d", c.dir, name, 1<<v.l.chunkShift, 1<<shift)
	}
	if v == nil {
		dir := filepath.Join(c.dir, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("remote: cache: %w", err)
		}
		v = &version{cache: c, name: name, dir: dir, l: newLayout(size, shift), busy: map[int64]*job{}, evicting: map[int64]bool{}, held: map[int64]bool{}}
		var err error
		if v.lockF, err = os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
			return nil, fmt.Errorf("remote: cache: %w", err)
		}
		if !active {
			if err := v.mapFiles(); err != nil || !v.valid(size, shift) {
				v.unmap()
				return nil, fmt.Errorf("remote: cache %s: version %s has no valid state", c.dir, name)
			}
		}
	}
	if active && !v.users {
		if err := v.join(idx); err != nil {
			if v.refs == 0 {
				v.unmap()
				delete(c.versions, name)
			}
			return nil, err
		}
	}
	if active {
		v.refs++
		if idx != nil {
			v.markZero(idx)
		}
	}
	c.versions[name] = v
	return v, nil
}

// join makes this process a user of the version: the first user (no
// other process has it open) creates or recovers it, later ones trust
// the state the users keep.
func (v *version) join(idx *Index) error {
	first, err := v.lock(unix.F_WRLCK, 0, 1, false)
	if err != nil {
		return err
	}
	if !first {
		// Others use it; this waits for one recovering it to finish.
		if _, err = v.lock(unix.F_RDLCK, 0, 1, true); err != nil {
			return err
		}
		v.users = true
		if v.state == nil {
			if err := v.mapFiles(); err != nil {
				return err
			}
		}
		if !v.valid(v.l.size, v.l.chunkShift) {
			return fmt.Errorf("remote: cache %s: state of version %s is not for %d bytes in chunks of %d", v.cache.dir, v.name, v.l.size, 1<<v.l.chunkShift)
		}
		return nil
	}
	v.users = true
	// Alone: keep evictors of other processes out while recovering.
	if _, err = v.lock(unix.F_WRLCK, 1, v.l.chunks, true); err != nil {
		return err
	}
	defer v.lock(unix.F_UNLCK, 1, v.l.chunks, false)
	if v.state != nil {
		if st, err := os.Stat(filepath.Join(v.dir, "state")); err != nil || inode(st) != v.ino {
			v.unmapFiles()
		}
	}
	if err = v.create(); err != nil {
		return err
	}
	v.recover(idx)
	// Let the others in.
	_, err = v.lock(unix.F_RDLCK, 0, 1, false)
	return err
}

// create makes the state and data files if they are missing or not of
// this layout (keeping them otherwise), and maps them.
func (v *version) create() error {
	statePath := filepath.Join(v.dir, "state")
	if v.state != nil && v.valid(v.l.size, v.l.chunkShift) {
		return nil
	}
	if err := v.mapFiles(); err == nil && v.valid(v.l.size, v.l.chunkShift) {
		return nil
	}
	v.unmapFiles()
	// A new version: fresh files, replacing anything there.
	for _, f := range []string{"data", "state"} {
		if err := os.Remove(filepath.Join(v.dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remote: cache: %w", err)
		}
	}
	data, err := os.OpenFile(filepath.Join(v.dir, "data"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	err = data.Truncate(v.l.dataFileSize)
	data.Close()
	if err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	tmp := statePath + ".new"
	st, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	hdr := make([]byte, headerSize)
	copy(hdr, stateMagic)
	binary.LittleEndian.PutUint64(hdr[hdrSize:], uint64(v.l.size))
	binary.LittleEndian.PutUint32(hdr[hdrShift:], uint32(v.l.chunkShift))
	binary.LittleEndian.PutUint32(hdr[hdrChunks:], uint32(v.l.chunks))
	copy(hdr[hdrIdentity:hdrIdentity+64], v.name)
	_, err = st.WriteAt(hdr, 0)
	if err == nil {
		err = st.Truncate(v.l.total)
	}
	if err == nil {
		err = st.Sync()
	}
	st.Close()
	if err == nil {
		err = os.Rename(tmp, statePath)
	}
	if err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	return v.mapFiles()
}

func (v *version) valid(size int64, shift uint) bool {
	h := v.state
	return len(h) >= headerSize && string(h[:8]) == stateMagic &&
		binary.LittleEndian.Uint64(h[hdrSize:]) == uint64(size) &&
		binary.LittleEndian.Uint32(h[hdrShift:]) == uint32(shift) &&
		len(v.name) < 64 && string(h[hdrIdentity:hdrIdentity+len(v.name)]) == v.name && h[hdrIdentity+len(v.name)] == 0
}

func (v *version) mapFiles() (err error) {
	if v.stateF, err = os.OpenFile(filepath.Join(v.dir, "state"), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	st, err := v.stateF.Stat()
	if err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	if st.Size() != v.l.total {
		return fmt.Errorf("remote: cache: %s is %d bytes, want %d", v.stateF.Name(), st.Size(), v.l.total)
	}
	v.ino = inode(st)
	if v.state, err = unix.Mmap(int(v.stateF.Fd()), 0, int(v.l.total), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return os.NewSyscallError("mmap "+v.stateF.Name(), err)
	}
	if v.dataF, err = os.OpenFile(filepath.Join(v.dir, "data"), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	if st, err = v.dataF.Stat(); err != nil || st.Size() != v.l.dataFileSize {
		return fmt.Errorf("remote: cache: %s is not of %d bytes", v.dataF.Name(), v.l.dataFileSize)
	}
	if v.l.dataFileSize > 0 {
		if v.data, err = unix.Mmap(int(v.dataF.Fd()), 0, int(v.l.dataFileSize), unix.PROT_READ, unix.MAP_SHARED); err != nil {
			return os.NewSyscallError("mmap "+v.dataF.Name(), err)
		}
	}
	l := v.l
	v.present = unsafe.Slice((*uint64)(unsafe.Pointer(&v.state[l.present])), l.words)
	v.pins = unsafe.Slice((*int32)(unsafe.Pointer(&v.state[l.pins])), l.chunks)
	v.stamps = unsafe.Slice((*int64)(unsafe.Pointer(&v.state[l.stamps])), l.chunks)
	v.states = unsafe.Slice((*uint32)(unsafe.Pointer(&v.state[l.states])), l.chunks)
	v.sums = unsafe.Slice((*uint64)(unsafe.Pointer(&v.state[l.sums])), l.chunks)
	return nil
}

func inode(st fs.FileInfo) uint64 {
	if s, ok := st.Sys().(*unix.Stat_t); ok {
		return s.Ino
	}
	return 0
}

func (v *version) unmapFiles() {
	if v.state != nil {
		unix.Munmap(v.state)
		v.state = nil
	}
	if v.data != nil {
		unix.Munmap(v.data)
		v.data = nil
	}
	for _, f := range []**os.File{&v.stateF, &v.dataF} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
	v.present, v.pins, v.stamps, v.states, v.sums = nil, nil, nil, nil, nil
}

func (v *version) unmap() {
	v.unmapFiles()
	if v.lockF != nil {
		v.lockF.Close() // releases every lock of this description
		v.lockF = nil
	}
}

// recover checks a version that no process uses: pins of dead processes
// are void, chunks half fetched are dropped, resident chunks are checked
// against their checksums (and the index's) and dropped when they differ.
func (v *version) recover(idx *Index) {
	var used int64
	for c := int64(0); c < v.l.chunks; c++ {
		atomic.StoreInt32(&v.pins[c], 0)
		p, q := v.pageRange(c)
		off, end := v.chunkRange(c)
		switch atomic.LoadUint32(&v.states[c]) {
		case chunkResident:
			sum := xxhash.Sum64(v.data[off:end])
			if sum == v.sums[c] && v.allPresent(p, q) && (idx == nil || idx.checkChunk(v.l.chunkShift, c, sum)) {
				used += end - off
				continue
			}
		case chunkZero:
			if idx != nil && idx.zeroChunk(v.l.chunkShift, c) {
				continue
			}
		default:
			if !v.anyPresent(p, q) {
				continue
			}
		}
		v.drop(c)
	}
	v.used().Store(used)
	if idx != nil {
		v.markZero(idx)
	}
}

// markZero marks the chunks that the index says are all zeroes present:
// their bytes are a hole of the data file, and read as zeroes.
func (v *version) markZero(idx *Index) {
	for c := int64(0); c < v.l.chunks; c++ {
		if idx.zeroChunk(v.l.chunkShift, c) && atomic.CompareAndSwapUint32(&v.states[c], chunkAbsent, chunkZero) {
			p, q := v.pageRange(c)
			v.setPresent(p, q)
		}
	}
}

// drop forgets chunk c (its lock held): bits cleared, then, once no
// reader pins it, bytes punched out.
func (v *version) drop(c int64) {
	p, q := v.pageRange(c)
	v.clearPresent(p, q)
	atomic.StoreUint32(&v.states[c], chunkAbsent)
	if v.waitUnpinned(c) {
		off, end := v.chunkRange(c)
		punch(v.dataF, off, end)
	}
}

// waitUnpinned waits up to pinWait for chunk c's pin count to be 0.
func (v *version) waitUnpinned(c int64) bool {
	deadline := time.Now().Add(pinWait)
	for wait := 10 * time.Microsecond; atomic.LoadInt32(&v.pins[c]) != 0; wait = min(2*wait, 10*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
	return true
}

func punch(f *os.File, off, end int64) error {
	end = (end + PageSize - 1) &^ (PageSize - 1)
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, end-off)
	if err != nil {
		return os.NewSyscallError("fallocate PUNCH_HOLE "+f.Name(), err)
	}
	return nil
}

// release drops an Image's reference. The version stays mapped (for
// evictions) until the Cache closes, but without users' lock when no
// Image of this process uses it.
func (c *Cache) release(v *version) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v.refs--
	if v.refs == 0 {
		v.lock(unix.F_UNLCK, 0, 1, false)
		v.users = false
		if c.temp {
			v.unmap()
			delete(c.versions, v.name)
			if len(c.versions) == 0 {
				os.RemoveAll(c.dir)
			}
		}
	}
}

// Close unmaps the versions no Image uses.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, v := range c.versions {
		if v.refs == 0 {
			v.unmap()
			delete(c.versions, name)
		}
	}
	return nil
}

// each calls fn for every valid version in the directory, opening those
// this process has not opened (to evict from them).
func (c *Cache) each(fn func(*version)) error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("remote: cache: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		v, err := c.passive(e.Name())
		if err != nil || v == nil {
			continue
		}
		fn(v)
	}
	return nil
}

// passive returns the version of directory name, opening it if needed
// from its header, or nil when it has no valid state (being created).
func (c *Cache) passive(name string) (*version, error) {
	c.mu.Lock()
	v := c.versions[name]
	c.mu.Unlock()
	statePath := filepath.Join(c.dir, name, "state")
	st, err := os.Stat(statePath)
	if err != nil {
		return nil, nil
	}
	if v != nil {
		if v.ino == inode(st) {
			return v, nil
		}
		c.mu.Lock()
		if v.refs == 0 { // recreated by its first user: reopen
			v.unmap()
			delete(c.versions, name)
		}
		c.mu.Unlock()
		if v.refs > 0 {
			return v, nil
		}
	}
	hdr := make([]byte, 32)
	f, err := os.Open(statePath)
	if err != nil {
		return nil, nil
	}
	_, err = f.ReadAt(hdr, 0)
	f.Close()
	if err != nil || string(hdr[:8]) != stateMagic {
		return nil, nil
	}
	size := int64(binary.LittleEndian.Uint64(hdr[hdrSize:]))
	shift := uint(binary.LittleEndian.Uint32(hdr[hdrShift:]))
	if shift < pageShift || shift > 30 {
		return nil, nil
	}
	return c.openVersion(name, size, shift, nil, false)
}

// reserve makes room for n more bytes of chunk data that this process is
// about to fetch, evicting the chunks used longest ago (of any version)
// until the directory's usage, with what this process is fetching, is
// within its limit; unreserve gives the reservation back once the chunk
// is counted in its version's usage (or was not fetched).
func (c *Cache) reserve(n int64) {
	if c.limit == 0 {
		return
	}
	c.reserved.Add(n)
	c.evict()
}

func (c *Cache) unreserve(n int64) {
	if c.limit != 0 {
		c.reserved.Add(-n)
	}
}

// evict brings the directory back under its limit, with this process's
// reservations, evicting the chunks used longest ago, of any version.
// Chunks that are being fetched, pinned for longer than pinWait (a
// process that died holding a pin) or locked by another process are
// skipped.
func (c *Cache) evict() {
	if c.limit == 0 {
		return
	}
	c.evicting.Lock()
	defer c.evicting.Unlock()
	type cand struct {
		v     *version
		c     int64
		stamp int64
	}
	var cands []cand
	var total int64
	c.each(func(v *version) {
		total += v.used().Load()
		for i := int64(0); i < v.l.chunks; i++ {
			if atomic.LoadUint32(&v.states[i]) == chunkResident {
				cands = append(cands, cand{v, i, atomic.LoadInt64(&v.stamps[i])})
			}
		}
	})
	total += c.reserved.Load()
	if total <= c.limit {
		return
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].stamp < cands[j].stamp })
	for _, k := range cands {
		if total <= c.limit {
			break
		}
		if n, ok := k.v.evictChunk(k.c); ok {
			total -= n
			c.evictions.Add(1)
		}
	}
}

// pinWait bounds the wait for readers pinning a chunk being evicted.
const pinWait = 2 * time.Second

// evictChunk evicts chunk c by the protocol readers rely on: clear the
// chunk's Present bits, wait until no reader pins it, then punch its
// bytes out. A reader that pins after the clear sees the bits clear.
func (v *version) evictChunk(c int64) (int64, bool) {
	v.mu.Lock()
	if v.busy[c] != nil || v.evicting[c] {
		v.mu.Unlock()
		return 0, false
	}
	v.evicting[c] = true
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		delete(v.evicting, c)
		v.mu.Unlock()
	}()
	if !v.tryChunkLock(c) {
		return 0, false
	}
	defer v.chunkUnlock(c)
	if atomic.LoadUint32(&v.states[c]) != chunkResident {
		return 0, false
	}
	p, q := v.pageRange(c)
	v.clearPresent(p, q)
	if !v.waitUnpinned(c) {
		// Leave the bytes (and the chunk counted): readers that pinned
		// before the clear may still copy them. The chunk is fetched
		// again when wanted (the same bytes).
		return 0, false
	}
	off, end := v.chunkRange(c)
	punch(v.dataF, off, end)
	atomic.StoreUint32(&v.states[c], chunkAbsent)
	v.used().Add(-(end - off))
	return end - off, true
}
