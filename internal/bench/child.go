//go:build linux

package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/handoff"
)

// envFaulter carries a faulter child's configuration (childConfig, JSON).
// Its socket to the parent is descriptor 3.
const envFaulter = "UFFD_BENCH_FAULTER"

// IsChild reports whether this process was started as one of the
// benchmark's children: the faulting process of FaultersIn Child, or a
// test VM of RunFirecracker.
func IsChild() bool { return os.Getenv(envFaulter) != "" || fctest.Child() }

// ChildMain runs the child this process was started as and returns its
// exit status. A program that runs the benchmark with faulters in another
// process, or its Firecracker comparison, must call it first thing in main
// when IsChild reports true (the command uffd does).
func ChildMain() int {
	if fctest.Child() {
		return fctest.Main()
	}
	if err := faulterChild(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: faulter process: %v\n", err)
		return 1
	}
	return 0
}

// childConfig is what the faulting process is told.
type childConfig struct {
	MiB      int  `json:"mib"`
	Faulters int  `json:"faulters"`
	Read     bool `json:"read"`
	Random   bool `json:"random"`
	Want     byte `json:"want"`
	Procs    int  `json:"gomaxprocs"`
	// Features of the userfaultfd.
	Features uffd.Feature `json:"features"`
}

// childHello is the payload that comes with the userfaultfd.
type childHello struct {
	Addr uintptr `json:"addr"`
	Len  int     `json:"len"`
}

// childResult is the faulting process's report of a run, and of the check
// after it.
type childResult struct {
	ElapsedNS int64        `json:"elapsed_ns,omitempty"`
	P50NS     int64        `json:"p50_ns,omitempty"`
	P99NS     int64        `json:"p99_ns,omitempty"`
	Bad       *VerifyError `json:"bad,omitempty"`
	Error     string       `json:"error,omitempty"`
}

// The parent's commands, one byte each.
const (
	cmdFault  = 'f'
	cmdVerify = 'v'
)

// faulterChild is the faulting process: it makes its userfaultfd and
// region, hands both over on descriptor 3 and closes its own copy (so that
// once the handler closes its copy, a page never served reads as zeroes in
// the check instead of hanging it), faults when told, reports, and checks
// every byte when told.
func faulterChild() error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(envFaulter)), &cfg); err != nil {
		return fmt.Errorf("bad %s: %w", envFaulter, err)
	}
	if cfg.MiB < 1 || cfg.Faulters < 1 || cfg.Faulters > MaxThreads {
		return fmt.Errorf("bad %s: %+v", envFaulter, cfg)
	}
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), cfg.Procs))
	f := os.NewFile(3, "bench-socket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("descriptor 3 is a %T, not a UNIX socket", c)
	}
	defer conn.Close()

	size := cfg.MiB << 20
	// Page faults only, as the C reference's faulting process, unless the
	// engine under test orders events.
	u, err := uffd.Open(uffd.Config{Features: cfg.Features})
	if err != nil {
		return err
	}
	region, err := mapRegion(size)
	if err != nil {
		u.Close()
		return err
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(region)))
	if _, err := u.Register(addr, uintptr(size), uffd.ModeMissing); err != nil {
		u.Close()
		return err
	}
	hello, _ := json.Marshal(childHello{Addr: addr, Len: size})
	err = handoff.Send(conn, u, hello)
	u.Close()
	if err != nil {
		return err
	}

	r := bufio.NewReader(conn)
	if b, err := r.ReadByte(); err != nil || b != cmdFault {
		return fmt.Errorf("waiting for the start: %v (%q)", err, b)
	}
	pages := size / PageSize
	var order []int
	if cfg.Random {
		order = permutation(pages, cfg.Faulters)
	}
	lat := make([]int64, pages)
	var stop atomic.Bool
	runtime.GC() // not during the run
	elapsed, terr := fault(region, cfg.Faulters, order, lat, cfg.Read, cfg.Want, &stop)
	res := childResult{ElapsedNS: elapsed.Nanoseconds()}
	p50, p99 := percentiles(lat)
	res.P50NS, res.P99NS = p50.Nanoseconds(), p99.Nanoseconds()
	if ve := (*VerifyError)(nil); errors.As(terr, &ve) {
		res.Bad = ve
	} else if terr != nil {
		res.Error = terr.Error()
	}
	if err := writeJSONLine(conn, res); err != nil {
		return err
	}

	if b, err := r.ReadByte(); err != nil || b != cmdVerify {
		return fmt.Errorf("waiting for the check: %v (%q)", err, b)
	}
	var check childResult
	if err := verify(region, cfg.Want, !cfg.Read); err != nil {
		errors.As(err, &check.Bad)
	}
	return writeJSONLine(conn, check)
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// child is a faulting process started for one run.
type child struct {
	cmd    *exec.Cmd
	conn   *net.UnixConn
	r      *bufio.Reader
	stderr strings.Builder
}

