package uffd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// hangTimeout bounds waits that only end if the code under test works: it
// detects a hang, it does not measure speed.
const hangTimeout = 30 * time.Second

// server reads messages from a userfaultfd in a goroutine and hands each to
// fn, until stop is called. It records every message it read.
type server struct {
	u      *uffd.UFFD
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	msgs []uffd.Message
	err  error
}

// serve starts a server for u; the test's cleanup stops it and fails the
// test on a handler error.
func serve(t *testing.T, u *uffd.UFFD, fn func(uffd.Message) error) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{u: u, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]uffd.Message, 16)
		for {
			n, err := u.ReadMessages(ctx, buf)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, uffd.ErrClosed) {
					s.fail(err)
				}
				return
			}
			for _, m := range buf[:n] {
				s.mu.Lock()
				s.msgs = append(s.msgs, m)
				s.mu.Unlock()
				if fn != nil {
					if err := fn(m); err != nil {
						s.fail(fmt.Errorf("handling %v: %w", m, err))
					}
				}
			}
		}
	}()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func (s *server) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// stop ends the server and returns the first error it met. Idempotent.
func (s *server) stop() error {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(hangTimeout):
		return errors.New("server did not stop")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// messages returns a copy of the messages read so far.
func (s *server) messages() []uffd.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uffd.Message(nil), s.msgs...)
}

// copyPattern answers a page fault by copying the page's pattern (see
// pattern) into it; a lost race (ErrPageExists) only wakes.
func copyPattern(u *uffd.UFFD, m *mem.Mapping) func(uffd.Message) error {
	page := make([]byte, m.PageSize)
	return func(msg uffd.Message) error {
		if msg.Event != uffd.EventPagefault {
			return nil
		}
		addr := msg.Address &^ uintptr(m.PageSize-1)
		fillPattern(page, int((addr-m.Addr())/uintptr(m.PageSize)))
		_, err := u.Copy(addr, page, 0)
		if errors.Is(err, uffd.ErrPageExists) {
			return u.Wake(addr, uintptr(m.PageSize))
		}
		return err
	}
}

// fillPattern fills p with page n's pattern: every 8th byte holds n+1, the
// others a mix of n and the offset, so that no two pages look alike and no
// page is all zeroes.
func fillPattern(p []byte, n int) {
	for i := range p {
		p[i] = byte(n+1) ^ byte(i>>3)
	}
}

// checkPattern checks every byte of page n's pattern. The page must be
// populated already: it fails the test from the test's goroutine.
func checkPattern(t *testing.T, p []byte, n int) {
	t.Helper()
	if i := selftMismatch(p, n); i != -1 {
		t.Fatalf("page %d byte %d: got %#x, want the pattern's %#x", n, i, p[i], byte(n+1)^byte(i>>3))
	}
}

// mapKind maps pages of a kind, reserving huge pages when needed, and
// unmaps them when the test ends.
func mapKind(t *testing.T, kind mem.Kind, pages int) *mem.Mapping {
	t.Helper()
	size := pages * mem.PageSize()
	if kind.Huge() {
		hps, err := mem.HugePageSize()
		if err != nil {
			testutil.Skipf(t, "no hugetlbfs: %v", err)
		}
		size = pages * hps
		testutil.ReserveHugePagesFor(t, kind, size)
	}
	m, err := mem.Map(kind, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// openUFFD opens a userfaultfd with the given features, closed when the
// test ends.
func openUFFD(t *testing.T, features uffd.Feature) *uffd.UFFD {
	t.Helper()
	u, err := uffd.Open(uffd.Config{Features: features})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// featuresFor returns the features a kind needs for MISSING registration.
func featuresFor(kind mem.Kind) uffd.Feature {
	switch kind {
	case mem.Shmem, mem.ShmemPrivate:
		return uffd.FeatureMissingShmem
	case mem.Hugetlb, mem.HugetlbPrivate:
		return uffd.FeatureMissingHugetlbfs
	}
	return 0
}

// forKinds runs a subtest for each memory kind.
func forKinds(t *testing.T, kinds []mem.Kind, fn func(t *testing.T, kind mem.Kind)) {
	for _, k := range kinds {
		t.Run(k.String(), func(t *testing.T) { fn(t, k) })
	}
}

// inGoroutine runs fn in a new goroutine and waits for it, failing the test
// if it does not return (a fault that is never served).
func inGoroutine(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(hangTimeout):
		t.Fatalf("%s: did not return within %v (fault never served?)", what, hangTimeout)
	}
}

// Tests touch registered memory from inside system calls (testutil's
// KernelLoad, KernelStore, KernelCopyOut): a goroutine of this process
// that faults in Go code, served by another goroutine, can hang the
// process in a garbage collection. Only the tests of user-mode behaviour
// (SIGBUS, UserModeOnly, preemption of a fault) fault from Go code.

// kernelLoad returns p[i], read inside write(2) in a new goroutine; it
// fails the test if the read never returns or fails.
func kernelLoad(t *testing.T, what string, p []byte, i int) byte {
	t.Helper()
	var b byte
	var err error
	inGoroutine(t, what, func() { b, err = testutil.KernelLoad(p, i) })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return b
}

// kernelStore stores v in p[i] inside read(2) in a new goroutine; it fails
// the test if the store never returns or fails.
func kernelStore(t *testing.T, what string, p []byte, i int, v byte) {
	t.Helper()
	var err error
	inGoroutine(t, what, func() { err = testutil.KernelStore(p, i, v) })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// raisesSigbus runs fn, a plain load or store of registered memory, and
// reports whether it raised SIGBUS (recovered as a fault panic) instead of
// returning.
func raisesSigbus(fn func()) (sigbus bool) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); ok {
				sigbus = true
				return
			}
			panic(r)
		}
	}()
	fn()
	return false
}

