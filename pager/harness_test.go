package pager_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// pattern returns n bytes where each page holds its index and offset.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/4096*7 + i%251 + 1)
	}
	return b
}

// setup maps size bytes of kind, opens a userfaultfd with features and
// registers the mapping in MISSING mode.
func setup(t *testing.T, kind mem.Kind, size int, features uffd.Feature) (*uffd.UFFD, *mem.Mapping) {
	t.Helper()
	if kind.Huge() {
		testutil.ReserveHugePagesFor(t, kind, size)
	}
	m, err := mem.Map(kind, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	u := open(t, features)
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	return u, m
}

func open(t *testing.T, features uffd.Feature) *uffd.UFFD {
	t.Helper()
	u, err := uffd.Open(uffd.Config{Features: features})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// engine is one configuration of the engine that the conformance tests
// run over: every behaviour must hold in each.
type engine struct {
	name string
	// with returns cfg set to use this engine.
	with func(t *testing.T, cfg pager.Config) pager.Config
}

var engines = []engine{
	// The pager's own engine: readers read an event-less userfaultfd
	// with read(2) and wait in epoll otherwise, spinning after faults.
	{"own", func(t *testing.T, cfg pager.Config) pager.Config { return cfg }},
	// An engine whose readers never spin: each waits in the kernel as
	// soon as it has nothing to read (blocking in read(2) on an
	// event-less userfaultfd).
	{"nospin", func(t *testing.T, cfg pager.Config) pager.Config {
		cfg.Engine = newEngine(t, pager.EngineConfig{Spin: -1})
		return cfg
	}},
	// An engine shared with another pager: readers wait in epoll on
	// every userfaultfd of the engine.
	{"shared", func(t *testing.T, cfg pager.Config) pager.Config {
		cfg.Engine = sharedEngine(t)
		return cfg
	}},
}

// sharedEngine returns an engine that another pager (of an idle
// userfaultfd) also uses until the test ends.
func sharedEngine(t *testing.T) *pager.Engine {
	t.Helper()
	e := newEngine(t, pager.EngineConfig{})
	serving(t, newPager(t, open(t, 0), pager.Config{Engine: e}))
	return e
}

// newEngine starts an engine that is closed when the test ends, after
// the pagers that use it stopped (cleanups run last-registered first).
func newEngine(t *testing.T, cfg pager.EngineConfig) *pager.Engine {
	t.Helper()
	e, err := pager.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("engine Close: %v", err)
		}
	})
	return e
}

// forEngines runs fn once per engine configuration.
func forEngines(t *testing.T, fn func(t *testing.T, e engine)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { fn(t, e) })
	}
}

func newPager(t *testing.T, u *uffd.UFFD, cfg pager.Config) *pager.Pager {
	t.Helper()
	p, err := pager.New(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// add adds a region covering m served from src, failing the test on error.
func add(t *testing.T, p *pager.Pager, m *mem.Mapping, src pager.Source, policy pager.ErrorPolicy) {
	t.Helper()
	if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), PageSize: m.PageSize, Source: src, OnError: policy}); err != nil {
		t.Fatal(err)
	}
}

// hangLimit bounds every wait of the tests: a hang detector, not a timing
// assertion.
const hangLimit = 20 * time.Second

// serving runs p.Serve until the test ends (or stop is called), waits until
// it serves, and fails the test if Serve returns an error.
func serving(t *testing.T, p *pager.Pager) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx) }()
	select {
	case <-p.Serving():
	case err := <-done:
		cancel()
		t.Fatalf("Serve returned before serving: %v", err)
	case <-time.After(hangLimit):
		t.Fatal("Serve did not start serving")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(hangLimit):
				t.Error("Serve did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// load reads b[i] with a plain load: a fault from ordinary Go code, which
// the engine serves however the Go scheduler stops this goroutine.
//
//go:noinline
func load(b []byte, i int) byte { return b[i] }

// checkAll compares every byte of data with want.
func checkAll(t *testing.T, data, want []byte) {
	t.Helper()
	bad := 0
	for i := range data {
		if got := load(data, i); got != want[i] {
			if bad < 5 {
				t.Errorf("byte %d (page %d) = %#x, want %#x", i, i/4096, got, want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d bytes differ", bad)
	}
}

// kernelTouch makes faults from inside system calls, as a VMM's device
// emulation or a read(2) into guest memory does: the faulting goroutine is
// in a system call, never in the way of a stop-the-world.
type kernelTouch struct{ r, w int }

func newKernelTouch(t *testing.T) *kernelTouch {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return &kernelTouch{p[0], p[1]}
}

// read reads b[i] through write(2): the kernel copies from the page.
func (k *kernelTouch) read(b []byte, i int) (byte, error) {
	_, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(k.w), uintptr(unsafe.Pointer(&b[i])), 1)
	if e != 0 {
		return 0, e
	}
	var v [1]byte
	if _, err := unix.Read(k.r, v[:]); err != nil {
		return 0, err
	}
	return v[0], nil
}

// write stores v at b[i] through read(2): the kernel copies to the page.
func (k *kernelTouch) write(b []byte, i int, v byte) error {
	if _, err := unix.Write(k.w, []byte{v}); err != nil {
		return err
	}
	_, _, e := unix.Syscall(unix.SYS_READ, uintptr(k.r), uintptr(unsafe.Pointer(&b[i])), 1)
	if e != 0 {
		var drain [1]byte
		unix.Read(k.r, drain[:])
		return e
	}
	return nil
}

// within runs fn in a goroutine and fails the test if it does not return
// within hangLimit.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(hangLimit):
		t.Fatalf("%s did not finish in %v", what, hangLimit)
	}
}

// eventually waits for cond, failing the test after hangLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %v", what, hangLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

func isErrno(err error, e syscall.Errno) bool { return errors.Is(err, e) }

func unsafeAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

var _ = fmt.Sprint
