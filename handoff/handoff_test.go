package handoff_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// roleEnv selects a helper role of the test binary (see runRole): the
// tests start processes that send, hold or take userfaultfds.
const roleEnv = "HANDOFF_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	os.Exit(testutil.Main(m))
}

// hangTimeout bounds waits that end only if the code under test works.
const hangTimeout = 30 * time.Second

// sentFeatures are the features the senders enable.
const sentFeatures = uffd.FeatureEventRemove | uffd.FeatureThreadID

// socketpair returns both ends of a UNIX socket pair of the given type as
// *net.UnixConn, closed when the test ends.
func socketpair(t *testing.T, typ int) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fileConn(t, fds[0]), fileConn(t, fds[1])
}

func fileConn(t *testing.T, fd int) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "socket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

func openUFFD(t *testing.T, features uffd.Feature) *uffd.UFFD {
	t.Helper()
	u, err := uffd.Open(uffd.Config{Features: features})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// serveOne serves the next page fault on u with a page of b, in a
// goroutine; the returned channel yields the error (nil once served).
func serveOne(u *uffd.UFFD, b byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		msgs := make([]uffd.Message, 1)
		ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
		defer cancel()
		for {
			n, err := u.ReadMessages(ctx, msgs)
			if err != nil {
				done <- err
				return
			}
			if n == 1 && msgs[0].Event == uffd.EventPagefault {
				addr := msgs[0].Address &^ uintptr(mem.PageSize()-1)
				_, err := u.Copy(addr, bytes.Repeat([]byte{b}, mem.PageSize()), 0)
				done <- err
				return
			}
		}
	}()
	return done
}

