package handoff

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
)

// Send sends u and payload over conn, a connected UNIX domain socket, with
// this process's credentials. The caller keeps its own u: both processes
// then hold the userfaultfd.
func Send(conn *net.UnixConn, u *uffd.UFFD, payload []byte) error {
	rc, err := u.SyscallConn()
	if err != nil {
		return &Error{Op: "send", Err: err}
	}
	var serr error
	// Control keeps the descriptor's number valid (not closed, not
	// reused) while the kernel takes its reference.
	if err := rc.Control(func(fd uintptr) { serr = SendFDs(conn, payload, int(fd)) }); err != nil {
		return &Error{Op: "send", Err: err}
	}
	return serr
}

// SendFDs sends one message of payload with the descriptors fds (any
// number up to MaxFDs, none included) and this process's credentials, in
// the format Send uses: the framing of package handoff for messages of
// one's own that carry descriptors. The caller keeps its descriptors.
func SendFDs(conn *net.UnixConn, payload []byte, fds ...int) error {
	const op = "send"
	if len(payload) > MaxPayload {
		return &Error{Op: op, Err: fmt.Errorf("payload of %d bytes exceeds MaxPayload (%d)", len(payload), MaxPayload)}
	}
	if len(fds) > MaxFDs {
		return &Error{Op: op, Err: fmt.Errorf("%d descriptors; at most MaxFDs (%d) travel in one message", len(fds), MaxFDs)}
	}
	msg := make([]byte, headerSize+len(payload))
	putHeader(msg, len(payload))
	copy(msg[headerSize:], payload)
	// Explicit credentials: the kernel checks them and attaches them
	// whether or not the receiver had SO_PASSCRED on when this was sent.
	oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
	if len(fds) > 0 {
		oob = append(unix.UnixRights(fds...), oob...)
	}
	if err := writeMsg(conn, msg, oob); err != nil {
		return &Error{Op: op, Err: err}
	}
	return nil
}

// WriteFDs writes b on conn with fds attached to its first byte
// (SCM_RIGHTS), with one sendmsg(2) and no framing of its own: for wire
// formats fixed by another program, such as Firecracker's handshake. On a
// stream socket, what the kernel did not take in that call follows
// without descriptors, as a blocking sendmsg(2) would send it. The caller
// keeps its descriptors.
func WriteFDs(conn *net.UnixConn, b []byte, fds ...int) error {
	if len(fds) > MaxFDs {
		return &Error{Op: "send", Err: fmt.Errorf("%d descriptors; at most MaxFDs (%d) travel in one message", len(fds), MaxFDs)}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := writeMsg(conn, b, oob); err != nil {
		return &Error{Op: "send", Err: err}
	}
	return nil
}

// writeMsg writes b with the control data oob on its first byte.
func writeMsg(conn *net.UnixConn, b, oob []byte) error {
	n, _, err := conn.WriteMsgUnix(b, oob, nil)
	if err == nil && n < len(b) {
		// A stream socket took part of a large message; the control
		// data went with the first byte.
		_, err = conn.Write(b[n:])
	}
	return err
}

// Receive reads one message that Send wrote on conn and adopts its
// userfaultfd with uffd.FromFD(fd, features): features must be a subset of
// what the sender's handshake enabled (or, if the sender did no handshake,
// what to enable). It returns the payload, of any length up to MaxPayload,
// and the sender's credentials: those the kernel attached to the message
// (SCM_CREDENTIALS, checked by the kernel at send time) or, for a sender
// that attached none, the peer's credentials from when the socket was
// connected (SO_PEERCRED).
//
// A message with no descriptor, with several, or whose descriptor is not a
// userfaultfd is an error; every descriptor received is closed then.
func Receive(conn *net.UnixConn, features uffd.Feature) (*uffd.UFFD, []byte, Cred, error) {
	payload, fds, cred, err := ReceiveFDs(conn)
	if err != nil {
		return nil, nil, Cred{}, err
	}
	if len(fds) != 1 {
		closeAll(fds)
		if len(fds) == 0 {
			err = errors.New("the message carried no descriptor")
		} else {
			err = fmt.Errorf("the message carried %d descriptors, want one", len(fds))
		}
		return nil, nil, Cred{}, &Error{Op: "receive", Err: err}
	}
	u, err := uffd.FromFD(fds[0], features)
	if err != nil {
		return nil, nil, Cred{}, &Error{Op: "adopt", Err: err}
	}
	return u, payload, cred, nil
}

// ReceiveFDs reads one message that SendFDs (or Send) wrote on conn and
// returns its payload, the descriptors that came with it, owned by the
// caller, and the sender's credentials (as Receive finds them). On error
// every descriptor received is closed.
func ReceiveFDs(conn *net.UnixConn) ([]byte, []int, Cred, error) {
	const op = "receive"
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, nil, Cred{}, &Error{Op: op, Err: err}
	}
	var sotype int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1); serr != nil {
			return
		}
		sotype, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	}); err != nil {
		return nil, nil, Cred{}, &Error{Op: op, Err: err}
	}
	if serr != nil {
		return nil, nil, Cred{}, &Error{Op: op, Err: os.NewSyscallError("setsockopt", serr)}
	}
	r := NewReader(conn)
	var payload []byte
	if sotype == unix.SOCK_STREAM {
		payload, err = r.stream()
	} else {
		payload, err = r.packet(rc)
	}
	if err != nil {
		r.CloseFDs()
		return nil, nil, Cred{}, &Error{Op: op, Err: err}
	}
	cred, ok := r.Cred()
	if !ok {
		if cred, err = PeerCred(conn); err != nil {
			r.CloseFDs()
			return nil, nil, Cred{}, &Error{Op: op, Err: err}
		}
	}
	return payload, r.FDs(), cred, nil
}

