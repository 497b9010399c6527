package handoff

import (
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

const (
	magic      = "UFD1"
	headerSize = 8
)

// Error is an error of Send, Receive or FromPid. It names the operation and
// unwraps to the cause: an errno, a uffd error, io.EOF when the peer closed
// the socket before a message.
type Error struct {
	Op  string // "send", "receive", "pidfd_open", "pidfd_getfd", "adopt"
	Err error
}

func (e *Error) Error() string { return "handoff: " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

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
