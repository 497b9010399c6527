//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/pager"
)

// A test binary started by fctest.Command runs a test VM instead of the
// tests (before TestMain, which is main_test.go's).
func init() {
	if fctest.Child() {
		os.Exit(fctest.Main())
	}
}

// fcInstance is `uffd firecracker` running in-process.
type fcInstance struct {
	stderr *testutil.Buffer
	cancel context.CancelFunc
	done   chan error
}

func startFirecracker(t *testing.T, args ...string) *fcInstance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &fcInstance{stderr: &testutil.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- runFirecracker(ctx, args, io.Discard, in.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-in.done:
		case <-time.After(10 * time.Second):
			t.Error("uffd firecracker did not stop")
		}
		if t.Failed() {
			t.Logf("uffd firecracker's log:\n%s", in.stderr.String())
		}
	})
	return in
}

// logged waits for a JSON log line with msg and returns it.
func (in *fcInstance) logged(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(in.stderr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
				return m
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log line %q in:\n%s", msg, in.stderr.String())
	return nil
}

func fcFiles(t *testing.T) (dir, memPath string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fccmd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := make([]byte, 16<<20)
	rand.NewChaCha8([32]byte{7}).Read(b)
	memPath = filepath.Join(dir, "mem")
	if err := os.WriteFile(memPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, memPath
}

func runVM(t *testing.T, cfg fctest.Config) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd, err := fctest.Command(os.Args[0], cfg, "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	cmd.Stdout = out
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out
}

func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no series %s in the metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestFirecrackerSpin: the engine's readers spin by default in on-demand
// mode only, and --spin sets it (0: never), as the startup line says.
func TestFirecrackerSpin(t *testing.T) {
	dir, mem := fcFiles(t)
	for i, tc := range []struct {
		args []string
		want float64 // seconds, as the JSON logs give durations
	}{
		{nil, pager.DefaultSpin.Seconds()},
		{[]string{"--mode", "prefault"}, 0},
		{[]string{"--spin", "0"}, 0},
		{[]string{"--mode", "prefault", "--spin", "1ms"}, 0.001},
	} {
		sock := filepath.Join(dir, fmt.Sprintf("spin%d.sock", i))
		in := startFirecracker(t, append([]string{"--socket", sock, "--mem-file", mem, "--control", "none", "--log-format", "json"}, tc.args...)...)
		if got := in.logged(t, "serving")["spin"]; got != tc.want {
			t.Errorf("%v: startup line spin=%v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestFirecracker runs the command as an operator would: a VM restores
// through it, a bad client is refused, the metrics show both, and SIGTERM
// (the context) stops it cleanly, removing its sockets.
func TestFirecracker(t *testing.T) {
	dir, mem := fcFiles(t)
	sock := filepath.Join(dir, "fc.sock")
	in := startFirecracker(t, "--socket", sock, "--mem-file", mem, "--metrics", "127.0.0.1:0", "--log-format", "json", "--socket-mode", "0660", "--log-level", "debug")
	addr := in.logged(t, "metrics")["addr"].(string)
	// The startup line says how VMs will be served.
	serving := in.logged(t, "serving")
	if cpus, ok := serving["cpus"].([]any); !ok || len(cpus) == 0 {
		t.Errorf("startup line: cpus=%v, want the engine's CPUs", serving["cpus"])
	}
	for k, want := range map[string]any{"mode": "on-demand", "prefetch": "adaptive 1page..4MiB", "control": sock + ".ctl", "socket": sock} {
		if serving[k] != want {
			t.Errorf("startup line: %s=%v, want %v (%v)", k, serving[k], want, serving)
		}
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o660 {
		t.Errorf("socket %s: %v, mode %v; want 0660", sock, err, st.Mode())
	}
	cmd, out := runVM(t, fctest.Config{Socket: sock, MemFile: mem, Regions: []fctest.Region{{Size: 8 << 20}, {Size: 4 << 20, Offset: 12 << 20}},
		Touch: []string{"random", "seq"}, Verify: true, Balloon: true})
	res, err := fctest.Wait(cmd, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != (12<<20)/os.Getpagesize() || res.Ballooned == 0 {
		t.Errorf("VM result %+v", res)
	}
	if pid := in.logged(t, "VM connected")["pid"]; pid != float64(res.PID) {
		t.Errorf("logged peer pid %v, VM pid %d", pid, res.PID)
	}
	ended := in.logged(t, "VM ended")
	if d, ok := ended["served_for"].(float64); !ok || d <= 0 || d > 600 {
		t.Errorf("served_for %v: want a number of seconds", ended["served_for"])
	}
	if p50, ok := ended["fault_p50"].(float64); !ok || p50 <= 0 || p50 > 1 {
		t.Errorf("fault_p50 %v: want a number of seconds", ended["fault_p50"])
	}
	if hs := in.logged(t, "handshake received"); hs["level"] != "DEBUG" || hs["regions"] != 2.0 {
		t.Errorf("debug line %v", hs)
	}

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("not json"))
	c.(*net.UnixConn).CloseWrite()
	io.Copy(io.Discard, c) // until the daemon closes it
	c.Close()
	in.logged(t, "connection rejected")

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := string(body)
	if v := metricValue(t, m, "uffd_firecracker_faults_total"); v == 0 {
		t.Error("no faults in the metrics")
	}
	if v := metricValue(t, m, "uffd_firecracker_bytes_total"); v < 12<<20 {
		t.Errorf("bytes_total %v, want at least the guest's 12 MiB", v)
	}
	if v := metricValue(t, m, `uffd_firecracker_connections_rejected_total{reason="json"}`); v != 1 {
		t.Errorf("json rejections %v, want 1", v)
	}
	if v := metricValue(t, m, "uffd_firecracker_vms"); v != 0 {
		t.Errorf("vms %v after the VM exited", v)
	}
	// The histogram times each fault that installed its page; faults_total
	// counts every message, repeated ones and those that waited on a
	// page being installed included.
	if v, faults := metricValue(t, m, "uffd_firecracker_fault_service_seconds_count"), metricValue(t, m, "uffd_firecracker_faults_total"); v == 0 || v > faults {
		t.Errorf("latency histogram counts %v faults, faults_total %v", v, faults)
	}
	if v := metricValue(t, m, `uffd_firecracker_events_total{event="remove"}`); v != 1 {
		t.Errorf("remove events %v, want 1 (the balloon)", v)
	}
	for _, series := range []string{`uffd_firecracker_connections_rejected_total{reason="timeout"}`, `uffd_firecracker_vms_ended_total{reason="handed_over"}`} {
		if v := metricValue(t, m, series); v != 0 {
			t.Errorf("%s %v, want 0", series, v)
		}
	}

	in.cancel()
	if err := <-in.done; err != nil {
		t.Errorf("stopping: %v", err)
	}
	in.done <- nil // for the cleanup
	if st := in.logged(t, "stopped"); st["why"] != "shutdown" || st["vms_started"] != 1.0 || st["rejected"] != 1.0 {
		t.Errorf("lifetime summary %v", st)
	}
	for _, p := range []string{sock, sock + ".ctl"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

// TestFirecrackerTakeover upgrades the handler under a running VM: a
// second instance started with --takeover gets the socket and the VM, the
// first exits without error, and the VM never notices.
func TestFirecrackerTakeover(t *testing.T) {
	dir, mem := fcFiles(t)
	sock := filepath.Join(dir, "fc.sock")
	old := startFirecracker(t, "--socket", sock, "--mem-file", mem, "--log-format", "json", "--log-level", "debug")
	old.logged(t, "serving")
	cmd, out := runVM(t, fctest.Config{Socket: sock, MemFile: mem, Regions: []fctest.Region{{Size: 16 << 20}},
		Touch: []string{"random"}, PaceEvery: 16, PaceSleep: time.Millisecond, Verify: true})
	old.logged(t, "VM connected")
	time.Sleep(100 * time.Millisecond)

	// A second instance without --takeover refuses to steal the socket.
	err := runFirecracker(context.Background(), []string{"--socket", sock, "--mem-file", mem}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--takeover") {
		t.Errorf("a second instance on a live socket: %v; want a refusal that names --takeover", err)
	}
	// Its probe of the socket is no rejection for the running instance.
	old.logged(t, "connection closed without a handshake (a probe?)")
	if l := old.stderr.String(); strings.Contains(l, "connection rejected") {
		t.Errorf("the second instance's probe was taken for a bad connection:\n%s", l)
	}

	neu := startFirecracker(t, "--socket", sock, "--mem-file", mem, "--log-format", "json", "--takeover")
	neu.logged(t, "VM taken over")
	select {
	case err := <-old.done:
		if err != nil {
			t.Errorf("the old instance: %v", err)
		}
		old.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("the old instance did not exit after the handover")
	}
	res, err := fctest.Wait(cmd, out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != (16<<20)/os.Getpagesize() {
		t.Errorf("verified %d pages", res.Verified)
	}
	neu.logged(t, "VM ended")
	// New VMs reach the new instance, through the same path.
	cmd, out = runVM(t, fctest.Config{Socket: sock, MemFile: mem, Regions: []fctest.Region{{Size: 4 << 20}}, Touch: []string{"seq"}, Verify: true})
	if _, err := fctest.Wait(cmd, out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock + ".ctl"); err != nil {
		t.Errorf("the new instance has no control socket: %v", err)
	}
}

func TestFirecrackerUsage(t *testing.T) {
	dir, mem := fcFiles(t)
	long := func(n int) string { return "/tmp/" + strings.Repeat("s", n-len("/tmp/")) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", "/tmp/x.sock"}, "--mem-file"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", ""}, "--mem-file"},
		{[]string{"--mem-file", mem}, "--socket"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--mode", "eager"}, "--mode eager: want on-demand, prefault or record-replay"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--prefetch", "3KiB"}, "multiple"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--cpus", "9-x"}, "--cpus"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--cache-dir", "/tmp/c"}, "--cache-dir"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--cache-size", "lots"}, "--cache-size"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--socket-mode", "999"}, "--socket-mode"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "extra"}, "unexpected argument"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--max-vms", "0"}, "--max-vms 0: want at least 1"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--max-vms", "-1"}, "--max-vms -1: want at least 1"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--handshake-timeout", "0"}, "--handshake-timeout"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--mode", "record-replay", "--record-for", "-1s"}, "--record-for"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--record-for", "1m"}, "--record-for: recording is for --mode record-replay"},
		{[]string{"--socket", "/tmp/x.sock", "--mem-file", mem, "--mode", "prefault", "--trace", "/tmp/t"}, "--trace: a trace is for --mode record-replay"},
		{[]string{"--socket", long(108), "--mem-file", mem}, "--socket"},
		// 106 bytes fit sun_path; the derived PATH.ctl does not.
		{[]string{"--socket", long(106), "--mem-file", mem}, "--control"},
		{[]string{"--socket", "/tmp/x.sock", "--control", long(120), "--mem-file", mem}, "--control"},
		{[]string{"--socket", "/tmp/x.sock", "--control", "none", "--takeover", "--mem-file", mem}, "--takeover"},
	} {
		err := runFirecracker(context.Background(), tc.args, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want a usage error naming %s", tc.args, err, tc.want)
		}
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	sock := filepath.Join(dir, "x.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", sock, "--mem-file", "/nonexistent/mem"}, "/nonexistent/mem"},
		{[]string{"--socket", sock, "--mem-file", empty}, "is empty"},
		{[]string{"--socket", sock, "--mem-file", mem, "--mode", "record-replay", "--trace", "/nonexistent/dir/trace"}, "cannot be written"},
	} {
		err := runFirecracker(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want an error saying %q", tc.args, err, tc.want)
		}
	}
	// --control none: no control socket, and the instance serves.
	in := startFirecracker(t, "--socket", sock, "--mem-file", mem, "--control", "none", "--log-format", "json")
	if c := in.logged(t, "serving")["control"]; c != "none" {
		t.Errorf("startup line: control=%v, want none", c)
	}
	if _, err := os.Stat(sock + ".ctl"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a control socket with --control none (%v)", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64KiB": 64 << 10, "2MiB": 2 << 20, "1G": 1 << 30, "1TiB": 1 << 40, "0": 0} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-4096", "1.5MiB", "KiB", "64kb", "99999999TiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