// PeerCred returns the credentials of the process at the other end of
// conn, as they were when it connected (SO_PEERCRED).
func PeerCred(conn *net.UnixConn) (Cred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	var c Cred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var uc *unix.Ucred
		if uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); serr == nil {
			c = Cred{PID: int(uc.Pid), UID: int(uc.Uid), GID: int(uc.Gid)}
		}
	}); err != nil {
		return Cred{}, err
	}
	if serr != nil {
		return Cred{}, os.NewSyscallError("getsockopt SO_PEERCRED", serr)
	}
	return c, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// oobSize holds MaxFDs descriptors and one set of credentials: more
// control data than that is truncated by the kernel (MSG_CTRUNC), which
// closes the descriptors that did not fit.
var oobSize = unix.CmsgSpace(4*MaxFDs) + unix.CmsgSpace(unix.SizeofUcred)

// Reader reads a UNIX domain socket with recvmsg(2) and keeps what comes
// with the bytes: the descriptors (SCM_RIGHTS) and the sender's
// credentials (SCM_CREDENTIALS, when the socket has SO_PASSCRED on). It is
// the primitive under Receive, for wire formats with a framing of their
// own: Firecracker's handshake, a JSON document with a descriptor on its
// first byte, is read through it.
//
// The descriptors received belong to the caller (FDs, CloseFDs); the
// Reader never closes them. A Reader reads a stream socket (each Read may
// return part of a message); it is not safe for concurrent use.
type Reader struct {
	conn     *net.UnixConn
	fds      []int
	cred     Cred
	haveCred bool
	oob      []byte
}

// NewReader returns a Reader of conn.
func NewReader(conn *net.UnixConn) *Reader {
	return &Reader{conn: conn, oob: make([]byte, oobSize)}
}

// Read reads into p with one recvmsg(2), as io.Reader does (conn's
// deadlines apply), collecting the control data that came with the bytes.
// It returns io.EOF when the peer closed the connection. Control data that
// could not be taken whole (more than MaxFDs descriptors, or malformed) is
// an error of type *ControlError, returned with the bytes it came with.
func (r *Reader) Read(p []byte) (int, error) {
	n, flags, err := r.readMsg(p)
	if n == 0 && err == nil && len(p) > 0 && flags&unix.MSG_CTRUNC == 0 {
		err = io.EOF
	}
	return n, err
}

// FDs returns the descriptors received so far, in order. They are the
// caller's to close.
func (r *Reader) FDs() []int { return r.fds }

// CloseFDs closes the descriptors received so far and forgets them.
func (r *Reader) CloseFDs() {
	closeAll(r.fds)
	r.fds = nil
}

