//go:build linux

package handler_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
)

func TestConfigValidate(t *testing.T) {
	img := pager.Image(make([]byte, 1<<20))
	for _, tc := range []struct {
		name string
		cfg  handler.Config
		want string // "" for valid
	}{
		{"defaults", handler.Config{Memory: img}, ""},
		{"record-replay with a trace, RecordFor 0 (the default)", handler.Config{Memory: img, Mode: handler.RecordReplay, Trace: "/tmp/t"}, ""},
		{"no memory", handler.Config{}, "Memory is required"},
		{"empty memory", handler.Config{Memory: pager.Image(nil)}, "is empty"},
		{"unknown mode", handler.Config{Memory: img, Mode: 7}, "unknown mode"},
		{"trace without record-replay", handler.Config{Memory: img, Trace: "/tmp/t"}, "is for mode record-replay"},
		{"RecordFor without record-replay", handler.Config{Memory: img, Mode: handler.Prefault, RecordFor: time.Second}, "is for mode record-replay"},
		{"record-replay without a trace", handler.Config{Memory: img, Mode: handler.RecordReplay}, "needs a trace"},
		{"negative RecordFor", handler.Config{Memory: img, Mode: handler.RecordReplay, Trace: "/tmp/t", RecordFor: -time.Second}, "RecordFor"},
		{"negative HandshakeTimeout", handler.Config{Memory: img, HandshakeTimeout: -1}, "HandshakeTimeout"},
		{"negative MaxVMs", handler.Config{Memory: img, MaxVMs: -1}, "MaxVMs"},
		{"negative MaxHandshakes", handler.Config{Memory: img, MaxHandshakes: -1}, "MaxHandshakes"},
		{"negative MaxMessage", handler.Config{Memory: img, MaxMessage: -1}, "MaxMessage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "handler: ")):
				t.Fatalf("Validate = %v; want an error saying %q", err, tc.want)
			}
			if tc.want != "" {
				if _, err := handler.New(tc.cfg); err == nil {
					t.Fatal("New accepted what Validate refuses")
				}
			}
		})
	}
}

func TestDaemonConfigValidate(t *testing.T) {
	dir := "/tmp/" + strings.Repeat("d", 80)
	sock105 := dir + "/" + strings.Repeat("s", 105-len(dir)-1)
	valid := func() handler.DaemonConfig {
		return handler.DaemonConfig{MemFile: "/srv/mem", Socket: "/run/fc.sock", SocketMode: 0o600,
			HandshakeTimeout: handler.DefaultHandshakeTimeout, MaxVMs: handler.DefaultMaxVMs}
	}
	for _, tc := range []struct {
		name string
		mut  func(*handler.DaemonConfig)
		flag string // "" for valid
		want string
	}{
		{"valid", func(*handler.DaemonConfig) {}, "", ""},
		{"record-replay, default trace and duration", func(c *handler.DaemonConfig) { c.Mode = handler.RecordReplay }, "", ""},
		{"no control socket", func(c *handler.DaemonConfig) { c.Control = handler.ControlNone }, "", ""},
		{"a 105-byte socket with a short control socket", func(c *handler.DaemonConfig) { c.Socket, c.Control = sock105, "/run/c" }, "", ""},
		{"a 105-byte socket without a control socket", func(c *handler.DaemonConfig) { c.Socket, c.Control = sock105, handler.ControlNone }, "", ""},
		{"no memory file", func(c *handler.DaemonConfig) { c.MemFile = "" }, "--mem-file", "required"},
		{"no socket", func(c *handler.DaemonConfig) { c.Socket = "" }, "--socket", "required"},
		{"zero max VMs", func(c *handler.DaemonConfig) { c.MaxVMs = 0 }, "--max-vms", "0: want at least 1"},
		{"negative max VMs", func(c *handler.DaemonConfig) { c.MaxVMs = -3 }, "--max-vms", "-3: want at least 1"},
		{"zero handshake timeout", func(c *handler.DaemonConfig) { c.HandshakeTimeout = 0 }, "--handshake-timeout", "want a positive duration"},
		{"negative handshake timeout", func(c *handler.DaemonConfig) { c.HandshakeTimeout = -time.Second }, "--handshake-timeout", "want a positive duration"},
		{"negative record-for", func(c *handler.DaemonConfig) { c.Mode, c.RecordFor = handler.RecordReplay, -time.Second }, "--record-for", "want a positive duration"},
		{"record-for without record-replay", func(c *handler.DaemonConfig) { c.RecordFor = time.Minute }, "--record-for", "for --mode record-replay"},
		{"trace without record-replay", func(c *handler.DaemonConfig) { c.Mode, c.Trace = handler.Prefault, "/tmp/t" }, "--trace", "for --mode record-replay"},
		{"socket mode beyond permissions", func(c *handler.DaemonConfig) { c.SocketMode = 0o1777 }, "--socket-mode", "0777"},
		{"socket too long for sun_path", func(c *handler.DaemonConfig) { c.Socket = dir + "/" + strings.Repeat("s", 108-len(dir)-1) }, "--socket", "sun_path"},
		{"default control path too long", func(c *handler.DaemonConfig) { c.Socket = sock105 }, "--control", "--control PATH, or --control none"},
		{"control path too long", func(c *handler.DaemonConfig) { c.Control = sock105 + ".control" }, "--control", "sun_path"},
		{"takeover without a control socket", func(c *handler.DaemonConfig) { c.Takeover, c.Control = true, handler.ControlNone }, "--takeover", "control socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mut(&c)
			err := c.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ce *handler.ConfigError
			if !errors.As(err, &ce) || ce.Flag != tc.flag || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v; want a *ConfigError for %s saying %q", err, tc.flag, tc.want)
			}
		})
	}
	c := valid()
	c.Mode = handler.RecordReplay
	if got := c.TracePath(); got != "/srv/mem.trace" {
		t.Errorf("default trace %q, want the memory file's path + .trace", got)
	}
	if got := c.ControlPath(); got != "/run/fc.sock.ctl" {
		t.Errorf("default control socket %q, want the socket's path + .ctl", got)
	}
}

