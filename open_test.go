package uffd_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/features"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// openHelperEnv selects the unprivileged helper mode of the test binary:
// TestOpenUnprivileged re-executes the binary as nobody with it set.
// openDeviceEnv names a userfaultfd device node that nobody may open.
const (
	openHelperEnv = "UFFD_TEST_OPEN_UNPRIVILEGED_HELPER"
	openDeviceEnv = "UFFD_TEST_OPEN_DEVICE"
)

func init() {
	if os.Getenv(openHelperEnv) == "1" {
		os.Exit(openHelper())
	}
}

// openResult is what the helper reports of one Open.
type openResult struct {
	OK, UserModeOnly bool
	Path             string
	Err              string
	EPERM, EACCES    bool
}

// openHelper tries the ways of opening a userfaultfd and prints the
// outcomes as JSON.
func openHelper() int {
	cases := map[string]uffd.Config{
		"auto":            {},
		"syscall":         {Path: uffd.PathSyscall},
		"device":          {Path: uffd.PathDevice},
		"user-mode-only":  {UserModeOnly: true},
		"umo-event-fork":  {UserModeOnly: true, Features: uffd.FeatureEventFork},
		"umo-sigbus":      {UserModeOnly: true, Features: uffd.FeatureSigbus | uffd.FeatureThreadID},
		"umo-device-only": {UserModeOnly: true, Path: uffd.PathDevice},
		// The system call is refused; the accessible device is the fallback.
		"auto-open-device": {Device: os.Getenv(openDeviceEnv)},
	}
	out := map[string]openResult{}
	// The support report works for this user through the path that does.
	if rep, err := features.Collect(); err != nil {
		out["features"] = openResult{Err: err.Error()}
	} else {
		var paths []string
		for _, p := range rep.Paths {
			if p.OK {
				paths = append(paths, p.Path)
			}
		}
		regs := 0
		for _, r := range rep.Registrations {
			if r.OK {
				regs++
			}
		}
		out["features"] = openResult{OK: regs > 0, Path: strings.Join(paths, ",")}
	}
	for name, cfg := range cases {
		u, err := uffd.Open(cfg)
		var r openResult
		if err != nil {
			r.Err = err.Error()
			r.EPERM = errors.Is(err, unix.EPERM)
			r.EACCES = errors.Is(err, unix.EACCES)
		} else {
			r.OK, r.UserModeOnly, r.Path = true, u.UserModeOnly(), u.Path().String()
			u.Close()
		}
		out[name] = r
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		return 1
	}
	return 0
}

// serveOneFault registers one anonymous page on u, serves its fault with
// the pattern and checks a read of it.
func serveOneFault(t *testing.T, u *uffd.UFFD) {
	t.Helper()
	m := mapKind(t, mem.Anonymous, 1)
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	s := serve(t, u, copyPattern(u, m))
	got := kernelLoad(t, "faulting read", m.Page(0), 64)
	if want := byte(1) ^ byte(64>>3); got != want {
		t.Fatalf("read %#x, want %#x", got, want)
	}
	if len(s.messages()) == 0 {
		t.Fatal("fault served without a message")
	}
}

func TestOpenPaths(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		path, want uffd.Path
	}{
		{uffd.PathSyscall, uffd.PathSyscall},
		{uffd.PathDevice, uffd.PathDevice},
		{uffd.PathAuto, uffd.PathSyscall}, // root may use the system call
	} {
		t.Run(tc.path.String(), func(t *testing.T) {
			u, err := uffd.Open(uffd.Config{Path: tc.path, Features: uffd.FeatureThreadID})
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			if u.Path() != tc.want {
				t.Errorf("Path() = %v, want %v", u.Path(), tc.want)
			}
			if u.Features() != uffd.FeatureThreadID {
				t.Errorf("Features() = %v, want ThreadID", u.Features())
			}
			if !u.Ioctls().Has(uffd.IoctlRegister | uffd.IoctlUnregister | uffd.IoctlAPI) {
				t.Errorf("Ioctls() = %v", u.Ioctls())
			}
			serveOneFault(t, u)

			sup, err := uffd.ProbePath(tc.path)
			if err != nil {
				t.Fatalf("ProbePath(%v): %v", tc.path, err)
			}
			if sup.Path != tc.want || sup.API != 0xAA || !sup.Features.Has(uffd.FeatureThreadID) {
				t.Errorf("ProbePath(%v) = %+v", tc.path, sup)
			}
		})
	}
}

