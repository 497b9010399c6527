//go:build linux

package handler_test

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/pager"
)

// memFile writes a memory file of size random bytes (no zero page, so that
// zeroes served where data belongs show) and returns its path and
// contents.
func memFile(t testing.TB, dir string, size int) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	r.Read(b)
	for i := range b {
		if b[i] == 0 {
			b[i] = 1
		}
	}
	path := filepath.Join(dir, "mem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, b
}

// daemon is a Server serving on a socket, as `uffd firecracker` runs it.
type daemon struct {
	t       testing.TB
	s       *handler.Server
	sock    string
	memPath string
	mem     []byte
	logs    *testutil.Buffer
	cancel  context.CancelFunc
	done    chan struct{} // closed when Serve returned, with err set
	err     error
}

// sockDir returns a short directory for sockets (sun_path holds 108
// bytes; test temporary directories can be longer).
func sockDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

const testMem = 64 << 20

// startDaemon starts a server on a memory file of size bytes. cfg's
// MemFile and Logger are filled in.
func startDaemon(t testing.TB, size int, cfg handler.Config) *daemon {
	t.Helper()
	dir := sockDir(t)
	path, data := memFile(t, dir, size)
	f, err := pager.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // runs after the server stopped
	return startDaemonOn(t, dir, path, data, f, cfg)
}

func startDaemonOn(t testing.TB, dir, path string, data []byte, f pager.Source, cfg handler.Config) *daemon {
	t.Helper()
	logs := &testutil.Buffer{}
	if f == nil {
		f = pager.Image(data)
	}
	cfg.Memory = f
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := handler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, s: s, sock: filepath.Join(dir, "fc.sock"), memPath: path, mem: data, logs: logs, done: make(chan struct{})}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	d.serve(ln)
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})
	return d
}

// serve runs Serve on ln in the background.
func (d *daemon) serve(ln *net.UnixListener) {
	var ctx context.Context
	ctx, d.cancel = context.WithCancel(context.Background())
	go func() {
		d.err = d.s.Serve(ctx, ln)
		close(d.done)
	}()
}

func (d *daemon) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	<-d.done
	if d.err != nil {
		d.t.Errorf("Serve: %v", d.err)
	}
}

// vmProc is a test VM running in a child process.
type vmProc struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	stderr bytes.Buffer
}

// startVM starts a test VM against d (its Socket and MemFile filled in).
func (d *daemon) startVM(cfg fctest.Config) *vmProc {
	d.t.Helper()
	if cfg.Socket == "" {
		cfg.Socket = d.sock
	}
	cfg.MemFile = d.memPath
	cmd, err := fctest.Command(os.Args[0], cfg, "-test.run=^$")
	if err != nil {
		d.t.Fatal(err)
	}
	p := &vmProc{cmd: cmd}
	cmd.Stdout = &p.out
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

func (p *vmProc) wait(t testing.TB) fctest.Result {
	t.Helper()
	res, err := fctest.Wait(p.cmd, &p.out)
	if err != nil {
		t.Fatalf("test VM %d: %v\nstderr: %s", p.cmd.Process.Pid, err, p.stderr.String())
	}
	return res
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitIdle waits until d serves no VM.
func (d *daemon) waitIdle(t testing.TB) {
	t.Helper()
	waitFor(t, "every VM to be released", func() bool { return len(d.s.VMs()) == 0 })
}

// logLines returns the log lines that contain every one of words.
func (d *daemon) logLines(words ...string) []string {
	var out []string
	for _, l := range strings.Split(d.logs.String(), "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

// vmOf is a VM of one region of size bytes that touches it in random
// order and checks every byte.
func vmOf(size uint64) fctest.Config {
	return fctest.Config{Regions: []fctest.Region{{Size: size}}, Touch: []string{"random"}, Verify: true}
}
