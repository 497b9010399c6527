package uffd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// TestEventsRemapRemoveUnmap moves a registered range with mremap(2),
// drops part of it with madvise(2) and unmaps it, and checks each event:
// the addresses, that the process making the change waits until the event
// is read, and that faults follow the range to its new address.
func TestEventsRemapRemoveUnmap(t *testing.T) {
	const pages = 4
	ps := mem.PageSize()
	size := pages * ps
	old, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	// A reserved target, so that mremap must move the range.
	target, err := unix.Mmap(-1, 0, size, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	oldPtr, newPtr := unsafe.Pointer(&old[0]), unsafe.Pointer(&target[0])
	oldAddr, newAddr := uintptr(oldPtr), uintptr(newPtr)
	unmapped := false
	t.Cleanup(func() {
		if !unmapped {
			unix.Munmap(target) // the moved range lives there
		}
	})
	// Opened after the cleanup above was registered, so closed before it
	// runs: an unmap event with nobody left to read it would block it.
	u := openUFFD(t, uffd.FeatureEventRemap|uffd.FeatureEventRemove|uffd.FeatureEventUnmap)
	if _, err := u.Register(oldAddr, uintptr(size), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}

	msgs := make([]uffd.Message, 4)
	// events runs change in a goroutine, checks that it waits for its first
	// event to be read, and returns the events read until it returned.
	events := func(what string, change func() error) []uffd.Message {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- change() }()
		var got []uffd.Message
		for {
			if !pollReadable(t, u, hangTimeout) {
				t.Fatalf("%s: no event within %v (read so far: %v)", what, hangTimeout, got)
			}
			if len(got) == 0 {
				select {
				case err := <-done:
					t.Fatalf("%s returned (%v) before its event was read", what, err)
				case <-time.After(50 * time.Millisecond):
				}
			}
			n, err := u.ReadMessages(t.Context(), msgs)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			got = append(got, msgs[:n]...)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				return got
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	// Moving the range reports Remap and then, on Linux 6.18, Unmap of the
	// old range.
	got := events("mremap", func() error {
		_, err := unix.MremapPtr(oldPtr, uintptr(size), newPtr, uintptr(size), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED)
		return err
	})
	if m := got[0]; m.Event != uffd.EventRemap || m.From != oldAddr || m.To != newAddr || m.Len != uintptr(size) {
		t.Fatalf("after mremap: %v, want Remap{from=%#x to=%#x len=%#x} first", got, oldAddr, newAddr, size)
	}
	for _, m := range got[1:] {
		if m.Event != uffd.EventUnmap || m.Start != oldAddr || m.End != oldAddr+uintptr(size) {
			t.Errorf("after mremap: %v, want only an Unmap of the old range after the Remap", got)
		}
	}

	// The registration moved with the range: a fault there reports the new
	// address.
	moved := unsafe.Slice((*byte)(newPtr), size)
	s := serve(t, u, copyPattern(u, &mem.Mapping{Data: moved, PageSize: ps}))
	if bad := selftReadPage(t, "read the moved range", moved[ps:2*ps], 1); bad != -1 {
		t.Fatalf("moved page 1 byte %d is not the pattern", bad)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if f := distinct(s.messages(), ps); len(f) != 1 || f[0].Event != uffd.EventPagefault || f[0].Address != newAddr+uintptr(ps) {
		t.Fatalf("faults after the move: %v, want one at %#x", f, newAddr+uintptr(ps))
	}

	got = events("madvise(MADV_DONTNEED)", func() error { return unix.Madvise(moved[ps:2*ps], unix.MADV_DONTNEED) })
	if len(got) != 1 || got[0].Event != uffd.EventRemove || got[0].Start != newAddr+uintptr(ps) || got[0].End != newAddr+uintptr(2*ps) {
		t.Fatalf("after madvise: %v, want Remove{%#x-%#x}", got, newAddr+uintptr(ps), newAddr+uintptr(2*ps))
	}

	got = events("munmap", func() error { return unix.Munmap(target) })
	unmapped = true
	if len(got) != 1 || got[0].Event != uffd.EventUnmap || got[0].Start != newAddr || got[0].End != newAddr+uintptr(size) {
		t.Fatalf("after munmap: %v, want Unmap{%#x-%#x}", got, newAddr, newAddr+uintptr(size))
	}
}

// forkHelperEnv selects the fork helper mode of the test binary (see
// forkHelper); TestEventFork runs it in a child process, because a fork
// event stops the forking process until it is read, and the grandchild
// must fault on registered memory outside this test process.
const forkHelperEnv = "UFFD_TEST_FORK_HELPER"

func init() {
	if os.Getenv(forkHelperEnv) == "1" {
		os.Exit(forkHelper())
	}
}

// forkResult is what the fork helper reports.
type forkResult struct {
	Err           string
	Event         string
	ChildFeatures string
	ChildPath     string
	ChildFault    bool   // the grandchild's fault arrived on the child's uffd
	ExitByte      int    // what the grandchild read from the page served
	ParentRead    int    // what the forking process itself reads there
	Served        string // the byte the child uffd's handler served
}

// forkHelper opens a userfaultfd with FeatureEventFork, registers a page,
// and forks with a raw clone(2). The grandchild reads the page and exits
// with the byte it read; the helper reads the fork event, serves the
// grandchild's fault through Message.Child, and prints what it saw.
func forkHelper() int {
	res := forkResult{ExitByte: -1, ParentRead: -1}
	err := forkHelperRun(&res)
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func forkHelperRun(res *forkResult) error {
	// The forking thread waits in a raw system call until the event is
	// read; keep garbage collections (which would wait for it) away.
	debug.SetGCPercent(-1)
	runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0)))

	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventFork})
	if err != nil {
		return err
	}
	defer u.Close()
	m, err := mem.Map(mem.Anonymous, mem.PageSize())
	if err != nil {
		return err
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		return err
	}
	addr, data := m.Addr(), m.Data

	forked := make(chan uintptr, 1)
	go func() {
		runtime.LockOSThread() // the grandchild starts on this thread
		pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
		if errno == 0 && pid == 0 {
			// The grandchild: one thread, raw system calls only.
			b := data[0]
			syscall.RawSyscall(syscall.SYS_EXIT_GROUP, uintptr(b), 0, 0)
		}
		if errno != 0 {
			pid = 0
		}
		forked <- pid
	}()

	msgs := make([]uffd.Message, 1)
	n, err := u.ReadMessages(context.Background(), msgs)
	if err != nil {
		return fmt.Errorf("read fork event: %w", err)
	}
	if n != 1 || msgs[0].Event != uffd.EventFork || msgs[0].Child == nil {
		return fmt.Errorf("read %v, want a fork event with a child", msgs[:n])
	}
	child := msgs[0].Child
	defer child.Close()
	res.Event = msgs[0].Event.String()
	res.ChildFeatures = child.Features().String()
	res.ChildPath = child.Path().String()
	pid := <-forked
	if pid == 0 {
		return errors.New("clone failed")
	}

	// The grandchild faults on its copy of the page: serve it through the
	// child's userfaultfd.
	n, err = child.ReadMessages(context.Background(), msgs)
	if err != nil {
		return fmt.Errorf("read the grandchild's fault: %w", err)
	}
	res.ChildFault = n == 1 && msgs[0].Event == uffd.EventPagefault && msgs[0].Address == addr
	page := bytes.Repeat([]byte{'G'}, mem.PageSize())
	if _, err := child.Copy(addr, page, 0); err != nil {
		return err
	}
	res.Served = "G"
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(int(pid), &ws, 0, nil); err != nil {
		return err
	}
	res.ExitByte = ws.ExitStatus()

	// The forking process's own page is still missing: serve it on the
	// parent userfaultfd with another byte.
	go func() {
		n, err := u.ReadMessages(context.Background(), msgs)
		if err == nil && n == 1 {
			u.Copy(msgs[0].Address&^uintptr(mem.PageSize()-1), bytes.Repeat([]byte{'P'}, mem.PageSize()), 0)
		}
	}()
	res.ParentRead = int(m.Data[0])
	return nil
}

