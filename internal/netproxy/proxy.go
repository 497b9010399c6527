// Package netproxy is a TCP proxy for tests, between a client and a
// server on the loopback interface: it adds latency in each direction,
// caps the bandwidth from the server, injects connection resets and
// stalls, refuses connections while "down", and counts bytes and the
// HTTP/1.1 requests that pass (method, path and Range header), to prove
// what a client fetched.
//
// It listens on 127.0.0.1 only, and at most MaxConns connections are
// open at once.
package netproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxConns bounds the connections open at once; more are refused.
const MaxConns = 512

// Request is an HTTP request seen going to the server.
type Request struct {
	Method, Path, Range string
}

// Proxy forwards connections from its address to a target.
type Proxy struct {
	ln     net.Listener
	target string

	latency   atomic.Int64 // one-way, nanoseconds
	bandwidth atomic.Int64 // bytes per second from the server, 0: none
	down      atomic.Bool

	bwMu     sync.Mutex
	bwCursor time.Time

	mu       sync.Mutex
	conns    map[*link]struct{}
	requests []Request
	resetAt  int64 // reset the connection carrying this many more bytes down; 0: none
	stallAt  int64
	stallFor time.Duration

	up, downBytes atomic.Int64
	accepted      atomic.Int64
	wg            sync.WaitGroup
	closed        atomic.Bool
}

// Start listens on 127.0.0.1 (a free port) and forwards to target
// (host:port, which must be a loopback address).
func Start(target string) (*Proxy, error) {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return nil, fmt.Errorf("netproxy: target %q: %w", target, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("netproxy: target %q is not a loopback address", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netproxy: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns http://Addr.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// SetRTT sets the round-trip time added: half of it in each direction.
func (p *Proxy) SetRTT(rtt time.Duration) { p.latency.Store(int64(rtt / 2)) }

// SetBandwidth caps the bytes per second from the server to clients,
// shared by every connection (0: no cap).
func (p *Proxy) SetBandwidth(bytesPerSecond int64) { p.bandwidth.Store(bytesPerSecond) }

// ResetAfter resets the connection that carries the server's n-th byte
// from now (once).
func (p *Proxy) ResetAfter(n int64) {
	p.mu.Lock()
	p.resetAt = max(n, 1)
	p.mu.Unlock()
}

// StallAfter stops the flow of the connection carrying the server's n-th
// byte from now for d (once).
func (p *Proxy) StallAfter(n int64, d time.Duration) {
	p.mu.Lock()
	p.stallAt, p.stallFor = max(n, 1), d
	p.mu.Unlock()
}

// SetDown makes the proxy reset every open connection and refuse new
// ones (down), or accept them again.
func (p *Proxy) SetDown(down bool) {
	p.down.Store(down)
	if down {
		p.ResetAll()
	}
}

// ResetAll resets every open connection.
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
}

// BytesDown and BytesUp count the bytes forwarded from and to the server.
func (p *Proxy) BytesDown() int64 { return p.downBytes.Load() }
func (p *Proxy) BytesUp() int64   { return p.up.Load() }

// Conns counts the connections accepted.
func (p *Proxy) Conns() int64 { return p.accepted.Load() }

// Requests returns the HTTP requests seen so far.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.requests...)
}

// ResetCounts zeroes the byte counts and forgets the requests.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	p.requests = nil
	p.mu.Unlock()
	p.up.Store(0)
	p.downBytes.Store(0)
}

// Close stops listening, resets every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	err := p.ln.Close()
	p.ResetAll()
	p.wg.Wait()
	return err
}

type link struct {
	p            *Proxy
	client, serv net.Conn
	once         sync.Once
}

func (l *link) reset() {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.client, l.serv} {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
		}
	})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		if p.down.Load() || n >= MaxConns {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			c.Close()
			continue
		}
		p.accepted.Add(1)
		l := &link{p: p, client: c, serv: s}
		p.mu.Lock()
		p.conns[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		done := make(chan struct{}, 2)
		go func() { defer p.wg.Done(); p.pipe(l, c, s, true); done <- struct{}{} }()
		go func() { defer p.wg.Done(); p.pipe(l, s, c, false); done <- struct{}{} }()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			<-done
			<-done
			l.reset()
			p.mu.Lock()
			delete(p.conns, l)
			p.mu.Unlock()
		}()
	}
}

