//go:build linux

package noncoop

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "helper" {
		os.Exit(runHelper())
	}
	os.Exit(testutil.Main(m))
}

// hangTimeout bounds waits that end only if the code under test works.
const hangTimeout = 30 * time.Second

// proc is a running helper process, seen from the test.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	conn   *net.UnixConn
	in     *bufio.Reader
	stderr testutil.Buffer
	done   chan struct{}
}

// startHelper starts a helper process, stopped when the test ends.
func startHelper(t testing.TB) *proc {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "socket"), os.NewFile(uintptr(fds[1]), "socket")
	defer theirs.Close()
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, conn: c.(*net.UnixConn), done: make(chan struct{})}
	p.in = bufio.NewReader(p.conn)
	p.cmd = exec.Command(exe, "-test.run=^$")
	// A helper built with -race would otherwise sleep a second at exit.
	p.cmd.Env = append(os.Environ(), roleEnv+"=helper", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	p.cmd.ExtraFiles = []*os.File{theirs}
	p.cmd.Stderr = &p.stderr
	p.cmd.Stdout = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.conn.Close() // the helper exits at the end of its commands
		wait := hangTimeout
		if t.Failed() {
			// A thread of the helper may wait for a fault nobody serves.
			wait = time.Second
		}
		select {
		case <-p.done:
		case <-time.After(wait):
			p.cmd.Process.Kill()
			<-p.done
			if !t.Failed() {
				t.Errorf("helper did not exit\n%s", p.stderr.String())
			}
		}
	})
	return p
}