// checkServes registers a page of this process with u, touches it from a
// goroutine inside write(2) (a fault in Go code, served by a goroutine of
// this process, can hang the process in a garbage collection) and checks
// that the fault arrives on u and is served through it.
func checkServes(t *testing.T, u *uffd.UFFD) {
	t.Helper()
	m, err := mem.Map(mem.Anonymous, mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	served := serveOne(u, 'R')
	got := make(chan byte, 1)
	errc := make(chan error, 1)
	go func() {
		b, err := testutil.KernelLoad(m.Data, 100)
		errc <- err
		got <- b
	}()
	select {
	case b := <-got:
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if b != 'R' {
			t.Errorf("read %q from the page served through the received userfaultfd, want 'R'", b)
		}
	case <-time.After(hangTimeout):
		t.Fatal("the fault was not served through the received userfaultfd")
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

func TestSendReceive(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  int
		size int
	}{
		{"stream-empty", unix.SOCK_STREAM, 0},
		{"stream-small", unix.SOCK_STREAM, 100},
		// Larger than a socket buffer: Send finishes what the first
		// sendmsg could not take, Receive reads it all.
		{"stream-4MiB", unix.SOCK_STREAM, 4 << 20},
		{"seqpacket-empty", unix.SOCK_SEQPACKET, 0},
		{"seqpacket-64KiB", unix.SOCK_SEQPACKET, 64 << 10},
		{"dgram-1", unix.SOCK_DGRAM, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketpair(t, tc.typ)
			u := openUFFD(t, sentFeatures)
			payload := make([]byte, tc.size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			sent := make(chan error, 1)
			go func() { sent <- handoff.Send(a, u, payload) }()
			got, gotPayload, cred, err := handoff.Receive(b, uffd.FeatureEventRemove)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotPayload, payload) {
				t.Errorf("payload: got %d bytes, want %d (equal: false)", len(gotPayload), len(payload))
			}
			if want := (handoff.Cred{PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid()}); cred != want {
				t.Errorf("credentials %v, want %v", cred, want)
			}
			if got.Features() != sentFeatures {
				t.Errorf("received features %v, want the sender's %v", got.Features(), sentFeatures)
			}
			if got.Path() != uffd.PathAdopted {
				t.Errorf("path %v, want %v", got.Path(), uffd.PathAdopted)
			}
			checkServes(t, got)
		})
	}
}

// TestReceiveSequence checks that Receive reads exactly one message from a
// stream: two messages sent back to back arrive as two.
func TestReceiveSequence(t *testing.T) {
	a, b := socketpair(t, unix.SOCK_STREAM)
	u1 := openUFFD(t, uffd.FeatureEventRemove)
	u2 := openUFFD(t, uffd.FeatureEventUnmap)
	if err := handoff.Send(a, u1, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := handoff.Send(a, u2, []byte("second message")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		payload  string
		features uffd.Feature
	}{{"first", uffd.FeatureEventRemove}, {"second message", uffd.FeatureEventUnmap}} {
		got, p, _, err := handoff.Receive(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		got.Close()
		if string(p) != want.payload || got.Features() != want.features {
			t.Errorf("received %q with %v, want %q with %v", p, got.Features(), want.payload, want.features)
		}
	}
}

func TestReceiveErrors(t *testing.T) {
	header := func(n uint32) []byte {
		return append([]byte("UFD1"), byte(n), byte(n>>8), byte(n>>16), byte(n>>24))
	}
	pipeFds := func(t *testing.T) []int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		return p[:]
	}
	for _, tc := range []struct {
		name string
		typ  int
		// send writes the offending message on a; it returns the
		// descriptors it sent, which the sender then closes.
		send func(t *testing.T, a *net.UnixConn) []int
		want string
		is   error
	}{
		{"no-descriptor", unix.SOCK_STREAM, func(t *testing.T, a *net.UnixConn) []int {
			a.Write(header(0))
			return nil
		}, "no descriptor", nil},
		{"two-descriptors", unix.SOCK_STREAM, func(t *testing.T, a *net.UnixConn) []int {
			fds := pipeFds(t)
			a.WriteMsgUnix(header(0), unix.UnixRights(fds...), nil)
			return fds
		}, "2 descriptors", nil},
		{"not-a-userfaultfd", unix.SOCK_SEQPACKET, func(t *testing.T, a *net.UnixConn) []int {
			fds := pipeFds(t)
			a.WriteMsgUnix(header(0), unix.UnixRights(fds[0]), nil)
			return fds
		}, "not a userfaultfd", nil},
		{"bad-magic", unix.SOCK_STREAM, func(t *testing.T, a *net.UnixConn) []int {
			a.Write([]byte("HTTP/1.1"))
			return nil
		}, "not a handoff message", nil},
		{"huge-header", unix.SOCK_STREAM, func(t *testing.T, a *net.UnixConn) []int {
			a.Write(header(handoff.MaxPayload + 1))
			return nil
		}, "more than MaxPayload", nil},
		{"short-packet", unix.SOCK_SEQPACKET, func(t *testing.T, a *net.UnixConn) []int {
			a.Write(header(10)) // announces 10 bytes, carries none
			return nil
		}, "announces 10 payload bytes", nil},
		{"peer-closed", unix.SOCK_STREAM, func(t *testing.T, a *net.UnixConn) []int {
			a.Close()
			return nil
		}, "EOF", io.EOF},
		{"peer-closed-midway", unix.SOCK_STREAM, func(t *testing.T, a *net.UnixConn) []int {
			a.Write(header(100)[:5])
			a.Close()
			return nil
		}, "unexpected EOF", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketpair(t, tc.typ)
			for _, fd := range tc.send(t, a) {
				unix.Close(fd)
			}
			u, _, _, err := handoff.Receive(b, 0)
			if err == nil {
				u.Close()
				t.Fatal("Receive succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "handoff: ") {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not match %v", err, tc.is)
			}
			var he *handoff.Error
			if !errors.As(err, &he) {
				t.Errorf("error %T is not a *handoff.Error", err)
			}
		})
	}
	// The descriptors received with the bad messages were closed: the
	// leak check of TestMain fails the package otherwise.
}

// TestReceiveFeatures: asking for a feature the sender's handshake did not
// enable fails, naming it, and closes the descriptor.
func TestReceiveFeatures(t *testing.T) {
	a, b := socketpair(t, unix.SOCK_STREAM)
	u := openUFFD(t, uffd.FeatureEventRemove)
	if err := handoff.Send(a, u, nil); err != nil {
		t.Fatal(err)
	}
	got, _, _, err := handoff.Receive(b, uffd.FeatureEventRemove|uffd.FeatureEventFork)
	if err == nil {
		got.Close()
		t.Fatal("Receive adopted a userfaultfd without the features asked for")
	}
	var he *handoff.Error
	if !errors.As(err, &he) || he.Op != "adopt" || !errors.Is(err, uffd.ErrNotSupported) || !strings.Contains(err.Error(), "EventFork") {
		t.Errorf("error %v (%T), want an adopt error naming EventFork", err, err)
	}
}

func TestSendTooLarge(t *testing.T) {
	a, _ := socketpair(t, unix.SOCK_STREAM)
	u := openUFFD(t, 0)
	err := handoff.Send(a, u, make([]byte, handoff.MaxPayload+1))
	if err == nil || !strings.Contains(err.Error(), "exceeds MaxPayload") {
		t.Fatalf("Send of MaxPayload+1 bytes: %v", err)
	}
	u.Close()
	if err := handoff.Send(a, u, nil); !errors.Is(err, uffd.ErrClosed) {
		t.Fatalf("Send of a closed UFFD: %v, want ErrClosed", err)
	}
}

// --- Between processes ---

// helper starts the test binary in a role. extra are inherited as
// descriptors 3, 4, ...; cred, if not nil, runs it as another user.
func helper(t *testing.T, role string, env []string, extra []*os.File, cred *syscall.Credential) (*exec.Cmd, io.WriteCloser, *bufio.Reader, *bytes.Buffer) {
	t.Helper()
	exe := executable(t, cred != nil)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role, quickExit()), env...)
	cmd.ExtraFiles = extra
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && !t.Failed() {
				t.Errorf("helper %s: %v\n%s", role, err, stderr.String())
			}
		case <-time.After(hangTimeout):
			cmd.Process.Kill()
			<-done
			t.Errorf("helper %s did not exit\n%s", role, stderr.String())
		}
	})
	return cmd, stdin, bufio.NewReader(stdout), &stderr
}

