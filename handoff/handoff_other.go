//go:build !linux

package handoff

import (
	"net"
	"runtime"

	"github.com/gouffd/uffd"
)

var errNotLinux = &uffd.NotSupportedError{What: "userfaultfd handoff", OS: runtime.GOOS}

// Send fails outside Linux with an error matching uffd.ErrNotSupported.
func Send(conn *net.UnixConn, u *uffd.UFFD, payload []byte) error {
	return &Error{Op: "send", Err: errNotLinux}
}

// Receive fails outside Linux with an error matching uffd.ErrNotSupported.
func Receive(conn *net.UnixConn, features uffd.Feature) (*uffd.UFFD, []byte, Cred, error) {
	return nil, nil, Cred{}, &Error{Op: "receive", Err: errNotLinux}
}

// FromPid fails outside Linux with an error matching uffd.ErrNotSupported.
func FromPid(pid, fd int, features uffd.Feature) (*uffd.UFFD, error) {
	return nil, &Error{Op: "pidfd_getfd", Err: errNotLinux}
}

// SendFDs fails outside Linux with an error matching uffd.ErrNotSupported.
func SendFDs(conn *net.UnixConn, payload []byte, fds ...int) error {
	return &Error{Op: "send", Err: errNotLinux}
}

// WriteFDs fails outside Linux with an error matching uffd.ErrNotSupported.
func WriteFDs(conn *net.UnixConn, b []byte, fds ...int) error {
	return &Error{Op: "send", Err: errNotLinux}
}

// ReceiveFDs fails outside Linux with an error matching uffd.ErrNotSupported.
func ReceiveFDs(conn *net.UnixConn) ([]byte, []int, Cred, error) {
	return nil, nil, Cred{}, &Error{Op: "receive", Err: errNotLinux}
}

// PeerCred fails outside Linux with an error matching uffd.ErrNotSupported.
func PeerCred(conn *net.UnixConn) (Cred, error) { return Cred{}, errNotLinux }

// Reader reads nothing outside Linux.
type Reader struct{}

// NewReader returns a Reader whose reads fail outside Linux.
func NewReader(conn *net.UnixConn) *Reader { return &Reader{} }

// Read fails outside Linux with an error matching uffd.ErrNotSupported.
func (r *Reader) Read(p []byte) (int, error) { return 0, &Error{Op: "receive", Err: errNotLinux} }

// FDs returns nothing outside Linux.
func (r *Reader) FDs() []int { return nil }

// CloseFDs does nothing outside Linux.
func (r *Reader) CloseFDs() {}

// Cred returns nothing outside Linux.
func (r *Reader) Cred() (Cred, bool) { return Cred{}, false }