// sigbusRead reads p[i] in a new goroutine, failing the test if the read
// never returns, and reports whether it raised SIGBUS.
func sigbusRead(t *testing.T, p []byte, i int) bool {
	t.Helper()
	var sig bool
	inGoroutine(t, "read a registered byte", func() { sig = raisesSigbus(func() { sink = p[i] }) })
	return sig
}

// sigbusWrite is sigbusRead for a one-byte store of v to p[i].
func sigbusWrite(t *testing.T, p []byte, i int, v byte) bool {
	t.Helper()
	var sig bool
	inGoroutine(t, "write a registered byte", func() { sig = raisesSigbus(func() { p[i] = v }) })
	return sig
}

// pollReadable waits up to timeout (0: not at all) for a message to be
// pending on u, without reading it, and reports whether one is.
func pollReadable(t *testing.T, u *uffd.UFFD, timeout time.Duration) bool {
	t.Helper()
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var perr error
	if err := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, perr = unix.Poll(fds, int(timeout.Milliseconds()))
			if perr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if perr != nil {
		t.Fatalf("poll: %v", perr)
	}
	return n > 0
}

// sink keeps loads from being optimized away.
var sink byte

// A thread whose fault is interrupted by a signal (the Go runtime preempts
// with SIGURG) faults again and queues a second message for the same page,
// so handlers must expect repeats and tests count distinct faults.

// once wraps a fault handler so that each fault (page and kind) is resolved
// once: a repeated message only wakes the page, as the first resolve may
// already have raced the new fault.
func once(u *uffd.UFFD, pageSize int, fn func(uffd.Message) error) func(uffd.Message) error {
	seen := map[faultKey]bool{}
	return func(msg uffd.Message) error {
		if msg.Event != uffd.EventPagefault {
			return fn(msg)
		}
		k := keyOf(msg, pageSize)
		if seen[k] {
			return u.Wake(k.page, uintptr(pageSize))
		}
		seen[k] = true
		return fn(msg)
	}
}

type faultKey struct {
	page  uintptr
	flags uffd.FaultFlags // the kind: write-protect or minor
}

func keyOf(msg uffd.Message, pageSize int) faultKey {
	return faultKey{msg.Address &^ uintptr(pageSize-1), msg.Flags & (uffd.FaultWriteProtect | uffd.FaultMinor)}
}

// distinct drops repeated page faults (same page, same kind) from msgs,
// keeping the first of each, in order.
func distinct(msgs []uffd.Message, pageSize int) []uffd.Message {
	seen := map[faultKey]bool{}
	var out []uffd.Message
	for _, m := range msgs {
		if m.Event == uffd.EventPagefault {
			k := keyOf(m, pageSize)
			if seen[k] {
				continue
			}
			seen[k] = true
		}
		out = append(out, m)
	}
	return out
}

// registered maps pages of a kind, opens a userfaultfd with features and
// registers the whole mapping in mode; it returns the range's ioctls. All
// of it is released when the test ends.
func registered(t *testing.T, kind mem.Kind, pages int, features uffd.Feature, mode uffd.Mode) (*uffd.UFFD, *mem.Mapping, uffd.Ioctl) {
	t.Helper()
	m := mapKind(t, kind, pages)
	u := openUFFD(t, features)
	ioctls, err := u.Register(m.Addr(), m.Len(), mode)
	if err != nil {
		t.Fatal(err)
	}
	return u, m, ioctls
}