// startChild starts the faulting process and receives its userfaultfd.
func (b *Bench) startChild(ctx context.Context) (*child, *uffd.UFFD, childHello, error) {
	cfg := b.cfg
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, childHello{}, fmt.Errorf("bench: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "bench-parent"), os.NewFile(uintptr(fds[1]), "bench-child")
	defer theirs.Close() // once the child has it, or failed to start: the end of its stream is the child's exit
	env, _ := json.Marshal(childConfig{
		MiB: cfg.MiB, Faulters: cfg.Faulters, Read: cfg.ReadTouch, Random: cfg.Random, Want: cfg.want(),
		Procs:    cfg.Faulters + 1, // the faulting threads keep their Ps
		Features: cfg.Engine.features(),
	})
	ch := &child{}
	ch.cmd = exec.Command(cfg.ChildExe)
	ch.cmd.Env = append(os.Environ(), envFaulter+"="+string(env))
	ch.cmd.ExtraFiles = []*os.File{theirs}
	ch.cmd.Stderr = &ch.stderr
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, nil, childHello{}, fmt.Errorf("bench: socket: %w", err)
	}
	ch.conn = c.(*net.UnixConn)
	ch.r = bufio.NewReader(ch.conn)
	err = ch.cmd.Start()
	theirs.Close()
	if err != nil {
		ch.conn.Close()
		return nil, nil, childHello{}, fmt.Errorf("bench: start the faulting process: %w", err)
	}
	// Until the run is over, an ended context kills the child, which ends
	// any read of its socket.
	stopWatch := context.AfterFunc(ctx, func() { ch.cmd.Process.Kill() })
	defer stopWatch()
	u, payload, _, err := handoff.Receive(ch.conn, 0)
	if err != nil {
		ch.kill()
		return nil, nil, childHello{}, ch.fail(ctx, "receive its userfaultfd", err)
	}
	var h childHello
	if err := json.Unmarshal(payload, &h); err != nil || h.Len != b.size {
		u.Close()
		ch.kill()
		return nil, nil, childHello{}, fmt.Errorf("bench: the faulting process sent %q: want its region of %d bytes", payload, b.size)
	}
	return ch, u, h, nil
}

// kill ends the child and waits for it.
func (ch *child) kill() {
	ch.cmd.Process.Kill()
	ch.cmd.Wait()
	ch.conn.Close()
}

// fail makes an error of a failed exchange with the child, with what it
// printed.
func (ch *child) fail(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := strings.TrimSpace(ch.stderr.String())
	if msg != "" {
		msg = " (its stderr: " + msg + ")"
	}
	return fmt.Errorf("bench: faulting process %d: %s: %w%s", ch.cmd.Process.Pid, what, err, msg)
}

// exchange sends a command and reads the child's report.
func (ch *child) exchange(ctx context.Context, cmd byte, what string) (childResult, error) {
	stop := context.AfterFunc(ctx, func() { ch.cmd.Process.Kill() })
	defer stop()
	var res childResult
	if _, err := ch.conn.Write([]byte{cmd}); err != nil {
		return res, ch.fail(ctx, what, err)
	}
	line, err := ch.r.ReadBytes('\n')
	if err != nil {
		return res, ch.fail(ctx, what, err)
	}
	if err := json.Unmarshal(line, &res); err != nil {
		return res, ch.fail(ctx, what, fmt.Errorf("report %q: %w", line, err))
	}
	return res, nil
}

// runChild does one run with the faulters in a child process.
func (b *Bench) runChild(ctx context.Context) (Sample, error) {
	ch, u, h, err := b.startChild(ctx)
	if err != nil {
		return Sample{}, err
	}
	defer ch.kill()
	var closeOnce sync.Once
	closeUFFD := func() { closeOnce.Do(func() { u.Close() }) }
	defer closeUFFD()
	sv, err := b.serve(ctx, u, h.Addr, h.Len)
	if err != nil {
		return Sample{}, err
	}
	p := sv.p
	// A pager that stops early: closing the userfaultfd lets the child's
	// faulters go on with zero pages, which its check reports.
	var res childResult
	var cpu time.Duration
	serveErr, serveDone := sv.while(func() {
		c0 := processCPU()
		res, err = ch.exchange(ctx, cmdFault, "run")
		cpu = processCPU() - c0
	}, closeUFFD)
	s := Sample{Elapsed: time.Duration(res.ElapsedNS), P50: time.Duration(res.P50NS), P99: time.Duration(res.P99NS), Stats: p.Stats(), CPU: cpu}
	closeUFFD()
	switch {
	case ctx.Err() != nil:
		return s, ctx.Err()
	case serveErr != nil:
		return s, fmt.Errorf("bench: serve: %w", serveErr)
	case serveDone:
		return s, errStopped
	case err != nil:
		return s, err
	case res.Bad != nil:
		return s, res.Bad
	case res.Error != "":
		return s, ch.fail(ctx, "run", errors.New(res.Error))
	}
	check, err := ch.exchange(ctx, cmdVerify, "check")
	if err != nil {
		return s, err
	}
	if check.Bad != nil {
		return s, check.Bad
	}
	if err := ch.conn.Close(); err != nil {
		return s, err
	}
	if err := ch.cmd.Wait(); err != nil {
		return s, ch.fail(ctx, "exit", err)
	}
	return s, nil
}