// fdFlags returns the descriptor flags (F_GETFD) of u's descriptor.
func fdFlags(t *testing.T, u *uffd.UFFD) int {
	t.Helper()
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags
}

func TestOpenKeepOnExec(t *testing.T) {
	testutil.RequireRoot(t)
	for _, path := range []uffd.Path{uffd.PathSyscall, uffd.PathDevice} {
		for _, keep := range []bool{false, true} {
			u, err := uffd.Open(uffd.Config{Path: path, KeepOnExec: keep})
			if err != nil {
				t.Fatal(err)
			}
			cloexec := fdFlags(t, u)&unix.FD_CLOEXEC != 0
			u.Close()
			if cloexec == keep {
				t.Errorf("path %v, KeepOnExec %v: FD_CLOEXEC is %v", path, keep, cloexec)
			}
		}
	}
}

// pipeFDs makes a pipe closed when the test ends.
func pipeFDs(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(p[0])
		unix.Close(p[1])
	})
	return p[0], p[1]
}

func TestOpenUserModeOnly(t *testing.T) {
	testutil.RequireRoot(t) // the kernel-mode half needs privilege

	t.Run("user-mode-only", func(t *testing.T) {
		u, err := uffd.Open(uffd.Config{UserModeOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		if !u.UserModeOnly() {
			t.Fatal("UserModeOnly() is false")
		}
		m := mapKind(t, mem.Anonymous, 2)
		if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
			t.Fatal(err)
		}
		r, w := pipeFDs(t)
		// write(2) reads the registered missing page in kernel mode,
		// read(2) writes one: both fail with EFAULT, raising no event.
		var werr, rerr error
		inGoroutine(t, "write(2) from a registered page", func() { _, werr = unix.Write(w, m.Page(0)[:16]) })
		if !errors.Is(werr, unix.EFAULT) {
			t.Errorf("write(2) from a registered missing page: %v, want EFAULT", werr)
		}
		if _, err := unix.Write(w, []byte("x")); err != nil {
			t.Fatal(err)
		}
		inGoroutine(t, "read(2) into a registered page", func() { _, rerr = unix.Read(r, m.Page(1)[:1]) })
		if !errors.Is(rerr, unix.EFAULT) {
			t.Errorf("read(2) into a registered missing page: %v, want EFAULT", rerr)
		}
		if pollReadable(t, u, 0) {
			t.Error("a kernel-mode fault queued a message on a user-mode-only userfaultfd")
		}
		// A user-mode fault still reaches the handler.
		s := serve(t, u, copyPattern(u, m))
		var got byte
		inGoroutine(t, "faulting read", func() { got = m.Page(0)[0] })
		if got != 1 {
			t.Errorf("read %#x after the fault was served, want 0x1", got)
		}
		if msgs := s.messages(); len(msgs) == 0 || msgs[0].Address != m.PageAddr(0) {
			t.Errorf("messages %v, want the user-mode fault of page 0", msgs)
		}
	})

	t.Run("kernel-faults-handled", func(t *testing.T) {
		u := openUFFD(t, 0)
		if u.UserModeOnly() {
			t.Fatal("UserModeOnly() is true without Config.UserModeOnly")
		}
		m := mapKind(t, mem.Anonymous, 1)
		if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
			t.Fatal(err)
		}
		s := serve(t, u, copyPattern(u, m))
		r, w := pipeFDs(t)
		// write(2) blocks in the kernel until the handler serves the
		// page, then copies it.
		var n int
		var werr error
		inGoroutine(t, "write(2) from a registered page", func() { n, werr = unix.Write(w, m.Page(0)[:16]) })
		if werr != nil || n != 16 {
			t.Fatalf("write(2) from a registered page: %d, %v; want 16 bytes", n, werr)
		}
		buf := make([]byte, 16)
		for got := 0; got < len(buf); {
			k, err := unix.Read(r, buf[got:])
			if err != nil || k == 0 {
				t.Fatalf("read the pipe: %d, %v", k, err)
			}
			got += k
		}
		want := make([]byte, 16)
		fillPattern(want, 0)
		if !bytes.Equal(buf, want) {
			t.Errorf("write(2) copied %x, want %x", buf, want)
		}
		found := false
		for _, msg := range s.messages() {
			if msg.Event == uffd.EventPagefault && msg.Address == m.PageAddr(0) {
				found = true
			}
		}
		if !found {
			t.Errorf("no fault message for the kernel-mode fault: %v", s.messages())
		}
	})
}