// Cred returns the first credentials a sender attached, and whether any
// came (the socket needs SO_PASSCRED for the kernel to pass them).
func (r *Reader) Cred() (Cred, bool) { return r.cred, r.haveCred }

// readMsg reads into b, collecting descriptors and credentials.
func (r *Reader) readMsg(b []byte) (int, int, error) {
	n, oobn, flags, _, err := r.conn.ReadMsgUnix(b, r.oob)
	n, oobn = max(n, 0), max(oobn, 0) // -1 with some errors
	if errors.Is(err, io.EOF) {
		err = io.EOF // as io.Reader says, not wrapped
	}
	had := len(r.fds)
	if oobn > 0 {
		if perr := r.parse(r.oob[:oobn]); perr != nil && err == nil {
			err = &ControlError{Err: perr}
		}
	}
	if err == nil && (flags&unix.MSG_CTRUNC != 0 || len(r.fds)-had > MaxFDs) {
		err = &ControlError{Err: fmt.Errorf("more than %d descriptors came with one message (the kernel closes those that do not fit)", MaxFDs)}
	}
	return n, flags, err
}

// parse takes the descriptors and credentials out of control data. It is
// the project's one parser of SCM_RIGHTS.
func (r *Reader) parse(oob []byte) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return err
	}
	var bad error
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(m)
			if err != nil {
				bad = cmp(bad, fmt.Errorf("SCM_RIGHTS: %w", err))
				continue
			}
			r.fds = append(r.fds, fds...)
		case unix.SCM_CREDENTIALS:
			uc, err := unix.ParseUnixCredentials(m)
			if err != nil {
				bad = cmp(bad, fmt.Errorf("SCM_CREDENTIALS: %w", err))
				continue
			}
			// pid 0: the sender attached none and the kernel filled in
			// placeholders; SO_PEERCRED is better than that.
			if uc.Pid != 0 && !r.haveCred {
				r.cred = Cred{PID: int(uc.Pid), UID: int(uc.Uid), GID: int(uc.Gid)}
				r.haveCred = true
			}
		}
	}
	return bad
}