// TestTraceNotWritable: a trace that cannot be written is refused by New,
// before any VM is served: in a directory that does not exist, and on a
// read-only file system (as under systemd's ReadOnlyPaths).
func TestTraceNotWritable(t *testing.T) {
	img := pager.Image(make([]byte, 1<<20))
	dir := t.TempDir()
	_, err := handler.New(handler.Config{Memory: img, Mode: handler.RecordReplay, Trace: filepath.Join(dir, "nodir", "trace")})
	if err == nil || !strings.Contains(err.Error(), "cannot be written") {
		t.Errorf("trace in a missing directory: %v", err)
	}
	// A read-only mount of dir, in a mount namespace of one locked thread.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- err
			return
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, ""); err != nil {
			errc <- err
			return
		}
		_, err := handler.New(handler.Config{Memory: img, Mode: handler.RecordReplay, Trace: filepath.Join(dir, "trace")})
		if err == nil {
			errc <- errors.New("New accepted a trace on a read-only file system")
			return
		}
		if !errors.Is(err, unix.EROFS) || !strings.Contains(err.Error(), "cannot be written") {
			errc <- err
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("a read-only mount needs CAP_SYS_ADMIN: %v", err)
		}
		t.Fatal(err)
	}
}

// TestProbe: a connection closed without a byte (what a second instance
// does to see whether the socket is live) is not a rejection: nothing is
// counted or logged above debug.
func TestProbe(t *testing.T) {
	d := startDaemon(t, 8<<20, handler.Config{})
	c, err := net.Dial("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, "the probe's debug line", func() bool { return len(d.logLines("connection closed without a handshake")) == 1 })
	for reason, n := range d.s.Rejections() {
		if n != 0 {
			t.Errorf("%d rejections for %s after a probe", n, reason)
		}
	}
	if l := d.logLines("connection rejected"); len(l) != 0 {
		t.Errorf("the probe was logged as a rejection: %q", l)
	}
}

// TestStopped: Serve logs the server's lifetime summary when it stops,
// with no VM ever served too.
func TestStopped(t *testing.T) {
	d := startDaemon(t, 8<<20, handler.Config{})
	d.stop()
	got := d.logLines("msg=stopped", "why=shutdown", "uptime=", "connections=0", "vms_started=0", "faults=0")
	if len(got) != 1 {
		t.Fatalf("no lifetime summary at shutdown:\n%s", d.logs.String())
	}
}

// TestNewLogger: JSON logs carry durations as numbers of seconds, text
// logs as Go durations.
func TestNewLogger(t *testing.T) {
	var j, txt bytes.Buffer
	handler.NewLogger(&j, true, slog.LevelInfo).Info("x", "took", 1500*time.Millisecond, "n", 3)
	handler.NewLogger(&txt, false, slog.LevelInfo).Info("x", "took", 1500*time.Millisecond)
	var m map[string]any
	if err := json.Unmarshal(j.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["took"] != 1.5 || m["n"] != 3.0 {
		t.Errorf("JSON %s: want took 1.5 (seconds)", j.String())
	}
	if !strings.Contains(txt.String(), "took=1.5s") {
		t.Errorf("text %q: want took=1.5s", txt.String())
	}
	var d bytes.Buffer
	handler.NewLogger(&d, false, slog.LevelInfo).Debug("hidden")
	if d.Len() != 0 {
		t.Errorf("a debug line at level info: %q", d.String())
	}
}
