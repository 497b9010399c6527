package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/cespare/xxhash/v2"
)

// PushConfig configures Push. The zero value is the defaults.
type PushConfig struct {
	// ChunkSize is the index's chunk size (default DefaultChunkSize),
	// which Images opened from the index use.
	ChunkSize int64
	// PartSize is the multipart upload's part size (default 16 MiB,
	// raised to keep within S3's 10,000 parts).
	PartSize int64
	// Concurrency is the number of parts uploaded at once (default 8).
	Concurrency int
	// Progress, when not nil, is called with the bytes uploaded so far
	// and the total, from any goroutine.
	Progress func(done, total int64)
	Source   SourceConfig
}

// Push uploads the memory file at path to url (s3://BUCKET/KEY) in
// parallel parts, then writes its index beside it (IndexURL): which pages
// are all zeroes and a checksum per chunk. The whole file is uploaded,
// zero chunks included, so the object stays a plain memory file any tool
// can read; readers with the index never fetch the zero chunks.
func Push(ctx context.Context, path, url string, cfg PushConfig) (*Index, error) {
	bucket, key, err := ParseS3URL(url)
	if err != nil {
		return nil, err
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.ChunkSize < PageSize || cfg.ChunkSize&(cfg.ChunkSize-1) != 0 || cfg.ChunkSize > 1<<30 {
		return nil, fmt.Errorf("remote: push: chunk size %d: want a power of two from 4 KiB to 1 GiB", cfg.ChunkSize)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("remote: push: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("remote: push: %w", err)
	}
	size := st.Size()
	idx, err := BuildIndex(ctx, f, size, uint(bits.TrailingZeros64(uint64(cfg.ChunkSize))), cfg.Concurrency, nil)
	if err != nil {
		return nil, fmt.Errorf("remote: push %s: %w", path, err)
	}
	cfg.Source.Connections = max(cfg.Source.Connections, cfg.Concurrency+2)
	client, err := NewS3Client(ctx, cfg.Source)
	if err != nil {
		return nil, err
	}
	defer func() {
		if c, ok := client.Options().HTTPClient.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}()
	etag, err := upload(ctx, client, f, size, bucket, key, url, cfg)
	if err != nil {
		return nil, err
	}
	idx.ETag = etag
	b, _ := idx.MarshalBinary()
	err = withRetry(ctx, func() error {
		_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(key + IndexSuffix), Body: bytes.NewReader(b)})
		return err
	})
	if err != nil {
		return nil, s3Error("push index", IndexURL(url), err)
	}
	return idx, nil
}

// withRetry runs fn until it succeeds, fails permanently, or fails
// transiently for more than a minute.
func withRetry(ctx context.Context, fn func() error) error {
	began := time.Now()
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if k := s3Error("", "", err).Kind; k != KindTransient || time.Since(began) > time.Minute {
			return err
		}
		d := min(100*time.Millisecond<<min(attempt, 6), 5*time.Second)
		select {
		case <-time.After(d/2 + rand.N(d)):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func upload(ctx context.Context, client *s3.Client, f *os.File, size int64, bucket, key, url string, cfg PushConfig) (string, error) {
	part := cfg.PartSize
	if part <= 0 {
		part = 16 << 20
	}
	part = max(part, 5<<20, (size+9999)/10000)
	progress := func(n int64) {}
	var done atomic.Int64
	if cfg.Progress != nil {
		cfg.Progress(0, size)
		progress = func(n int64) { cfg.Progress(done.Add(n), size) }
	}
	if size <= part {
		var out *s3.PutObjectOutput
		err := withRetry(ctx, func() (err error) {
			out, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: io.NewSectionReader(f, 0, size), ContentLength: aws.Int64(size)})
			return err
		})
		if err != nil {
			return "", s3Error("push", url, err)
		}
		progress(size)
		return aws.ToString(out.ETag), nil
	}
	cr, err := client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return "", s3Error("push", url, err)
	}
	abort := func() {
		client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: &key, UploadId: cr.UploadId})
	}
	nparts := int((size + part - 1) / part)
	parts := make([]types.CompletedPart, nparts)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				off := int64(i) * part
				n := min(part, size-off)
				var out *s3.UploadPartOutput
				err := withRetry(uctx, func() (err error) {
					out, err = client.UploadPart(uctx, &s3.UploadPartInput{
						Bucket: &bucket, Key: &key, UploadId: cr.UploadId, PartNumber: aws.Int32(int32(i + 1)),
						Body: io.NewSectionReader(f, off, n), ContentLength: aws.Int64(n),
					})
					return err
				})
				if err != nil {
					mu.Lock()
					if first == nil {
						first = s3Error("push", url, fmt.Errorf("part %d: %w", i+1, err))
					}
					mu.Unlock()
					cancel()
					continue
				}
				parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
				progress(n)
			}
		}()
	}
	for i := range nparts {
		if uctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		abort()
		return "", first
	}
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	var out *s3.CompleteMultipartUploadOutput
	err = withRetry(ctx, func() (err error) {
		out, err = client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: &bucket, Key: &key, UploadId: cr.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		return err
	})
	if err != nil {
		abort()
		return "", s3Error("push", url, err)
	}
	return aws.ToString(out.ETag), nil
}

