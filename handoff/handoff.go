package handoff

import (
	"encoding/binary"
	"fmt"
	"strings"
	"syscall"
)

// Cred identifies the process that sent a userfaultfd.
type Cred struct {
	PID int
	UID int
	GID int
}

func (c Cred) String() string { return fmt.Sprintf("pid=%d uid=%d gid=%d", c.PID, c.UID, c.GID) }

// MaxPayload bounds the payload of one message (16 MiB): Receive refuses a
// header announcing more, rather than allocate what a confused peer asks.
const MaxPayload = 16 << 20

// MaxFDs bounds the descriptors of one message: SendFDs refuses more, and
// a receiver reports more as a *ControlError (the kernel closes those that
// did not fit).
const MaxFDs = 8

const (
	magic      = "UFD1"
	headerSize = 8
)

// putHeader writes the header of a payload of size bytes into b.
func putHeader(b []byte, size int) {
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[4:], uint32(size))
}

// parseHeader decodes the header at the start of b and returns the payload
// length it announces.
func parseHeader(b []byte) (int, error) {
	if len(b) < headerSize {
		return 0, fmt.Errorf("%d bytes are shorter than the %d-byte header", len(b), headerSize)
	}
	h := b[:headerSize]
	if string(h[:4]) != magic {
		return 0, fmt.Errorf("not a handoff message (header %q)", h)
	}
	size := binary.LittleEndian.Uint32(h[4:])
	if size > MaxPayload {
		return 0, fmt.Errorf("header announces %d payload bytes, more than MaxPayload (%d)", size, MaxPayload)
	}
	return int(size), nil
}

// Error is an error of Send, Receive or FromPid. It names the operation and
// unwraps to the cause: an errno, a uffd error, io.EOF when the peer closed
// the socket before a message.
type Error struct {
	Op  string // "send", "receive", "pidfd_open", "pidfd_getfd", "adopt"
	Err error
}

func (e *Error) Error() string { return "handoff: " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ControlError reports control data that came with a message and could
// not be taken whole: more descriptors than a read has room for (the
// kernel closed the rest), or a malformed control message.
type ControlError struct{ Err error }

func (e *ControlError) Error() string { return "handoff: control data: " + e.Err.Error() }
func (e *ControlError) Unwrap() error { return e.Err }

// PermissionError reports that the kernel refused to take a descriptor from
// another process (pidfd_getfd(2) failed with EPERM), with what the calling
// process lacks. It matches unix.EPERM and os.ErrPermission.
type PermissionError struct {
	PID int // the target process
	FD  int // the descriptor asked for
	// Reasons lists what this process lacks, as far as it can tell from
	// /proc: credentials that differ, CAP_SYS_PTRACE, a non-dumpable target,
	// the Yama ptrace scope.
	Reasons []string
}

func (e *PermissionError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "handoff: take descriptor %d of process %d: operation not permitted: ", e.FD, e.PID)
	sb.WriteString("the caller needs ptrace attach permission over the process (PTRACE_MODE_ATTACH_REALCREDS): " +
		"its real uid and gid equal to every uid and gid of the process, the process dumpable, and the Yama ptrace scope satisfied; " +
		"or CAP_SYS_PTRACE")
	if len(e.Reasons) > 0 {
		sb.WriteString("; here ")
		sb.WriteString(strings.Join(e.Reasons, "; "))
	}
	return sb.String()
}

func (e *PermissionError) Unwrap() error { return syscall.EPERM }
