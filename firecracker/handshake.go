//go:build linux

package firecracker

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/gouffd/uffd/handoff"
)

// Handshake is what Firecracker sends when it connects: the regions and
// its userfaultfd.
type Handshake struct {
	Mappings []Mapping
	// FD is the userfaultfd received with the message, owned by the caller.
	FD int
	// Bytes is the length of the message.
	Bytes int
}

// DefaultMaxMessage bounds a handshake message (1 MiB): enough for
// MaxRegions regions of about 120 bytes each, twice over.
const DefaultMaxMessage = 1 << 20

// ErrNoMessage is returned by ReadHandshake when the peer closed the
// connection without sending a byte: not a bad handshake (it does not
// match ErrHandshake) but a connection that wanted none, such as a probe
// of whether something listens on the socket.
var ErrNoMessage = errors.New("the peer closed the connection without sending anything")

// ReadHandshake reads one handshake from c, a connection Firecracker made:
// a JSON array of mappings of any length (it may arrive in several reads)
// and exactly one descriptor attached with SCM_RIGHTS. Firecracker keeps
// the connection open and sends nothing after it, so the message ends where
// the JSON array ends. max bounds its length (DefaultMaxMessage when 0); a
// zero deadline means none.
//
// Every descriptor received is closed on error; on success the caller owns
// Handshake.FD. Errors match ErrHandshake, except ErrNoMessage and I/O
// errors of this side's own.
func ReadHandshake(c *net.UnixConn, max int, deadline time.Time) (*Handshake, error) {
	if max <= 0 {
		max = DefaultMaxMessage
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	r := &limitReader{r: handoff.NewReader(c), max: max}
	ms, err := r.decode()
	if err != nil {
		r.r.CloseFDs()
		return nil, err
	}
	return &Handshake{Mappings: ms, FD: r.r.FDs()[0], Bytes: r.total}, nil
}

// limitReader counts and bounds the bytes of a message.
type limitReader struct {
	r     *handoff.Reader
	max   int
	total int
	ctl   error // a descriptor problem, reported once the bytes decode
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.total >= l.max {
		return 0, reject(ReasonTooLarge, "the message exceeds %d bytes", l.max)
	}
	if len(p) > l.max-l.total {
		p = p[:l.max-l.total]
	}
	n, err := l.r.Read(p)
	l.total += n
	var ce *handoff.ControlError
	if errors.As(err, &ce) {
		if l.ctl == nil {
			l.ctl = reject(ReasonFD, "%v", ce.Err)
		}
		err = nil
		if n == 0 {
			// Control data with no bytes: read on.
			return l.Read(p)
		}
	}
	return n, err
}

// decode reads and checks one handshake message.
func (l *limitReader) decode() ([]Mapping, error) {
	dec := json.NewDecoder(l)
	var raw []rawMapping
	if err := dec.Decode(&raw); err != nil {
		switch {
		case errors.Is(err, ErrHandshake):
			return nil, err
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, reject(ReasonTimeout, "no complete message within the handshake timeout (%d bytes received)", l.total)
		case l.total == 0 && errors.Is(err, io.EOF) && len(l.r.FDs()) == 0:
			return nil, ErrNoMessage
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil, reject(ReasonTruncated, "the peer closed the connection after %d bytes, in the middle of the message", l.total)
		case isSyntaxOrType(err):
			return nil, jsonError(err)
		}
		return nil, reject(ReasonTruncated, "reading the message after %d bytes: %v", l.total, err)
	}
	if !onlySpace(dec.Buffered()) {
		return nil, reject(ReasonTrailing, "unexpected bytes after the mappings")
	}
	if l.ctl != nil {
		return nil, l.ctl
	}
	ms, err := fromRaw(raw)
	if err != nil {
		return nil, err
	}
	switch n := len(l.r.FDs()); n {
	case 1:
		return ms, nil
	case 0:
		return nil, reject(ReasonFD, "no descriptor came with the message (Firecracker sends its userfaultfd with SCM_RIGHTS)")
	default:
		return nil, reject(ReasonFD, "%d descriptors came with the message; want one, the userfaultfd", n)
	}
}

func isSyntaxOrType(err error) bool {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	return errors.As(err, &syn) || errors.As(err, &typ)
}

func onlySpace(r io.Reader) bool {
	b, _ := io.ReadAll(r)
	return len(bytes.TrimSpace(b)) == 0
}

// SendHandshake sends a handshake as Firecracker does: the mappings
// encoded as one compact JSON array, written with a single sendmsg(2) that
// carries fd (the userfaultfd) as SCM_RIGHTS. It does not close c:
// Firecracker keeps the connection open for the life of the VM, and the
// handler takes its closing as the VM's exit.
func SendHandshake(c *net.UnixConn, ms []Mapping, fd int) error {
	b, err := json.Marshal(ms)
	if err != nil {
		return err
	}
	return handoff.WriteFDs(c, b, fd)
}