// setup has the helper map and register kind memory and hand over its
// userfaultfd, which the test owns from then on.
func (p *proc) setup(kind mem.Kind, pages int, features uffd.Feature, mode uffd.Mode) (*uffd.UFFD, layout) {
	p.t.Helper()
	p.send(command{Op: "setup", Kind: kind.String(), Pages: pages, Features: features, Mode: mode})
	if p.in.Buffered() != 0 {
		p.t.Fatal("helper sent more than its replies")
	}
	type result struct {
		u   *uffd.UFFD
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		u, b, _, err := handoff.Receive(p.conn, features)
		ch <- result{u, b, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(hangTimeout):
		p.t.Fatalf("no userfaultfd from the helper\n%s", p.stderr.String())
	}
	if r.err != nil {
		// The helper answers a failed setup with a JSON reply, which
		// Receive took for a bad message: show the rest of it.
		p.conn.SetReadDeadline(time.Now().Add(time.Second))
		rest, _ := p.in.ReadString('\n')
		p.t.Fatalf("setup %v: %v %s\n%s", kind, r.err, rest, p.stderr.String())
	}
	p.t.Cleanup(func() { r.u.Close() })
	var l layout
	if err := json.Unmarshal(r.b, &l); err != nil {
		p.t.Fatal(err)
	}
	if r.u.Features() != features {
		p.t.Fatalf("received a userfaultfd with features %v, want %v", r.u.Features(), features)
	}
	return r.u, l
}

func (p *proc) send(c command) {
	p.t.Helper()
	b, _ := json.Marshal(c)
	if _, err := p.conn.Write(append(b, '\n')); err != nil {
		p.t.Fatalf("command %s: %v\n%s", c.Op, err, p.stderr.String())
	}
}

// pending is a command sent to the helper whose reply may not have come.
type pending struct {
	p    *proc
	op   string
	ch   chan reply
	errc chan error
	r    *reply
}

// start sends a command; wait for its reply with the result's wait.
func (p *proc) start(c command) *pending {
	p.t.Helper()
	p.send(c)
	pd := &pending{p: p, op: c.Op, ch: make(chan reply, 1), errc: make(chan error, 1)}
	go func() {
		line, err := p.in.ReadBytes('\n')
		if err != nil {
			pd.errc <- err
			return
		}
		var r reply
		if err := json.Unmarshal(line, &r); err != nil {
			pd.errc <- fmt.Errorf("reply %q: %w", line, err)
			return
		}
		pd.ch <- r
	}()
	return pd
}

// done reports whether the reply came, without waiting.
func (pd *pending) done() bool {
	if pd.r != nil {
		return true
	}
	select {
	case r := <-pd.ch:
		pd.r = &r
		return true
	default:
		return false
	}
}

// wait waits up to d (hangTimeout if 0) for the reply, failing the test
// if it does not come or reports an error.
func (pd *pending) wait(d time.Duration) reply {
	pd.p.t.Helper()
	return pd.waitOr(d, nil)
}

// waitOr is wait that also fails the test when a monitor ends early
// (anything arrives on monitor): the reply would never come.
func (pd *pending) waitOr(d time.Duration, monitor <-chan error) reply {
	p := pd.p
	p.t.Helper()
	if d == 0 {
		d = hangTimeout
	}
	if pd.r == nil {
		select {
		case r := <-pd.ch:
			pd.r = &r
		case err := <-monitor:
			p.t.Fatalf("helper: %s: the monitor stopped: %v\n%s", pd.op, err, p.stderr.String())
		case err := <-pd.errc:
			p.t.Fatalf("helper: %s: %v\n%s", pd.op, err, p.stderr.String())
		case <-time.After(d):
			p.t.Fatalf("helper: %s: no reply within %v (a fault or event never served?)\n%s\n%s", pd.op, d, p.stderr.String(), p.stacks())
		}
	}
	if pd.r.Err != "" {
		p.t.Fatalf("helper: %s: %s\n%s", pd.op, pd.r.Err, p.stderr.String())
	}
	return *pd.r
}

// do runs a command and returns its reply.
func (p *proc) do(c command) reply {
	p.t.Helper()
	return p.start(c).wait(0)
}

// stacks describes where the helper's threads and its children wait in
// the kernel, for the report of a hang.
func (p *proc) stacks() string {
	var sb strings.Builder
	var walk func(pid string, depth int)
	walk = func(pid string, depth int) {
		tasks, _ := os.ReadDir("/proc/" + pid + "/task")
		for _, task := range tasks {
			dir := "/proc/" + pid + "/task/" + task.Name()
			wchan, _ := os.ReadFile(dir + "/wchan")
			stack, _ := os.ReadFile(dir + "/stack")
			fmt.Fprintf(&sb, "%*spid %s tid %s wchan %s\n%s", depth*2, "", pid, task.Name(), wchan, stack)
			kids, _ := os.ReadFile(dir + "/children")
			for _, k := range strings.Fields(string(kids)) {
				walk(k, depth+1)
			}
		}
	}
	walk(strconv.Itoa(p.cmd.Process.Pid), 0)
	return sb.String()
}

// patternImage returns pages pages of size psize, page i holding
// pattern(i, ·).
func patternImage(pages, psize int) []byte {
	b := make([]byte, pages*psize)
	for i := 0; i < pages; i++ {
		fill(b[i*psize:(i+1)*psize], i)
	}
	return b
}

// kindFeatures returns the features MISSING (and, with wp, WRITEPROTECT)
// registration of kind needs.
func kindFeatures(kind mem.Kind, wp bool) uffd.Feature {
	var f uffd.Feature
	switch kind {
	case mem.Shmem, mem.ShmemPrivate:
		f = uffd.FeatureMissingShmem
	case mem.Hugetlb, mem.HugetlbPrivate:
		f = uffd.FeatureMissingHugetlbfs
	}
	if wp {
		f |= uffd.FeatureWPFaults
		if kind != mem.Anonymous {
			f |= uffd.FeatureWPHugetlbfsShmem
		}
	}
	return f
}

// pagesFor returns how many pages of kind a test uses: small, but enough
// pages to split in halves and to span a few huge pages.
func pagesFor(kind mem.Kind, small, huge int) int {
	if kind.Huge() {
		return huge
	}
	return small
}

// requireFeatures skips the test when the kernel lacks features.
func requireFeatures(t testing.TB, want uffd.Feature) {
	t.Helper()
	sup, err := uffd.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if missing := want &^ sup.Features; missing != 0 {
		testutil.Skipf(t, "kernel lacks userfaultfd features %v", missing)
	}
	if want.Has(uffd.FeatureEventFork) {
		// FeatureEventFork needs CAP_SYS_PTRACE, and the helpers need
		// root to drop to another user.
		testutil.RequireRoot(t)
	}
}

// forKinds runs fn for every memory kind, reserving hugeNeed huge pages for
// the hugetlb kinds: all the test takes (the helper's mapping, its alias
// for the private kind, the copies a forked child makes).
func forKinds(t *testing.T, hugeNeed int, fn func(t *testing.T, kind mem.Kind)) {
	for _, k := range mem.Kinds {
		t.Run(k.String(), func(t *testing.T) {
			if k.Huge() {
				testutil.ReserveHugePages(t, hugeNeed)
			}
			fn(t, k)
		})
	}
}

// releaseAdvice is how uffd-unit-tests.c releases pages of a kind:
// MADV_REMOVE for shared file memory, MADV_DONTNEED otherwise.
func releaseAdvice(kind mem.Kind) int {
	if kind.Shared() {
		return unix.MADV_REMOVE
	}
	return unix.MADV_DONTNEED
}

// pagemapEntry reads the pagemap entry of addr in process pid.
func pagemapEntry(t *testing.T, pid int, addr uintptr) uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr/uintptr(os.Getpagesize())*8)); err != nil {
		t.Fatal(err)
	}
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

const pmUffdWP = 1 << 57

// serveLoop runs fn on every message read from u in a goroutine until the
// returned stop function is called; stop returns the first error.
func serveLoop(u *uffd.UFFD, fn func(m *uffd.Message) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		msgs := make([]uffd.Message, 16)
		var first error
		for {
			n, err := u.ReadMessages(ctx, msgs)
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, uffd.ErrClosed) && first == nil {
					first = err
				}
				done <- first
				return
			}
			for i := range msgs[:n] {
				if err := fn(&msgs[i]); err != nil && first == nil {
					first = fmt.Errorf("%v: %w", msgs[i], err)
				}
			}
		}
	}()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(hangTimeout):
			return errors.New("server did not stop")
		}
	}
}