type piece struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, delayed by the latency; upstream (client to
// server) is parsed for requests, downstream is shaped and faulted.
func (p *Proxy) pipe(l *link, src, dst net.Conn, upstream bool) {
	q := make(chan piece, 256)
	go func() {
		defer close(q)
		var parser *reqParser
		if upstream {
			parser = &reqParser{p: p}
		}
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				if parser != nil {
					parser.feed(b[:n])
				}
				q <- piece{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		for range q {
		}
	}()
	for pc := range q {
		if d := time.Duration(p.latency.Load()); d > 0 {
			time.Sleep(time.Until(pc.at.Add(d)))
		}
		b := pc.b
		for len(b) > 0 {
			n := len(b)
			if !upstream {
				if p.bandwidth.Load() > 0 {
					n = min(n, 4<<10) // a smooth cap
				}
				if !p.downstreamFaults(l, int64(n)) {
					return
				}
				p.shape(n)
			}
			if _, err := dst.Write(b[:n]); err != nil {
				l.reset()
				return
			}
			if upstream {
				p.up.Add(int64(n))
			} else {
				p.downBytes.Add(int64(n))
			}
			b = b[n:]
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// downstreamFaults applies a pending reset or stall to these n bytes; it
// returns false when the link was reset.
func (p *Proxy) downstreamFaults(l *link, n int64) bool {
	p.mu.Lock()
	var reset bool
	var stall time.Duration
	if p.resetAt > 0 {
		if p.resetAt -= n; p.resetAt <= 0 {
			p.resetAt, reset = 0, true
		}
	}
	if p.stallAt > 0 {
		if p.stallAt -= n; p.stallAt <= 0 {
			p.stallAt, stall = 0, p.stallFor
		}
	}
	p.mu.Unlock()
	if reset || p.down.Load() {
		l.reset()
		return false
	}
	if stall > 0 {
		time.Sleep(stall)
	}
	return true
}

// bwBurst is how far the bandwidth cap's schedule may fall behind.
const bwBurst = 2 * time.Millisecond

// shape waits for n bytes' turn under the bandwidth cap.
func (p *Proxy) shape(n int) {
	bw := p.bandwidth.Load()
	if bw <= 0 {
		return
	}
	p.bwMu.Lock()
	now := time.Now()
	// The cursor may lag behind now by a burst: the time a sender lost
	// waking up late is made up by the next pieces, so that the rate
	// holds at the cap on a loaded machine.
	if floor := now.Add(-bwBurst); p.bwCursor.Before(floor) {
		p.bwCursor = floor
	}
	p.bwCursor = p.bwCursor.Add(time.Duration(float64(n) / float64(bw) * float64(time.Second)))
	until := p.bwCursor
	p.bwMu.Unlock()
	time.Sleep(time.Until(until))
}

// reqParser follows an HTTP/1.1 request stream: request line, headers,
// a Content-Length body. It gives up (quietly) on anything else.
type reqParser struct {
	p       *Proxy
	buf     []byte
	skip    int64
	stopped bool
}

func (r *reqParser) feed(b []byte) {
	if r.stopped {
		return
	}
	for len(b) > 0 {
		if r.skip > 0 {
			n := min(int64(len(b)), r.skip)
			r.skip -= n
			b = b[n:]
			continue
		}
		r.buf = append(r.buf, b...)
		b = nil
		i := bytes.Index(r.buf, []byte("\r\n\r\n"))
		if i < 0 {
			if len(r.buf) > 64<<10 {
				r.stopped = true
			}
			return
		}
		head, rest := r.buf[:i+4], r.buf[i+4:]
		req, err := readRequest(head)
		if err != nil {
			r.stopped = true
			return
		}
		r.p.mu.Lock()
		r.p.requests = append(r.p.requests, req.r)
		r.p.mu.Unlock()
		r.skip = req.length
		b = append([]byte(nil), rest...)
		r.buf = r.buf[:0]
	}
}

type parsed struct {
	r      Request
	length int64
}

func readRequest(head []byte) (parsed, error) {
	var out parsed
	br := bufio.NewReader(bytes.NewReader(head))
	line, err := br.ReadString('\n')
	if err != nil {
		return out, err
	}
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/1.") {
		return out, errors.New("not HTTP/1.x")
	}
	out.r.Method, out.r.Path = f[0], f[1]
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				break
			}
			return out, err
		}
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "range":
			out.r.Range = v
		case "content-length":
			if out.length, err = strconv.ParseInt(v, 10, 64); err != nil {
				return out, err
			}
		case "transfer-encoding":
			return out, errors.New("chunked request bodies are not followed")
		}
	}
	return out, nil
}
