package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Source reads byte ranges of one version of an object: an S3 object
// (s3://BUCKET/KEY), a file on an HTTP(S) server that honours Range
// requests, or a local file. The version is fixed when the source is
// opened: every read is conditional on its Identity, and fails with an
// error matching ErrChanged once the object has been replaced.
//
// A Source does not retry; Image and Pull do (see Config).
type Source interface {
	// URL is the object's URL as given to OpenSource.
	URL() string
	// Identity is the version opened.
	Identity() Identity
	// ReadRange returns the bytes [off, off+n) of the version opened,
	// streamed: the reader fails with an error matching ErrChanged if the
	// object changed, and with a transient *Error if the transfer broke.
	ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
	// Close releases the source's connections.
	Close() error
}

// Identity is one version of an object.
type Identity struct {
	Size int64
	// ETag is the entity tag as the server sent it (quotes included), ""
	// when it sent none or only a weak one.
	ETag string
	// VersionID is the S3 version id, "" for an unversioned bucket.
	VersionID string
	// LastModified is the server's modification time, used for
	// conditional reads (If-Unmodified-Since) where there is no ETag.
	LastModified time.Time
}

// Key returns a digest of the identity and url: the name of the version's
// directory in a Cache.
func (id Identity) Key(url string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%s\x00%d", url, id.Size, id.ETag, id.VersionID, id.LastModified.UnixNano())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// String formats the identity for people.
func (id Identity) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d bytes", id.Size)
	if id.ETag != "" {
		fmt.Fprintf(&b, ", ETag %s", id.ETag)
	}
	if id.VersionID != "" {
		fmt.Fprintf(&b, ", version %s", id.VersionID)
	}
	if !id.LastModified.IsZero() {
		fmt.Fprintf(&b, ", modified %s", id.LastModified.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// SourceConfig configures OpenSource. The zero value is the defaults.
type SourceConfig struct {
	// HTTPClient carries the requests of S3 and HTTP sources. nil: one of
	// NewHTTPClient(Connections).
	HTTPClient *http.Client
	// Connections is the number of connections kept alive per server by
	// the default HTTPClient (default 64).
	Connections int
	// S3Endpoint overrides the endpoint of S3 sources (default: the
	// standard AWS configuration, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL).
	// A custom endpoint is addressed path-style (http://host/BUCKET/KEY),
	// as MinIO, Ceph RGW and SeaweedFS expect, unless S3VirtualHosted.
	S3Endpoint      string
	S3VirtualHosted bool
}

// NewHTTPClient returns the HTTP client sources use by default:
// connections kept alive (conns idle per host), HTTP/2 where the server
// offers it over TLS, no transparent decompression (which would break byte
// ranges), and response headers awaited for at most 30 seconds. Requests
// carry their own deadlines.
func NewHTTPClient(conns int) *http.Client {
	if conns <= 0 {
		conns = 64
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4 * conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return &http.Client{Transport: tr}
}

// OpenSource opens the object at rawurl: s3://BUCKET/KEY, http(s)://...,
// file:///PATH or a plain path. It fixes the object's version (a HEAD or
// a stat) and reports permanent failures (no such bucket or object,
// credentials refused, wrong region) as an *Error of their Kind.
func OpenSource(ctx context.Context, rawurl string, cfg SourceConfig) (Source, error) {
	scheme, rest := splitScheme(rawurl)
	switch scheme {
	case "s3":
		return openS3(ctx, rawurl, rest, cfg)
	case "http", "https":
		return openHTTP(ctx, rawurl, cfg)
	case "file":
		u, err := url.Parse(rawurl)
		if err != nil || (u.Host != "" && u.Host != "localhost") {
			return nil, &Error{Op: "open", URL: rawurl, Kind: KindUnsupported, Err: fmt.Errorf("want file:///PATH")}
		}
		return openFile(rawurl, u.Path)
	case "":
		return openFile(rawurl, rawurl)
	}
	return nil, &Error{Op: "open", URL: rawurl, Kind: KindUnsupported, Err: fmt.Errorf("scheme %q: want s3://, http://, https://, file:// or a path", scheme)}
}

// IsURL reports whether s names a remote object (s3://, http://,
// https://) rather than a local file.
func IsURL(s string) bool {
	switch scheme, _ := splitScheme(s); scheme {
	case "s3", "http", "https":
		return true
	}
	return false
}

func splitScheme(s string) (scheme, rest string) {
	i := strings.Index(s, "://")
	if i <= 0 || strings.ContainsAny(s[:i], "/.") {
		return "", s
	}
	return strings.ToLower(s[:i]), s[i+3:]
}

// IndexURL returns the URL of the index written beside the object at url
// by Push.
func IndexURL(url string) string { return url + IndexSuffix }

// IndexSuffix is appended to an image's URL (or key) to name its index.
const IndexSuffix = ".uffd-index"