// cmp keeps the first error.
func cmp(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// stream reads the header, then the payload it announces.
func (r *Reader) stream() ([]byte, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size, err := parseHeader(hdr[:])
	if err != nil {
		return nil, err
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("payload of %d bytes: %w", size, err)
	}
	return payload, nil
}

// packet learns the size of the next packet, then reads all of it.
func (r *Reader) packet(rc syscall.RawConn) ([]byte, error) {
	var size int
	var perr error
	var one [1]byte
	if err := rc.Read(func(fd uintptr) bool {
		// No control buffer: peeking leaves the descriptors queued.
		size, _, _, _, perr = unix.Recvmsg(int(fd), one[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		return perr != unix.EAGAIN
	}); err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, os.NewSyscallError("recvmsg", perr)
	}
	if size == 0 {
		// A zero-length packet (or end of file on a seqpacket socket):
		// consume it, with whatever it carried.
		if _, _, err := r.readMsg(one[:]); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	buf := make([]byte, size)
	n, flags, err := r.readMsg(buf)
	if err != nil {
		return nil, err
	}
	if flags&unix.MSG_TRUNC != 0 || n != size {
		return nil, fmt.Errorf("packet of %d bytes read as %d", size, n)
	}
	want, err := parseHeader(buf)
	if err != nil {
		return nil, err
	}
	if want != n-headerSize {
		return nil, fmt.Errorf("header announces %d payload bytes, the packet holds %d", want, n-headerSize)
	}
	return buf[headerSize:], nil
}

// FromPid takes descriptor fd of process pid, which must be a userfaultfd,
// with pidfd_open(2) and pidfd_getfd(2), and adopts it with
// uffd.FromFD(fd, features). The new descriptor refers to the same
// userfaultfd, which keeps serving the memory of the process that created
// it.
//
// The kernel allows this only to a caller that may ptrace the process
// (PTRACE_MODE_ATTACH_REALCREDS): the caller's real uid and gid equal to all
// of the process's uids and gids, the process dumpable, and the Yama ptrace
// scope satisfied (at scope 1, only an ancestor); or CAP_SYS_PTRACE. When
// it refuses, the error is a *PermissionError saying which of those this
// process lacks.
func FromPid(pid, fd int, features uffd.Feature) (*uffd.UFFD, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, &Error{Op: "pidfd_open", Err: pidfdOpenError(pid, err)}
	}
	defer unix.Close(pidfd)
	nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		if err == unix.EPERM {
			return nil, &PermissionError{PID: pid, FD: fd, Reasons: ptraceReasons(pid)}
		}
		return nil, &Error{Op: "pidfd_getfd", Err: pidfdGetfdError(pid, fd, err)}
	}
	u, err := uffd.FromFD(nfd, features)
	if err != nil {
		return nil, &Error{Op: "adopt", Err: fmt.Errorf("descriptor %d of process %d: %w", fd, pid, err)}
	}
	return u, nil
}

func pidfdOpenError(pid int, err error) error {
	switch err {
	case unix.ESRCH:
		return fmt.Errorf("no process %d: %w", pid, err)
	case unix.EINVAL:
		return fmt.Errorf("%d is not the id of a process (a thread's id?): %w", pid, err)
	case unix.ENOSYS:
		return &uffd.NotSupportedError{What: "pidfd_open(2) (Linux 5.3)"}
	}
	return err
}

func pidfdGetfdError(pid, fd int, err error) error {
	switch err {
	case unix.EBADF:
		return fmt.Errorf("process %d has no descriptor %d: %w", pid, fd, err)
	case unix.ESRCH:
		return fmt.Errorf("process %d has exited: %w", pid, err)
	case unix.ENOSYS:
		return &uffd.NotSupportedError{What: "pidfd_getfd(2) (Linux 5.6)"}
	}
	return err
}

// capSysPtrace is CAP_SYS_PTRACE's bit in the capability sets.
const capSysPtrace = 19

// ptraceReasons explains, from /proc, why this process may not ptrace pid.
func ptraceReasons(pid int) []string {
	self, err1 := readStatus("/proc/self/status")
	target, err2 := readStatus("/proc/" + strconv.Itoa(pid) + "/status")
	if err1 != nil || err2 != nil {
		return []string{fmt.Sprintf("the credentials could not be compared: %v", errors.Join(err1, err2))}
	}
	var reasons []string
	capEff, _ := strconv.ParseUint(self["CapEff"], 16, 64)
	if capEff&(1<<capSysPtrace) == 0 {
		reasons = append(reasons, "this process lacks CAP_SYS_PTRACE")
	}
	for _, id := range []string{"Uid", "Gid"} {
		mine := strings.Fields(self[id])
		theirs := strings.Fields(target[id])
		if len(mine) < 1 || len(theirs) < 3 {
			continue
		}
		if theirs[0] != mine[0] || theirs[1] != mine[0] || theirs[2] != mine[0] {
			reasons = append(reasons, fmt.Sprintf("this process's real %s %s differs from the process's (real %s, effective %s, saved %s)",
				strings.ToLower(id), mine[0], theirs[0], theirs[1], theirs[2]))
		}
	}
	// A process that is not dumpable has its /proc files owned by root.
	if st, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		if sys, ok := st.Sys().(*unix.Stat_t); ok {
			if f := strings.Fields(target["Uid"]); len(f) > 1 && sys.Uid == 0 && f[1] != "0" {
				reasons = append(reasons, "the process is not dumpable (prctl(PR_SET_DUMPABLE, 0), or it changed credentials)")
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		switch strings.TrimSpace(string(b)) {
		case "1":
			reasons = append(reasons, "Yama ptrace_scope is 1: only an ancestor of the process, or one it named with prctl(PR_SET_PTRACER), may attach")
		case "2":
			reasons = append(reasons, "Yama ptrace_scope is 2: only a process with CAP_SYS_PTRACE may attach")
		case "3":
			reasons = append(reasons, "Yama ptrace_scope is 3: no process may attach")
		}
	}
	if len(reasons) == 0 {
		reasons = append(reasons, "the credentials match: a security module (SELinux, AppArmor) may be refusing")
	}
	return reasons
}

// readStatus reads the "Key:\tvalue" lines of a /proc status file.
func readStatus(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}
