//go:build linux

package firecracker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Mapping is one guest memory region as Firecracker describes it to the
// page-fault handler (GuestRegionUffdMapping in src/vmm/src/persist.rs).
// The handshake is a JSON array of them.
//
// The field order is Firecracker's, so that encoding/json produces the same
// bytes as Firecracker's serde_json::to_string.
type Mapping struct {
	// BaseHostVirtAddr is where the region starts in Firecracker's address
	// space.
	BaseHostVirtAddr uint64 `json:"base_host_virt_addr"`
	// Size is the region's length in bytes.
	Size uint64 `json:"size"`
	// Offset is where the region's contents start in the memory file.
	Offset uint64 `json:"offset"`
	// PageSize is the page size of the region in bytes: the base page size,
	// or 2 MiB for hugetlbfs-backed guests.
	PageSize uint64 `json:"page_size"`
	// PageSizeKiB is the deprecated twin of PageSize. Despite its name it
	// holds bytes too: Firecracker sends the same value in both.
	PageSizeKiB uint64 `json:"page_size_kib"`
}

// End returns the first address after the region.
func (m Mapping) End() uint64 { return m.BaseHostVirtAddr + m.Size }

func (m Mapping) String() string {
	return fmt.Sprintf("[%#x, %#x) offset %#x page %d", m.BaseHostVirtAddr, m.End(), m.Offset, m.PageSize)
}

// rawMapping decodes one mapping with every field optional, to tell a
// missing field from a zero.
type rawMapping struct {
	BaseHostVirtAddr *uint64 `json:"base_host_virt_addr"`
	Size             *uint64 `json:"size"`
	Offset           *uint64 `json:"offset"`
	PageSize         *uint64 `json:"page_size"`
	PageSizeKiB      *uint64 `json:"page_size_kib"`
}

// ErrHandshake is matched (errors.Is) by every error that rejects a
// handshake message: bad JSON, missing or wrong descriptors, bad regions.
var ErrHandshake = errors.New("bad handshake")

// HandshakeError says why a handshake was rejected. Reason is a short
// machine-friendly word (it labels the rejection metric); Err the detail.
type HandshakeError struct {
	Reason string
	Err    error
}

func (e *HandshakeError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *HandshakeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrHandshake) true.
func (e *HandshakeError) Is(target error) bool { return target == ErrHandshake }

func reject(reason, format string, args ...any) error {
	return &HandshakeError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Rejection reasons, as HandshakeError.Reason carries them.
const (
	ReasonJSON       = "json"       // not a JSON array of mappings
	ReasonTruncated  = "truncated"  // the peer closed the connection mid-message
	ReasonTooLarge   = "too_large"  // the message exceeds the size limit
	ReasonTimeout    = "timeout"    // the message did not arrive in time
	ReasonFD         = "fd"         // no descriptor, several, or not a userfaultfd
	ReasonRegion     = "region"     // a region is empty, misaligned, overlapping or outside the file
	ReasonPageSize   = "page_size"  // an unknown page size
	ReasonMapping    = "mapping"    // the regions do not match the peer's memory map
	ReasonTrailing   = "trailing"   // bytes after the JSON array
	ReasonPeer       = "peer"       // the peer's credentials cannot be had, or it is gone
	ReasonOverloaded = "overloaded" // too many connections at once
	ReasonInternal   = "internal"   // the daemon failed (not the peer's fault)
	ReasonShutdown   = "shutting_down"
)

// ParseMappings decodes and checks the syntax of a handshake message: a
// JSON array of at least one object, each with base_host_virt_addr, size
// and offset as non-negative integers. page_size and page_size_kib are
// optional (Firecracker before 1.7 sends neither; the base page size is
// then meant), and must agree when both are present. Unknown fields are
// ignored. Trailing bytes other than white space are an error.
//
// ParseMappings does not check the regions against each other or a memory
// file: see Validate.
func ParseMappings(b []byte) ([]Mapping, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw []rawMapping
	if err := dec.Decode(&raw); err != nil {
		return nil, jsonError(err)
	}
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		return nil, reject(ReasonTrailing, "%d unexpected bytes after the mappings (%q)", len(rest), abbreviate(rest))
	}
	return fromRaw(raw)
}

func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return reject(ReasonTruncated, "no message")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return reject(ReasonTruncated, "the message ends in the middle of the JSON array")
	case errors.As(err, &syn):
		return reject(ReasonJSON, "not valid JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return reject(ReasonJSON, "field %s: JSON %s is not a %v", typ.Field, typ.Value, typ.Type)
		}
		return reject(ReasonJSON, "want a JSON array of region objects, got a JSON %s", typ.Value)
	}
	return reject(ReasonJSON, "%v", err)
}

func fromRaw(raw []rawMapping) ([]Mapping, error) {
	if raw == nil {
		return nil, reject(ReasonJSON, "want a JSON array of region objects, got null")
	}
	if len(raw) == 0 {
		return nil, reject(ReasonRegion, "no regions")
	}
	out := make([]Mapping, len(raw))
	for i, r := range raw {
		var missing []string
		if r.BaseHostVirtAddr == nil {
			missing = append(missing, "base_host_virt_addr")
		}
		if r.Size == nil {
			missing = append(missing, "size")
		}
		if r.Offset == nil {
			missing = append(missing, "offset")
		}
		if len(missing) > 0 {
			return nil, reject(ReasonJSON, "region %d: missing %v", i, missing)
		}
		m := Mapping{BaseHostVirtAddr: *r.BaseHostVirtAddr, Size: *r.Size, Offset: *r.Offset}
		switch {
		case r.PageSize != nil && r.PageSizeKiB != nil && *r.PageSize != *r.PageSizeKiB:
			return nil, reject(ReasonPageSize, "region %d: page_size %d and page_size_kib %d disagree (both hold bytes)", i, *r.PageSize, *r.PageSizeKiB)
		case r.PageSize != nil:
			m.PageSize = *r.PageSize
		case r.PageSizeKiB != nil:
			m.PageSize = *r.PageSizeKiB
		default:
			m.PageSize = uint64(os.Getpagesize())
		}
		m.PageSizeKiB = m.PageSize
		out[i] = m
	}
	return out, nil
}