// TestEventFork checks the fork event end to end: the forking process
// waits until the event is read, Message.Child is a working userfaultfd of
// the new process with the parent's features, it serves the new process's
// faults, and the parent's own registration is unaffected.
func TestEventFork(t *testing.T) {
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventFork})
	if errors.Is(err, unix.EPERM) {
		testutil.Skipf(t, "FeatureEventFork needs CAP_SYS_PTRACE")
	}
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), forkHelperEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = hangTimeout
	done := make(chan struct{})
	var out []byte
	go func() {
		defer close(done)
		out, err = cmd.Output()
	}()
	select {
	case <-done:
	case <-time.After(hangTimeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("fork helper hung\n%s", stderr.String())
	}
	if err != nil {
		t.Fatalf("fork helper: %v\n%s", err, stderr.String())
	}
	var res forkResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("fork helper output %q: %v", out, err)
	}
	if res.Err != "" {
		t.Fatalf("fork helper: %s", res.Err)
	}
	if res.Event != "Fork" || res.ChildPath != "fork" {
		t.Errorf("event %q, child path %q; want Fork, fork", res.Event, res.ChildPath)
	}
	if res.ChildFeatures != uffd.FeatureEventFork.String() {
		t.Errorf("child features %q, want the parent's (%v)", res.ChildFeatures, uffd.FeatureEventFork)
	}
	if !res.ChildFault {
		t.Error("the new process's fault did not arrive on the child userfaultfd at the registered address")
	}
	if res.ExitByte != 'G' {
		t.Errorf("the new process read %q from the page served through the child userfaultfd, want 'G'", rune(res.ExitByte))
	}
	if res.ParentRead != 'P' {
		t.Errorf("the forking process read %q from its own page, want 'P' (served on its own userfaultfd)", rune(res.ParentRead))
	}
}
