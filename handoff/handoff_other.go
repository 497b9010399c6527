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