// quickExit returns the GORACE setting that spares a helper built with
// -race the race runtime's one-second sleep at exit.
func quickExit() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

// executable returns the test binary, copied to a directory every user can
// read when others must run it.
func executable(t *testing.T, world bool) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !world {
		return exe
	}
	dir, err := os.MkdirTemp("", "handoff-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "handoff.test")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// readJSON reads one line of JSON from a helper.
func readJSON(t *testing.T, r *bufio.Reader, v any, stderr *bytes.Buffer) {
	t.Helper()
	line := make(chan []byte, 1)
	go func() {
		b, _ := r.ReadBytes('\n')
		line <- b
	}()
	select {
	case b := <-line:
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("helper said %q: %v\n%s", b, err, stderr.String())
		}
	case <-time.After(hangTimeout):
		t.Fatalf("helper said nothing\n%s", stderr.String())
	}
}

// helperReport is what the helpers print.
type helperReport struct {
	Err      string
	FD       int
	Addr     uintptr
	Read     int
	Features string
	Perm     bool
	Reasons  []string
}

// runRole runs a helper role and returns the exit status.
func runRole(role string) int {
	var rep helperReport
	err := func() error {
		switch role {
		case "sender":
			return roleSender(&rep)
		case "holder":
			return roleHolder(&rep)
		case "inherited":
			// Holds descriptor 3 (a userfaultfd) until stdin closes.
			rep.FD = 3
			json.NewEncoder(os.Stdout).Encode(rep)
			io.Copy(io.Discard, os.Stdin)
			return nil
		case "taker":
			return roleTaker(&rep)
		}
		return fmt.Errorf("unknown role %q", role)
	}()
	if err != nil {
		rep.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

// registeredPage opens a userfaultfd with sentFeatures and registers a
// fresh page of this process with it.
func registeredPage() (*uffd.UFFD, *mem.Mapping, error) {
	u, err := uffd.Open(uffd.Config{Features: sentFeatures})
	if err != nil {
		return nil, nil, err
	}
	m, err := mem.Map(mem.Anonymous, mem.PageSize())
	if err != nil {
		u.Close()
		return nil, nil, err
	}
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		u.Close()
		m.Close()
		return nil, nil, err
	}
	return u, m, nil
}

// roleSender sends its userfaultfd, with the registered page's address as
// the payload, over descriptor 3, closes its own, then reads the page: the
// receiver serves the fault.
func roleSender(rep *helperReport) error {
	f := os.NewFile(3, "socket")
	c, err := net.FileConn(f)
	if err != nil {
		return err
	}
	u, m, err := registeredPage()
	if err != nil {
		return err
	}
	if err := handoff.Send(c.(*net.UnixConn), u, []byte(strconv.FormatUint(uint64(m.Addr()), 10))); err != nil {
		return err
	}
	u.Close() // the receiver's copy keeps the registration
	rep.Read = int(m.Data[123])
	return nil
}

// roleHolder reports the number of its userfaultfd's descriptor and the
// registered page's address, then reads the page when told to (a line on
// stdin), and exits at the end of stdin.
func roleHolder(rep *helperReport) error {
	u, m, err := registeredPage()
	if err != nil {
		return err
	}
	defer u.Close()
	rc, err := u.SyscallConn()
	if err != nil {
		return err
	}
	rc.Control(func(fd uintptr) { rep.FD = int(fd) })
	rep.Addr = m.Addr()
	json.NewEncoder(os.Stdout).Encode(rep)
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return nil
	}
	rep.Read = int(m.Data[77])
	json.NewEncoder(os.Stdout).Encode(rep)
	io.Copy(io.Discard, in)
	return nil
}