func TestOpenUnprivileged(t *testing.T) {
	testutil.RequireRoot(t) // to become nobody and to set the sysctl
	// Restored when the test ends, pass or fail.
	testutil.WriteSysctl(t, "/proc/sys/vm/unprivileged_userfaultfd", "0")
	if st, err := os.Stat(uffd.DefaultDevice); err == nil && st.Mode().Perm()&0o006 != 0 {
		testutil.Skipf(t, "%s is accessible to everyone (%v)", uffd.DefaultDevice, st.Mode())
	}

	// The test binary lives in a directory only root may enter: run a copy.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "uffd-open-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "uffd.test")
	src, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	// A second node of the userfaultfd device that everyone may open, for
	// the fallback from the refused system call.
	var st unix.Stat_t
	if err := unix.Stat(uffd.DefaultDevice, &st); err != nil {
		t.Fatalf("stat %s: %v", uffd.DefaultDevice, err)
	}
	openDev := filepath.Join(dir, "userfaultfd")
	if err := unix.Mknod(openDev, unix.S_IFCHR|0o666, int(st.Rdev)); err != nil {
		t.Fatalf("mknod %s: %v", openDev, err)
	}
	if err := os.Chmod(openDev, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), openHelperEnv+"=1", openDeviceEnv+"="+openDev)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, stderr.String())
	}
	var res map[string]openResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	t.Logf("as nobody: %+v", res)

	// Neither path works: the error says why and what to change.
	auto := res["auto"]
	if auto.OK || !auto.EPERM || !auto.EACCES {
		t.Errorf("Open as nobody: %+v, want an error matching EPERM (syscall) and EACCES (device)", auto)
	}
	for _, s := range []string{"vm.unprivileged_userfaultfd", "/dev/userfaultfd", "CAP_SYS_PTRACE", "UserModeOnly"} {
		if !strings.Contains(auto.Err, s) {
			t.Errorf("Open error %q does not mention %s", auto.Err, s)
		}
	}
	if r := res["syscall"]; r.OK || !r.EPERM || !strings.Contains(r.Err, "vm.unprivileged_userfaultfd") {
		t.Errorf("Open(PathSyscall) as nobody: %+v, want EPERM naming vm.unprivileged_userfaultfd", r)
	}
	if r := res["device"]; r.OK || !r.EACCES || !strings.Contains(r.Err, "/dev/userfaultfd") {
		t.Errorf("Open(PathDevice) as nobody: %+v, want EACCES naming /dev/userfaultfd", r)
	}
	// UFFD_USER_MODE_ONLY is allowed to everyone, with any feature but
	// EVENT_FORK, which needs CAP_SYS_PTRACE.
	if r := res["user-mode-only"]; !r.OK || !r.UserModeOnly || r.Path != "syscall" {
		t.Errorf("Open(UserModeOnly) as nobody: %+v, want a user-mode-only descriptor from the system call", r)
	}
	if r := res["umo-sigbus"]; !r.OK {
		t.Errorf("Open(UserModeOnly, Sigbus|ThreadID) as nobody: %+v", r)
	}
	if r := res["umo-event-fork"]; r.OK || !r.EPERM || !strings.Contains(r.Err, "CAP_SYS_PTRACE") || !strings.Contains(r.Err, "EventFork") {
		t.Errorf("Open(UserModeOnly, EventFork) as nobody: %+v, want EPERM naming EventFork and CAP_SYS_PTRACE", r)
	}
	// `uffd features` reports for this user through user-mode-only.
	if r := res["features"]; !r.OK || r.Path != "user-mode-only" {
		t.Errorf("features.Collect as nobody: %+v, want registrations made through the user-mode-only path only", r)
	}
	// PathAuto falls back to an accessible device when the system call is
	// refused.
	if r := res["auto-open-device"]; !r.OK || r.Path != "device" || r.UserModeOnly {
		t.Errorf("Open with an accessible device as nobody: %+v, want a descriptor from the device", r)
	}
	// The device path does not fall back to the system call.
	if r := res["umo-device-only"]; r.OK || !r.EACCES {
		t.Errorf("Open(UserModeOnly, PathDevice) as nobody: %+v, want EACCES", r)
	}
}
