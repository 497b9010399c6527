// Package remote serves memory images from object storage and HTTP
// servers: the sources of page contents behind faults when the memory
// file is not on the host.
//
//	cache, _ := remote.OpenCache("/var/cache/uffd", 64<<30)
//	im, err := remote.Open(ctx, "s3://snapshots/vm1.mem", remote.Config{Cache: cache})
//	if err != nil {
//		log.Fatal(err) // no such bucket or key, credentials refused, wrong region
//	}
//	defer im.Close()
//	st := im.State() // the mapped cache: Data, Present, Zero, Pins
//	im.Fetch(off, 4096, true, func(off, n int64, err error) {
//		// [off, off+n) is in st.Data (or err says why it never will be)
//	})
//
// # Sources
//
// OpenSource reads byte ranges of one version of an object: s3://BUCKET/KEY
// (aws-sdk-go-v2, configured the standard AWS way: credentials, profile,
// AWS_REGION (us-east-1 when none is set), AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL for S3-compatible stores such as MinIO, Ceph RGW,
// SeaweedFS or R2, addressed path-style), http(s):// servers that honour
// Range requests (connections kept alive, HTTP/2 where offered), and local
// files. The version (size, ETag or S3 version id, modification time) is
// fixed at open, and every range request is conditional on it (If-Match,
// or If-Unmodified-Since without a strong ETag): a replaced object fails
// with ErrChanged and is never mixed with the version opened.
//
// Failures are *Error values of a Kind. Permanent ones (ErrNotFound,
// ErrDenied, ErrWrongRegion) are reported by Open. Transient ones (5xx,
// 503 SlowDown, resets, timeouts, a body that stalls) are retried with
// exponential backoff and jitter for Timeouts.RetryFor (10 minutes by
// default), resuming after the bytes already received: with the server
// down, requests wait and complete once it is back. Nothing is ever
// delivered as zeroes in place of data.
//
// # The cache
//
// A Cache is a directory shared by the handler processes of a host. Each
// image version has a sparse data file mapped MAP_SHARED, and a state file
// (presence bitmap, pin counts, chunk states, checksums, last use) mapped
// by every process using it. A chunk is fetched once per host: goroutines
// asking for it are coalesced, and processes coordinate with
// open-file-description locks (one byte per chunk), a process finding a
// chunk locked delivering its pages as the fetching process's bytes land.
// Pages are delivered as they arrive, before their chunk is complete, and
// a fault's request starts at its page. The cache survives restarts: the
// first process to open a version after all had left drops half-fetched
// chunks and checks complete ones against their recorded checksums and
// the index's. With a size limit, the chunks used longest ago (of any
// version) are evicted by the protocol of pager.CacheState.
//
// # Fetching
//
// A fault's request (urgent) starts at once, at its page, and the page is
// handed on as soon as its bytes are in the cache; background requests
// (prefault, replay, readahead) use the rest of Config.Concurrency, a
// quarter of which is kept for urgent ones. Requests that follow each
// other through consecutive chunks make a stream, and the chunks ahead of
// it are fetched in the background, in order, as far ahead as it has read
// (Config.ReadAhead bounds it): a guest reading its memory in order gets
// it at the rate of a parallel download, while what readahead fetches and
// nobody reads stays within what was read in order.
//
// # Images and their index
//
// Push uploads a memory file with an Index beside it (IndexURL): a bitmap
// of the pages that are all zeroes and a checksum per chunk. Zero chunks
// are uploaded (the object stays a plain memory file) but never fetched:
// the cache marks them present as holes, and pager.CacheState.Zero lets the
// pager install zero pages with UFFDIO_ZEROPAGE. Images without an index
// work as well. Pull downloads an image in parallel; Stat describes one.
//
// Metrics: Image.Stats, exported to Prometheus by remote/metrics.
package remote

import "time"

// PageSize is the unit of presence: the Present and Zero bitmaps have one
// bit per PageSize bytes of an image.
const PageSize = 4096

const pageShift = 12

// Defaults of Config and PullConfig.
const (
	// DefaultChunkSize is the unit of fetching and caching when the
	// image's index does not set one (chosen by measurement: see the
	// README).
	DefaultChunkSize      = 4 << 20
	DefaultConcurrency    = 16
	DefaultReadAhead      = 1 << 30
	DefaultRequestTimeout = 2 * time.Minute
	DefaultStallTimeout   = 10 * time.Second
	DefaultRetryFor       = 10 * time.Minute
)