// roleTaker takes descriptor $HANDOFF_FD of process $HANDOFF_PID.
func roleTaker(rep *helperReport) error {
	pid, _ := strconv.Atoi(os.Getenv("HANDOFF_PID"))
	fd, _ := strconv.Atoi(os.Getenv("HANDOFF_FD"))
	u, err := handoff.FromPid(pid, fd, 0)
	if err != nil {
		var pe *handoff.PermissionError
		if errors.As(err, &pe) && errors.Is(err, unix.EPERM) && errors.Is(err, os.ErrPermission) {
			rep.Perm = true
			rep.Reasons = pe.Reasons
		}
		return err
	}
	defer u.Close()
	rep.Features = u.Features().String()
	return nil
}

// TestSendToMonitor is the non-cooperative shape: a process registers its
// own memory, sends the userfaultfd to this one and closes its copy; this
// process serves the other's fault.
func TestSendToMonitor(t *testing.T) {
	a, b := socketpair(t, unix.SOCK_STREAM)
	af, err := a.File()
	if err != nil {
		t.Fatal(err)
	}
	defer af.Close()
	cmd, _, out, stderr := helper(t, "sender", nil, []*os.File{af}, nil)
	af.Close()
	a.Close()

	u, payload, cred, err := handoff.Receive(b, sentFeatures)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	defer u.Close()
	if cred.PID != cmd.Process.Pid || cred.UID != os.Getuid() {
		t.Errorf("credentials %v, want the sender's pid %d", cred, cmd.Process.Pid)
	}
	addr, err := strconv.ParseUint(string(payload), 10, 64)
	if err != nil {
		t.Fatalf("payload %q", payload)
	}
	msgs := make([]uffd.Message, 1)
	ctx, cancel := context.WithTimeout(context.Background(), hangTimeout)
	defer cancel()
	n, err := u.ReadMessages(ctx, msgs)
	if err != nil {
		t.Fatalf("no fault from the sender: %v\n%s", err, stderr)
	}
	if n != 1 || msgs[0].Event != uffd.EventPagefault || msgs[0].Address&^uintptr(mem.PageSize()-1) != uintptr(addr) {
		t.Fatalf("read %v, want a fault at %#x", msgs[:n], addr)
	}
	if msgs[0].ThreadID == 0 {
		t.Errorf("fault without the thread id that FeatureThreadID asks for")
	}
	if _, err := u.Copy(uintptr(addr), bytes.Repeat([]byte{'S'}, mem.PageSize()), 0); err != nil {
		t.Fatal(err)
	}
	var rep helperReport
	readJSON(t, out, &rep, stderr)
	if rep.Err != "" || rep.Read != 'S' {
		t.Fatalf("sender read %q (error %q), want 'S'", rune(rep.Read), rep.Err)
	}
}

