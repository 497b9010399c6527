package handoff

import (
	"bufio"
	"encoding/binary"
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

// maxFDs is how many descriptors one message may carry before Receive
// reports the control data truncated; more than one is an error anyway, but
// room for a few lets Receive close them instead of leaving that to the
// kernel's truncation.
const maxFDs = 8

// Send sends u and payload over conn, a connected UNIX domain socket, with
// this process's credentials. The caller keeps its own u: both processes
// then hold the userfaultfd.
func Send(conn *net.UnixConn, u *uffd.UFFD, payload []byte) error {
	const op = "send"
	if len(payload) > MaxPayload {
		return &Error{Op: op, Err: fmt.Errorf("payload of %d bytes exceeds MaxPayload (%d)", len(payload), MaxPayload)}
	}
	rc, err := u.SyscallConn()
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	msg := make([]byte, headerSize+len(payload))
	copy(msg, magic)
	binary.LittleEndian.PutUint32(msg[4:], uint32(len(payload)))
	copy(msg[headerSize:], payload)
	// Explicit credentials: the kernel checks them and attaches them
	// whether or not the receiver had SO_PASSCRED on when this was sent.
	creds := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})

	var n int
	var werr error
	// Control keeps the descriptor's number valid (not closed, not
	// reused) while the kernel takes its reference.
	if err := rc.Control(func(fd uintptr) {
		oob := append(unix.UnixRights(int(fd)), creds...)
		n, _, werr = conn.WriteMsgUnix(msg, oob, nil)
	}); err != nil {
		return &Error{Op: op, Err: err}
	}
	if werr == nil && n < len(msg) {
		// A stream socket took part of a large payload; the descriptor
		// went with the first byte.
		_, werr = conn.Write(msg[n:])
	}
	if werr != nil {
		return &Error{Op: op, Err: werr}
	}
	return nil
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

	var r recv
	var payload []byte
	if sotype == unix.SOCK_STREAM {
		payload, err = r.stream(conn)
	} else {
		payload, err = r.packet(conn, rc)
	}
	if err == nil {
		switch len(r.fds) {
		case 0:
			err = errors.New("the message carried no descriptor")
		case 1:
		default:
			err = fmt.Errorf("the message carried %d descriptors, want one", len(r.fds))
		}
	}
	if err != nil {
		for _, fd := range r.fds {
			unix.Close(fd)
		}
		return nil, nil, Cred{}, &Error{Op: op, Err: err}
	}
	if !r.haveCred {
		if err := rc.Control(func(fd uintptr) {
			var uc *unix.Ucred
			if uc, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); serr == nil {
				r.cred = Cred{PID: int(uc.Pid), UID: int(uc.Uid), GID: int(uc.Gid)}
			}
		}); err != nil {
			serr = err
		}
		if serr != nil {
			unix.Close(r.fds[0])
			return nil, nil, Cred{}, &Error{Op: op, Err: os.NewSyscallError("getsockopt SO_PEERCRED", serr)}
		}
	}
	u, err := uffd.FromFD(r.fds[0], features)
	if err != nil {
		return nil, nil, Cred{}, &Error{Op: "adopt", Err: err}
	}
	return u, payload, r.cred, nil
}

// recv collects the control data of the reads of one message.
type recv struct {
	fds      []int
	cred     Cred
	haveCred bool
	oob      [256]byte
}

// readMsg reads into b, collecting descriptors and credentials.
func (r *recv) readMsg(conn *net.UnixConn, b []byte) (int, int, error) {
	n, oobn, flags, _, err := conn.ReadMsgUnix(b, r.oob[:])
	if oobn > 0 {
		if perr := r.parse(r.oob[:oobn]); perr != nil && err == nil {
			err = perr
		}
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = fmt.Errorf("control data truncated (more than %d descriptors?)", maxFDs)
	}
	return n, flags, err
}

func (r *recv) parse(oob []byte) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("control data: %w", err)
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(m)
			if err != nil {
				return fmt.Errorf("SCM_RIGHTS: %w", err)
			}
			r.fds = append(r.fds, fds...)
		case unix.SCM_CREDENTIALS:
			uc, err := unix.ParseUnixCredentials(m)
			if err != nil {
				return fmt.Errorf("SCM_CREDENTIALS: %w", err)
			}
			// pid 0: the sender attached none and the kernel filled in
			// placeholders; SO_PEERCRED is better than that.
			if uc.Pid != 0 && !r.haveCred {
				r.cred = Cred{PID: int(uc.Pid), UID: int(uc.Uid), GID: int(uc.Gid)}
				r.haveCred = true
			}
		}
	}
	return nil
}

// stream reads the header, then the payload it announces.
func (r *recv) stream(conn *net.UnixConn) ([]byte, error) {
	var hdr [headerSize]byte
	got := 0
	for got < headerSize {
		n, _, err := r.readMsg(conn, hdr[got:])
		got += n
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if n == 0 || err != nil {
			if got == 0 {
				return nil, io.EOF
			}
			return nil, io.ErrUnexpectedEOF
		}
	}
	size, err := parseHeader(hdr[:])
	if err != nil {
		return nil, err
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(conn, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("payload of %d bytes: %w", size, err)
	}
	return payload, nil
}

// packet learns the size of the next packet, then reads all of it.
func (r *recv) packet(conn *net.UnixConn, rc syscall.RawConn) ([]byte, error) {
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
		if _, _, err := r.readMsg(conn, one[:]); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	buf := make([]byte, size)
	n, flags, err := r.readMsg(conn, buf)
	if err != nil {
		return nil, err
	}
	if flags&unix.MSG_TRUNC != 0 || n != size {
		return nil, fmt.Errorf("packet of %d bytes read as %d", size, n)
	}
	if n < headerSize {
		return nil, fmt.Errorf("packet of %d bytes is shorter than the %d-byte header", n, headerSize)
	}
	want, err := parseHeader(buf[:headerSize])
	if err != nil {
		return nil, err
	}
	if want != n-headerSize {
		return nil, fmt.Errorf("header announces %d payload bytes, the packet holds %d", want, n-headerSize)
	}
	return buf[headerSize:], nil
}

func parseHeader(h []byte) (int, error) {
	if string(h[:4]) != magic {
		return 0, fmt.Errorf("not a handoff message (header %q)", h)
	}
	size := binary.LittleEndian.Uint32(h[4:])
	if size > MaxPayload {
		return 0, fmt.Errorf("header announces %d payload bytes, more than MaxPayload (%d)", size, MaxPayload)
	}
	return int(size), nil
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
