package handoff_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/handoff"
)

// sameFile reports whether descriptors a and b refer to the same file.
func sameFile(t *testing.T, a, b int) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Fstat(a, &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(b, &sb); err != nil {
		t.Fatal(err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func pipe(t *testing.T) [2]int {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p
}

// TestSendFDs carries a payload with zero, one and several descriptors of
// any kind, on stream and seqpacket sockets, in a row on one connection.
func TestSendFDs(t *testing.T) {
	p := pipe(t)
	u := openUFFD(t, 0)
	ufd := dupUFFD(t, u)
	defer unix.Close(ufd)
	for _, typ := range []struct {
		name string
		typ  int
	}{{"stream", unix.SOCK_STREAM}, {"seqpacket", unix.SOCK_SEQPACKET}} {
		t.Run(typ.name, func(t *testing.T) {
			a, b := socketpair(t, typ.typ)
			msgs := []struct {
				payload string
				fds     []int
			}{
				{`{"op":"hello"}`, nil},
				{strings.Repeat("x", 100<<10), []int{p[0]}},
				{`{"op":"vm"}`, []int{ufd, p[1], p[0]}},
				{"", []int{p[1]}},
			}
			errc := make(chan error, 1)
			go func() {
				for _, m := range msgs {
					if err := handoff.SendFDs(a, []byte(m.payload), m.fds...); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			for i, m := range msgs {
				payload, fds, cred, err := handoff.ReceiveFDs(b)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if string(payload) != m.payload {
					t.Errorf("message %d: payload of %d bytes, want %d", i, len(payload), len(m.payload))
				}
				if cred.PID != os.Getpid() {
					t.Errorf("message %d: sender pid %d, want %d", i, cred.PID, os.Getpid())
				}
				if len(fds) != len(m.fds) {
					t.Errorf("message %d: %d descriptors, want %d", i, len(fds), len(m.fds))
				}
				for j := range min(len(fds), len(m.fds)) {
					if !sameFile(t, fds[j], m.fds[j]) {
						t.Errorf("message %d: descriptor %d is not the file sent", i, j)
					}
				}
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
	a, _ := socketpair(t, unix.SOCK_STREAM)
	many := make([]int, handoff.MaxFDs+1)
	for i := range many {
		many[i] = p[0]
	}
	if err := handoff.SendFDs(a, nil, many...); err == nil || !strings.Contains(err.Error(), "MaxFDs") {
		t.Errorf("SendFDs of %d descriptors: %v; want a refusal naming MaxFDs", len(many), err)
	}
}

// TestReader reads a message of a format of its own (no framing, the
// descriptor on the first byte, as Firecracker's handshake) in small reads
// through a Reader.
func TestReader(t *testing.T) {
	p := pipe(t)
	a, b := socketpair(t, unix.SOCK_STREAM)
	msg := bytes.Repeat([]byte("0123456789"), 10000)
	errc := make(chan error, 1)
	go func() {
		err := handoff.WriteFDs(a, msg, p[0])
		a.CloseWrite()
		errc <- err
	}()
	r := handoff.NewReader(b)
	got, err := io.ReadAll(io.LimitReader(r, int64(len(msg)+1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %d bytes, want the %d sent", len(got), len(msg))
	}
	fds := r.FDs()
	if len(fds) != 1 || !sameFile(t, fds[0], p[0]) {
		t.Fatalf("descriptors %v, want the pipe's read end", fds)
	}
	if _, ok := r.Cred(); ok {
		t.Error("credentials reported for a message sent without them on a socket without SO_PASSCRED")
	}
	r.CloseFDs()
	if len(r.FDs()) != 0 {
		t.Error("CloseFDs left descriptors")
	}
}

// TestReaderTooManyFDs: a message with more descriptors than MaxFDs is a
// *ControlError; the descriptors that came are the caller's to close
// (the leak check of TestMain fails the package otherwise).
func TestReaderTooManyFDs(t *testing.T) {
	p := pipe(t)
	a, b := socketpair(t, unix.SOCK_STREAM)
	many := make([]int, handoff.MaxFDs+4)
	for i := range many {
		many[i] = p[0]
	}
	if _, _, err := a.WriteMsgUnix([]byte("x"), unix.UnixRights(many...), nil); err != nil {
		t.Fatal(err)
	}
	r := handoff.NewReader(b)
	var buf [4]byte
	n, err := r.Read(buf[:])
	var ce *handoff.ControlError
	if n != 1 || !errors.As(err, &ce) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("Read = %d, %v; want the byte and a *ControlError", n, err)
	}
	r.CloseFDs()
}

// dupUFFD returns a duplicate of u's descriptor, closed by the caller.
func dupUFFD(t *testing.T, u interface {
	SyscallConn() (syscall.RawConn, error)
}) int {
	t.Helper()
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		t.Fatal(err)
	}
	if derr != nil {
		t.Fatal(derr)
	}
	return fd
}