// PullConfig configures Pull. The zero value is the defaults.
type PullConfig struct {
	// Concurrency is the number of range requests in flight (default
	// DefaultConcurrency); ChunkSize their size (default: the index's,
	// or DefaultChunkSize).
	Concurrency int
	ChunkSize   int64
	NoIndex     bool
	Timeouts
	// Progress, when not nil, is called with the bytes done (fetched or
	// known zero) and the total, from any goroutine.
	Progress func(done, total int64)
	Source   SourceConfig
}

// Pull downloads the image at url into the file at path (replacing it
// when complete), in parallel ranges, with the retries of an Image. With
// an index, zero chunks are not fetched (they are holes of the file) and
// every chunk is checked against its checksum.
func Pull(ctx context.Context, url, path string, cfg PullConfig) (Stats, error) {
	var stats counters
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Source.HTTPClient == nil {
		cfg.Source.Connections = max(cfg.Source.Connections, cfg.Concurrency+2)
		cfg.Source.HTTPClient = NewHTTPClient(cfg.Source.Connections)
		defer cfg.Source.HTTPClient.CloseIdleConnections()
	}
	src, err := OpenSource(ctx, url, cfg.Source)
	if err != nil {
		return Stats{}, err
	}
	defer src.Close()
	id := src.Identity()
	var idx *Index
	if !cfg.NoIndex {
		if x, err := ReadIndex(ctx, url, cfg.Source); err == nil && x.Size == id.Size && (x.ETag == "" || id.ETag == "" || x.ETag == id.ETag) {
			idx = x
		} else if err != nil && !errors.Is(err, ErrNotFound) {
			return Stats{}, err
		}
	}
	shift := uint(bits.TrailingZeros64(DefaultChunkSize))
	switch {
	case cfg.ChunkSize != 0:
		if cfg.ChunkSize < PageSize || cfg.ChunkSize&(cfg.ChunkSize-1) != 0 || cfg.ChunkSize > 1<<30 {
			return Stats{}, fmt.Errorf("remote: pull: chunk size %d: want a power of two from 4 KiB to 1 GiB", cfg.ChunkSize)
		}
		shift = uint(bits.TrailingZeros64(uint64(cfg.ChunkSize)))
	case idx != nil:
		shift = idx.ChunkShift
	}
	tmp := path + ".part"
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Stats{}, fmt.Errorf("remote: pull: %w", err)
	}
	defer func() {
		out.Close()
		os.Remove(tmp)
	}()
	if err := out.Truncate(id.Size); err != nil {
		return Stats{}, fmt.Errorf("remote: pull: %w", err)
	}
	r := &retrier{src: src, timeouts: cfg.Timeouts.timeouts(), stats: &stats}
	chunks := (id.Size + 1<<shift - 1) >> shift
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		done  atomic.Int64
		next  = make(chan int64)
	)
	if cfg.Progress != nil {
		cfg.Progress(0, id.Size)
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, flushBytes)
			var sum xxhash.Digest
			for c := range next {
				off := c << shift
				n := min(int64(1)<<shift, id.Size-off)
				if idx == nil || !idx.zeroChunk(shift, c) {
					sum.Reset()
					err := r.read(pctx, off, off+n, buf, nil, func(a, b int64, p []byte) error {
						sum.Write(p)
						if _, err := out.WriteAt(p, a); err != nil {
							return fmt.Errorf("remote: pull: %w", err)
						}
						return nil
					})
					if err == nil && idx != nil && !idx.checkChunk(shift, c, sum.Sum64()) {
						err = &Error{Op: "pull", URL: url, Kind: KindCorrupt, Err: fmt.Errorf("chunk %d does not match the index's checksum", c)}
					}
					if err != nil {
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
						cancel()
						continue
					}
					stats.misses.Add(1)
				}
				if d := done.Add(n); cfg.Progress != nil {
					cfg.Progress(d, id.Size)
				}
			}
		}()
	}
	for c := range chunks {
		if pctx.Err() != nil {
			break
		}
		next <- c
	}
	close(next)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		if errors.Is(first, ErrClosed) && ctx.Err() != nil {
			first = ctx.Err()
		}
		return stats.snapshot(), first
	}
	if err := out.Sync(); err != nil {
		return stats.snapshot(), fmt.Errorf("remote: pull: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return stats.snapshot(), fmt.Errorf("remote: pull: %w", err)
	}
	return stats.snapshot(), nil
}

// Info describes an image (Stat).
type Info struct {
	URL      string
	Identity Identity
	// Index is the image's index, nil when it has none (IndexErr says
	// why, nil when there is simply none).
	Index    *Index
	IndexErr error
}

// Stat opens the image at url and reads its index.
func Stat(ctx context.Context, url string, cfg SourceConfig) (*Info, error) {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = NewHTTPClient(4)
		defer cfg.HTTPClient.CloseIdleConnections()
	}
	src, err := OpenSource(ctx, url, cfg)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	info := &Info{URL: url, Identity: src.Identity()}
	x, err := ReadIndex(ctx, url, cfg)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		info.IndexErr = err
	case x.Size != info.Identity.Size:
		info.IndexErr = fmt.Errorf("remote: index of %d bytes for an image of %d: ignored", x.Size, info.Identity.Size)
	case x.ETag != "" && info.Identity.ETag != "" && x.ETag != info.Identity.ETag:
		info.IndexErr = fmt.Errorf("remote: index of version %s, the image is %s: ignored", x.ETag, info.Identity.ETag)
	default:
		info.Index = x
	}
	return info, nil
}