func TestFromPid(t *testing.T) {
	testutil.RequireRoot(t) // or CAP_SYS_PTRACE; root covers the rest too
	cmd, in, out, stderr := helper(t, "holder", nil, nil, nil)
	var rep helperReport
	readJSON(t, out, &rep, stderr)
	if rep.Err != "" {
		t.Fatal(rep.Err)
	}
	pid := cmd.Process.Pid
	u, err := handoff.FromPid(pid, rep.FD, uffd.FeatureEventRemove)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Features() != sentFeatures {
		t.Errorf("features %v, want the holder's %v", u.Features(), sentFeatures)
	}
	// The descriptor taken serves the holder's memory.
	served := serveOne(u, 'P')
	fmt.Fprintln(in, "read")
	readJSON(t, out, &rep, stderr)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if rep.Read != 'P' {
		t.Errorf("holder read %q, want 'P' served through the descriptor taken by pid", rune(rep.Read))
	}

	// Errors name what is wrong.
	if _, err := handoff.FromPid(pid, 1000, 0); err == nil || !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "has no descriptor 1000") {
		t.Errorf("FromPid of a missing descriptor: %v", err)
	}
	if _, err := handoff.FromPid(pid, 0, 0); err == nil || !strings.Contains(err.Error(), "not a userfaultfd") {
		t.Errorf("FromPid of the holder's stdin: %v", err)
	}
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := handoff.FromPid(exited.Process.Pid, 3, 0); err == nil || !errors.Is(err, unix.ESRCH) || !strings.Contains(err.Error(), "no process") {
		t.Errorf("FromPid of an exited process: %v", err)
	}
}

// nobody is the unprivileged user the permission tests run as.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// TestFromPidPermission runs FromPid as an unprivileged user against a
// root process (refused, with the reasons) and against a process of its
// own user holding a userfaultfd (allowed).
func TestFromPidPermission(t *testing.T) {
	testutil.RequireRoot(t) // to start processes as another user
	u := openUFFD(t, sentFeatures)
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ufile *os.File
	rc.Control(func(fd uintptr) {
		nfd, err := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
		if err == nil {
			ufile = os.NewFile(uintptr(nfd), "uffd")
		}
	})
	if ufile == nil {
		t.Fatal("dup failed")
	}
	defer ufile.Close()

	t.Run("other-user", func(t *testing.T) {
		env := []string{fmt.Sprintf("HANDOFF_PID=%d", os.Getpid()), fmt.Sprintf("HANDOFF_FD=%d", ufile.Fd())}
		_, _, out, stderr := helper(t, "taker", env, nil, nobody)
		var rep helperReport
		readJSON(t, out, &rep, stderr)
		if !rep.Perm {
			t.Fatalf("an unprivileged process took a root process's descriptor, or failed otherwise: %q", rep.Err)
		}
		t.Logf("as uid 65534: %s", rep.Err)
		for _, want := range []string{"operation not permitted", "PTRACE_MODE_ATTACH_REALCREDS", "CAP_SYS_PTRACE"} {
			if !strings.Contains(rep.Err, want) {
				t.Errorf("error %q does not mention %q", rep.Err, want)
			}
		}
		joined := strings.Join(rep.Reasons, "; ")
		for _, want := range []string{"lacks CAP_SYS_PTRACE", "real uid 65534 differs", "real gid 65534 differs"} {
			if !strings.Contains(joined, want) {
				t.Errorf("reasons %q do not say %q", joined, want)
			}
		}
	})

	t.Run("same-user", func(t *testing.T) {
		hcmd, _, hout, hstderr := helper(t, "inherited", nil, []*os.File{ufile}, nobody)
		var rep helperReport
		readJSON(t, hout, &rep, hstderr)
		env := []string{fmt.Sprintf("HANDOFF_PID=%d", hcmd.Process.Pid), fmt.Sprintf("HANDOFF_FD=%d", rep.FD)}
		_, _, out, stderr := helper(t, "taker", env, nil, nobody)
		readJSON(t, out, &rep, stderr)
		if rep.Err != "" {
			if yama, _ := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); strings.TrimSpace(string(yama)) != "" && strings.TrimSpace(string(yama)) != "0" {
				// A sibling may not attach under Yama scope 1 and up;
				// the reasons must say so.
				if !strings.Contains(strings.Join(rep.Reasons, ";"), "Yama ptrace_scope") {
					t.Fatalf("refused under Yama scope %s without saying so: %q", yama, rep.Err)
				}
				return
			}
			t.Fatalf("a process of the same user could not take the descriptor: %s", rep.Err)
		}
		if rep.Features != sentFeatures.String() {
			t.Errorf("taken descriptor has features %q, want %q", rep.Features, sentFeatures)
		}
	})
}
