package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// httpSource reads an HTTP(S) server's file by ranges.
type httpSource struct {
	url string
	hc  *http.Client
	id  Identity
}

func openHTTP(ctx context.Context, rawurl string, cfg SourceConfig) (Source, error) {
	hc := cfg.HTTPClient
	if hc == nil {
		hc = NewHTTPClient(cfg.Connections)
	}
	s := &httpSource{url: rawurl, hc: hc}
	id, err := s.head(ctx)
	if err != nil {
		return nil, err
	}
	s.id = id
	return s, nil
}

// head fixes the identity: HEAD, or a one-byte GET where HEAD is refused.
func (s *httpSource) head(ctx context.Context) (Identity, error) {
	var id Identity
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, s.url, nil)
	if err != nil {
		return id, &Error{Op: "open", URL: s.url, Kind: KindOther, Err: err}
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return id, &Error{Op: "open", URL: s.url, Kind: netKind(err), Err: err}
	}
	resp.Body.Close()
	size := resp.ContentLength
	if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
		req.Header.Set("Range", "bytes=0-0")
		if resp, err = s.hc.Do(req); err != nil {
			return id, &Error{Op: "open", URL: s.url, Kind: netKind(err), Err: err}
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusPartialContent {
			_, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
			if err != nil {
				return id, &Error{Op: "open", URL: s.url, Kind: KindUnsupported, Status: resp.StatusCode, Err: err}
			}
			size = total
		}
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return id, &Error{Op: "open", URL: s.url, Kind: statusKind(resp.StatusCode), Status: resp.StatusCode, Err: errors.New(http.StatusText(resp.StatusCode))}
	}
	if size < 0 {
		return id, &Error{Op: "open", URL: s.url, Kind: KindUnsupported, Status: resp.StatusCode, Err: errors.New("the server sent no length")}
	}
	if ar := resp.Header.Get("Accept-Ranges"); strings.EqualFold(ar, "none") {
		return id, &Error{Op: "open", URL: s.url, Kind: KindUnsupported, Err: errors.New("the server does not serve byte ranges (Accept-Ranges: none)")}
	}
	id.Size = size
	if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		id.ETag = et
	}
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		id.LastModified = lm
	}
	return id, nil
}

func (s *httpSource) URL() string        { return s.url }
func (s *httpSource) Identity() Identity { return s.id }
func (s *httpSource) Close() error       { s.hc.CloseIdleConnections(); return nil }

func (s *httpSource) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if err := checkRange(s.url, s.id.Size, off, n); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, &Error{Op: "read", URL: s.url, Kind: KindOther, Err: err}
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	// Conditional on the version: If-Match where the server gave a strong
	// ETag, If-Unmodified-Since otherwise (one-second resolution; the
	// size is checked as well).
	if s.id.ETag != "" {
		req.Header.Set("If-Match", s.id.ETag)
	} else if !s.id.LastModified.IsZero() {
		req.Header.Set("If-Unmodified-Since", s.id.LastModified.UTC().Format(http.TimeFormat))
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, &Error{Op: "read", URL: s.url, Kind: netKind(err), Err: err}
	}
	if resp.StatusCode != http.StatusPartialContent {
		resp.Body.Close()
		kind := statusKind(resp.StatusCode)
		msg := http.StatusText(resp.StatusCode)
		switch resp.StatusCode {
		case http.StatusOK:
			kind, msg = KindUnsupported, "the server ignored the Range header"
		case http.StatusNotFound, http.StatusRequestedRangeNotSatisfiable:
			kind, msg = KindChanged, "the object is gone or shorter: "+msg
		}
		return nil, &Error{Op: "read", URL: s.url, Kind: kind, Status: resp.StatusCode, Err: errors.New(msg)}
	}
	first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	switch {
	case err != nil:
		err = &Error{Op: "read", URL: s.url, Kind: KindUnsupported, Status: resp.StatusCode, Err: err}
	case total != s.id.Size:
		err = &Error{Op: "read", URL: s.url, Kind: KindChanged, Err: fmt.Errorf("size is %d, was %d", total, s.id.Size)}
	case s.id.ETag != "" && resp.Header.Get("ETag") != "" && resp.Header.Get("ETag") != s.id.ETag:
		err = &Error{Op: "read", URL: s.url, Kind: KindChanged, Err: fmt.Errorf("ETag is %s, was %s", resp.Header.Get("ETag"), s.id.ETag)}
	case s.id.ETag == "" && !s.id.LastModified.IsZero() && resp.Header.Get("Last-Modified") != "" &&
		resp.Header.Get("Last-Modified") != s.id.LastModified.UTC().Format(http.TimeFormat):
		err = &Error{Op: "read", URL: s.url, Kind: KindChanged, Err: fmt.Errorf("modified %s, was %s", resp.Header.Get("Last-Modified"), s.id.LastModified.UTC().Format(http.TimeFormat))}
	case first != off || last != off+n-1:
		err = &Error{Op: "read", URL: s.url, Kind: KindUnsupported, Err: fmt.Errorf("asked for bytes %d-%d, got %d-%d", off, off+n-1, first, last)}
	}
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return &bodyReader{rc: resp.Body, url: s.url, left: n}, nil
}

// bodyReader turns a body's failures into *Errors and a short body into
// a transient failure.
type bodyReader struct {
	rc   io.ReadCloser
	url  string
	left int64
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	switch {
	case err == io.EOF && b.left > 0:
		return n, &Error{Op: "read", URL: b.url, Kind: KindTransient, Err: io.ErrUnexpectedEOF}
	case err == io.EOF:
		return n, io.EOF
	case err != nil:
		var e *Error
		if errors.As(err, &e) {
			return n, err
		}
		return n, &Error{Op: "read", URL: b.url, Kind: KindTransient, Err: err}
	}
	return n, nil
}

func (b *bodyReader) Close() error { return b.rc.Close() }

func checkRange(url string, size, off, n int64) error {
	if off < 0 || n <= 0 || off+n > size {
		return &Error{Op: "read", URL: url, Kind: KindOther, Err: fmt.Errorf("range [%d, %d) outside the object's %d bytes", off, off+n, size)}
	}
	return nil
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL".
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// statusKind classifies an HTTP status.
func statusKind(status int) Kind {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return KindDenied
	case status == http.StatusNotFound || status == http.StatusGone:
		return KindNotFound
	case status == http.StatusPreconditionFailed:
		return KindChanged
	case status == http.StatusMovedPermanently:
		return KindWrongRegion
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return KindTransient
	}
	return KindOther
}

// netKind classifies a transport error: the caller's cancellation is
// permanent, everything else (resets, refusals, timeouts) transient.
func netKind(err error) Kind {
	if errors.Is(err, context.Canceled) {
		return KindOther
	}
	return KindTransient
}
