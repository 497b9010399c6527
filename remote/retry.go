package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Timeouts bound the requests of Image and Pull. Zero fields are the
// defaults.
type Timeouts struct {
	// RequestTimeout bounds one attempt of a range request (default
	// DefaultRequestTimeout).
	RequestTimeout time.Duration
	// StallTimeout aborts an attempt whose body has brought nothing for
	// that long (default DefaultStallTimeout).
	StallTimeout time.Duration
	// RetryFor is how long a range is retried through transient failures
	// (a server down, resets, 5xx, SlowDown) before its waiters get the
	// error (default DefaultRetryFor).
	RetryFor time.Duration
}

func (t Timeouts) timeouts() Timeouts {
	if t.RequestTimeout <= 0 {
		t.RequestTimeout = DefaultRequestTimeout
	}
	if t.StallTimeout <= 0 {
		t.StallTimeout = DefaultStallTimeout
	}
	if t.RetryFor <= 0 {
		t.RetryFor = DefaultRetryFor
	}
	return t
}

// retrier reads ranges of a source through transient failures.
type retrier struct {
	src      Source
	timeouts Timeouts
	stats    *counters
	logger   *slog.Logger
}

var errStalled = errors.New("no bytes arrived within the stall timeout")

// flushBytes is the batch in which bytes nobody waits for yet are handed
// on, and the size of the buffers requests read into.
const flushBytes = 256 << 10

// read reads [off, end) of the source (off page-aligned) through buf (a
// scratch buffer of at least two pages), calling pages(a, b, p) with the
// bytes [a, b) in p (valid only during the call) as they arrive: a is
// page-aligned, b is page-aligned or end, and the calls follow each other
// in order, each byte delivered once. Transient failures are retried with
// exponential backoff and jitter for up to RetryFor, resuming after the
// last bytes delivered; the backoff starts over after an attempt that
// made progress.
//
// eager, when not nil, says whether someone waits for pages now: then
// pages is called at every page boundary; otherwise bytes are handed on
// in batches of flushBytes (fewer writes and wake-ups), or when buf is
// full.
func (r *retrier) read(ctx context.Context, off, end int64, buf []byte, eager func() bool, pages func(a, b int64, p []byte) error) error {
	began := time.Now()
	attempt := 0
	for pos := off; pos < end; {
		n, err := r.once(ctx, pos, end, buf, eager, pages)
		pos += n
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ErrClosed
		}
		kind := KindOf(err)
		if kind != KindTransient {
			r.stats.errors[kind].Add(1)
			return err
		}
		if n > 0 {
			attempt = 0
		}
		backoff := min(50*time.Millisecond<<min(attempt, 10), 2*time.Second)
		backoff = backoff/2 + rand.N(backoff)
		if time.Since(began)+backoff > r.timeouts.RetryFor {
			r.stats.errors[kind].Add(1)
			return &Error{Op: "read", URL: r.src.URL(), Kind: KindTransient,
				Err: fmt.Errorf("bytes %d-%d: gave up after %v: %w", pos, end-1, time.Since(began).Round(time.Millisecond), err)}
		}
		r.stats.retries.Add(1)
		if attempt == 3 && r.logger != nil {
			r.logger.Warn("retrying", "url", r.src.URL(), "off", pos, "err", err)
		}
		attempt++
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ErrClosed
		}
	}
	return nil
}

// once makes one request for [pos, end) and returns the bytes delivered
// to pages.
func (r *retrier) once(ctx context.Context, pos, end int64, buf []byte, eager func() bool, pages func(a, b int64, p []byte) error) (done int64, err error) {
	actx, cancel := context.WithTimeout(ctx, r.timeouts.RequestTimeout)
	defer cancel()
	var stalled atomic.Bool
	stall := time.AfterFunc(r.timeouts.StallTimeout, func() { stalled.Store(true); cancel() })
	defer stall.Stop()
	r.stats.inFlight.Add(1)
	defer r.stats.inFlight.Add(-1)
	r.stats.requests.Add(1)
	t0 := time.Now()
	defer func() {
		if err != nil && ctx.Err() == nil && actx.Err() != nil {
			why := errStalled
			if !stalled.Load() {
				why = fmt.Errorf("no answer within %v", r.timeouts.RequestTimeout)
			}
			err = &Error{Op: "read", URL: r.src.URL(), Kind: KindTransient, Err: why}
		}
	}()
	body, err := r.src.ReadRange(actx, pos, end-pos)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	size := int64(len(buf))
	del, got := pos, pos // bytes [del, got) are in buf[:got-del]
	for got < end {
		n, rerr := body.Read(buf[got-del : min(size, end-del)])
		if n > 0 {
			stall.Reset(r.timeouts.StallTimeout)
			got += int64(n)
			r.stats.bytes.Add(uint64(n))
		}
		w := got &^ (PageSize - 1)
		switch {
		case got == end:
			w = got
		case rerr != nil:
			w = max(w, del)
		case got-del == size:
			// buf is full: hand on its whole pages.
		case w-del < flushBytes && (eager == nil || !eager()):
			w = del // not yet: batch
		}
		if w > del {
			if err := pages(del, w, buf[:w-del]); err != nil {
				return del - pos, err
			}
			copy(buf, buf[w-del:got-del])
			del = w
		}
		if rerr == io.EOF && got == end {
			break
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = &Error{Op: "read", URL: r.src.URL(), Kind: KindTransient, Err: io.ErrUnexpectedEOF}
			}
			return del - pos, rerr
		}
	}
	observe(&r.stats.latency, time.Since(t0))
	return del - pos, nil
}
