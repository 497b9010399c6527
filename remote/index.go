package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"os"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Index describes an image: which pages are all zeroes (never fetched:
// the pager installs them with UFFDIO_ZEROPAGE) and a checksum of each
// chunk (the 64-bit xxHash of its bytes), against which fetched and cached
// chunks are checked. Push writes it beside the image, at IndexURL.
type Index struct {
	Size       int64
	ChunkShift uint
	// ETag is the image's ETag when the index was written ("" if
	// unknown): an index whose ETag differs from the object's belongs to
	// another version and is ignored.
	ETag string
	Zero []uint64 // one bit per PageSize bytes: set when all zero
	Sums []uint64 // one per chunk of 1<<ChunkShift bytes
}

const indexMagic = "UFFDIDX1"

// Pages returns the number of pages of the image.
func (x *Index) Pages() int64 { return (x.Size + PageSize - 1) >> pageShift }

// ZeroPages counts the all-zero pages.
func (x *Index) ZeroPages() int64 {
	var n int
	for _, w := range x.Zero {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

func (x *Index) zeroPage(p int64) bool { return x.Zero[p>>6]&(1<<(p&63)) != 0 }

// zeroChunk reports whether chunk c of chunks of 1<<shift bytes is all
// zeroes.
func (x *Index) zeroChunk(shift uint, c int64) bool {
	per := int64(1) << (shift - pageShift)
	p, q := c*per, min((c+1)*per, x.Pages())
	for ; p < q; p++ {
		if p&63 == 0 && q-p >= 64 {
			if x.Zero[p>>6] != ^uint64(0) {
				return false
			}
			p += 63
			continue
		}
		if !x.zeroPage(p) {
			return false
		}
	}
	return true
}

// ZeroChunks counts the chunks of the index's size that are all zeroes.
func (x *Index) ZeroChunks() int64 {
	var n int64
	for c := range int64(len(x.Sums)) {
		if x.zeroChunk(x.ChunkShift, c) {
			n++
		}
	}
	return n
}

// checkChunk reports whether sum is the checksum of chunk c of chunks of
// 1<<shift bytes; true when the index has chunks of another size.
func (x *Index) checkChunk(shift uint, c int64, sum uint64) bool {
	if shift != x.ChunkShift || c >= int64(len(x.Sums)) {
		return true
	}
	return x.Sums[c] == sum
}

// MarshalBinary encodes the index: magic, size, chunk shift, ETag, the
// zero bitmap, the checksums, and an xxHash of all of it, little-endian.
func (x *Index) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(indexMagic)
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	w(uint64(x.Size))
	w(uint32(x.ChunkShift))
	w(uint32(len(x.ETag)))
	b.WriteString(x.ETag)
	w(uint64(len(x.Zero)))
	w(x.Zero)
	w(uint64(len(x.Sums)))
	w(x.Sums)
	w(xxhash.Sum64(b.Bytes()))
	return b.Bytes(), nil
}

// UnmarshalBinary decodes an index written by MarshalBinary, checking
// every length against the size.
func (x *Index) UnmarshalBinary(data []byte) error {
	bad := func(what string) error { return fmt.Errorf("remote: index: %s", what) }
	if len(data) < len(indexMagic)+8 || string(data[:len(indexMagic)]) != indexMagic {
		return bad("not an index (bad magic)")
	}
	body, sum := data[:len(data)-8], binary.LittleEndian.Uint64(data[len(data)-8:])
	if xxhash.Sum64(body) != sum {
		return bad("checksum mismatch")
	}
	r := body[len(indexMagic):]
	take := func(n int) ([]byte, bool) {
		if n < 0 || len(r) < n {
			return nil, false
		}
		b := r[:n]
		r = r[n:]
		return b, true
	}
	u64 := func() (uint64, bool) {
		b, ok := take(8)
		if !ok {
			return 0, false
		}
		return binary.LittleEndian.Uint64(b), true
	}
	size, ok := u64()
	if !ok || size > 1<<50 {
		return bad("bad size")
	}
	hb, ok := take(8)
	if !ok {
		return bad("truncated")
	}
	shift := binary.LittleEndian.Uint32(hb)
	etagLen := binary.LittleEndian.Uint32(hb[4:])
	if shift < pageShift || shift > 30 {
		return bad(fmt.Sprintf("bad chunk shift %d", shift))
	}
	etag, ok := take(int(etagLen))
	if !ok || etagLen > 1024 {
		return bad("bad ETag")
	}
	x.Size, x.ChunkShift, x.ETag = int64(size), uint(shift), string(etag)
	words := uint64((x.Pages() + 63) / 64)
	chunks := uint64((x.Size + 1<<shift - 1) >> shift)
	read := func(want uint64) ([]uint64, error) {
		n, ok := u64()
		if !ok || n != want {
			return nil, bad("bad table length")
		}
		b, ok := take(int(8 * n))
		if !ok {
			return nil, bad("truncated")
		}
		out := make([]uint64, n)
		for i := range out {
			out[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		return out, nil
	}
	var err error
	if x.Zero, err = read(words); err != nil {
		return err
	}
	if x.Sums, err = read(chunks); err != nil {
		return err
	}
	if len(r) != 0 {
		return bad("trailing bytes")
	}
	return nil
}

// BuildIndex reads size bytes of r in chunks of 1<<shift bytes (workers
// at once) and returns their index. progress, when not nil, is called
// with the bytes read so far.
func BuildIndex(ctx context.Context, r io.ReaderAt, size int64, shift uint, workers int, progress func(int64)) (*Index, error) {
	if shift < pageShift || shift > 30 {
		return nil, fmt.Errorf("remote: index: chunk size %d: want a power of two from 4 KiB to 1 GiB", int64(1)<<shift)
	}
	x := &Index{Size: size, ChunkShift: shift}
	x.Zero = make([]uint64, (x.Pages()+63)/64)
	x.Sums = make([]uint64, (size+1<<shift-1)>>shift)
	if workers <= 0 {
		workers = 4
	}
	var (
		mu    sync.Mutex
		done  int64
		first error
		next  = make(chan int64)
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<shift)
			for c := range next {
				off := c << shift
				n := min(int64(len(buf)), size-off)
				if _, err := r.ReadAt(buf[:n], off); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("remote: index: read at %d: %w", off, err)
					}
					mu.Unlock()
					continue
				}
				x.Sums[c] = xxhash.Sum64(buf[:n])
				mu.Lock()
				for p := int64(0); p < n; p += PageSize {
					if allZero(buf[p:min(p+PageSize, n)]) {
						pg := (off + p) >> pageShift
						x.Zero[pg>>6] |= 1 << (pg & 63)
					}
				}
				done += n
				d := done
				mu.Unlock()
				if progress != nil {
					progress(d)
				}
			}
		}()
	}
	for c := range int64(len(x.Sums)) {
		if ctx.Err() != nil {
			break
		}
		next <- c
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return x, first
}

var zeroPage [PageSize]byte

func allZero(b []byte) bool { return bytes.Equal(b, zeroPage[:len(b)]) }

// WriteIndexFile writes the index of the file at path, in chunks of
// chunkSize bytes (0: DefaultChunkSize), to path + IndexSuffix, so that an
// HTTP server can serve it beside the image.
func WriteIndexFile(ctx context.Context, path string, chunkSize int64) (*Index, error) {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < PageSize || chunkSize&(chunkSize-1) != 0 || chunkSize > 1<<30 {
		return nil, fmt.Errorf("remote: index: chunk size %d: want a power of two from 4 KiB to 1 GiB", chunkSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("remote: index: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("remote: index: %w", err)
	}
	x, err := BuildIndex(ctx, f, st.Size(), uint(bits.TrailingZeros64(uint64(chunkSize))), 4, nil)
	if err != nil {
		return nil, err
	}
	b, _ := x.MarshalBinary()
	if err := os.WriteFile(path+IndexSuffix, b, 0o644); err != nil {
		return nil, fmt.Errorf("remote: index: %w", err)
	}
	return x, nil
}

// ReadIndex reads the index written beside the image at url by Push.
func ReadIndex(ctx context.Context, url string, cfg SourceConfig) (*Index, error) {
	s, err := OpenSource(ctx, IndexURL(url), cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	size := s.Identity().Size
	if size > 256<<20 || size < 16 {
		return nil, fmt.Errorf("remote: index %s: %d bytes", IndexURL(url), size)
	}
	body, err := s.ReadRange(ctx, 0, size)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, err
	}
	x := new(Index)
	if err := x.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("remote: index %s: %w", IndexURL(url), err)
	}
	return x, nil
}