func abbreviate(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// Handshake is what Firecracker sends when it connects: the regions and
// its userfaultfd.
type Handshake struct {
	Mappings []Mapping
	// FD is the userfaultfd received with the message, owned by the caller.
	FD int
	// Bytes is the length of the message.
	Bytes int
}

// DefaultMaxMessage bounds a handshake message: about 8000 regions.
const DefaultMaxMessage = 1 << 20

// ReadHandshake reads one handshake from c, a connection Firecracker made:
// a JSON array of mappings of any length (it may arrive in several reads)
// and exactly one descriptor attached with SCM_RIGHTS. Firecracker keeps
// the connection open and sends nothing after it, so the message ends where
// the JSON array ends. max bounds its length (DefaultMaxMessage when 0); a
// zero deadline means none.
//
// Every descriptor received is closed on error; on success the caller owns
// Handshake.FD. Errors match ErrHandshake, except for I/O errors that are
// the daemon's own.
func ReadHandshake(c *net.UnixConn, max int, deadline time.Time) (*Handshake, error) {
	if max <= 0 {
		max = DefaultMaxMessage
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	r := &fdReader{c: c, max: max, oob: make([]byte, unix.CmsgSpace(4*maxFDs))}
	ms, err := r.decode()
	if err != nil {
		for _, fd := range r.fds {
			unix.Close(fd)
		}
		return nil, err
	}
	return &Handshake{Mappings: ms, FD: r.fds[0], Bytes: r.total}, nil
}

// decode reads and checks one handshake message.
func (r *fdReader) decode() ([]Mapping, error) {
	dec := json.NewDecoder(r)
	var raw []rawMapping
	if err := dec.Decode(&raw); err != nil {
		switch {
		case errors.Is(err, ErrHandshake):
			return nil, err
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, reject(ReasonTimeout, "no complete message within the handshake timeout (%d bytes received)", r.total)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), isSyntaxOrType(err):
			if r.total == 0 && errors.Is(err, io.EOF) {
				return nil, reject(ReasonTruncated, "the peer closed the connection without sending anything")
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, reject(ReasonTruncated, "the peer closed the connection after %d bytes, in the middle of the message", r.total)
			}
			return nil, jsonError(err)
		}
		return nil, reject(ReasonTruncated, "reading the message after %d bytes: %v", r.total, err)
	}
	if !onlySpace(dec.Buffered()) {
		return nil, reject(ReasonTrailing, "unexpected bytes after the mappings")
	}
	if r.err != nil {
		return nil, r.err
	}
	ms, err := fromRaw(raw)
	if err != nil {
		return nil, err
	}
	switch len(r.fds) {
	case 1:
		return ms, nil
	case 0:
		return nil, reject(ReasonFD, "no descriptor came with the message (Firecracker sends its userfaultfd with SCM_RIGHTS)")
	}
	return nil, reject(ReasonFD, "%d descriptors came with the message; want one, the userfaultfd", len(r.fds))
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

// maxFDs is how many descriptors one read accepts before the kernel
// truncates the control message (and closes the rest).
const maxFDs = 8

// fdReader reads a stream socket with recvmsg, collecting the descriptors
// that come with the bytes.
type fdReader struct {
	c     *net.UnixConn
	max   int
	total int
	oob   []byte
	fds   []int
	err   error // a descriptor problem, reported once the bytes decode
}

func (r *fdReader) Read(p []byte) (int, error) {
	if r.total >= r.max {
		return 0, reject(ReasonTooLarge, "the message exceeds %d bytes", r.max)
	}
	if len(p) > r.max-r.total {
		p = p[:r.max-r.total]
	}
	n, oobn, flags, _, err := r.c.ReadMsgUnix(p, r.oob)
	n, oobn = max(n, 0), max(oobn, 0) // -1 with some errors
	r.total += n
	if oobn > 0 {
		r.collect(r.oob[:oobn])
	}
	if flags&unix.MSG_CTRUNC != 0 && r.err == nil {
		r.err = reject(ReasonFD, "more than %d descriptors came with the message", maxFDs)
	}
	if n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (r *fdReader) collect(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		if r.err == nil {
			r.err = reject(ReasonFD, "bad control message: %v", err)
		}
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			// SCM_CREDENTIALS or another kind: not descriptors.
			continue
		}
		r.fds = append(r.fds, fds...)
	}
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
	return sendWithFD(c, b, fd)
}

// sendWithFD writes b with fd attached to its first byte. A stream socket
// may take fewer bytes than asked; the rest follows without descriptors,
// as a blocking sendmsg(2) in Firecracker would send it.
func sendWithFD(c *net.UnixConn, b []byte, fd int) error {
	n, _, err := c.WriteMsgUnix(b, unix.UnixRights(fd), nil)
	if err != nil {
		return err
	}
	if n < len(b) {
		_, err = c.Write(b[n:])
	}
	return err
}
