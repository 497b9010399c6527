//go:build linux

package handler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/remote"
	remotemetrics "github.com/gouffd/uffd/remote/metrics"
)

// DaemonConfig is the configuration of `uffd firecracker`, one field per
// flag of the command, which maps its flags to it and calls RunDaemon.
// Validate refuses what means nothing; its errors (*ConfigError) name the
// flags.
type DaemonConfig struct {
	// MemFile is the snapshot's memory file (--mem-file), mapped once; or
	// a remote image's URL (s3://BUCKET/KEY, http://, https://), fetched
	// on demand in chunks into the cache (package remote).
	MemFile string
	// CacheDir (--cache-dir) is the host-wide cache of remote images'
	// chunks, shared by every handler process on the host and kept across
	// restarts; empty: a private cache in a temporary directory. CacheSize
	// (--cache-size) bounds it in bytes (0: unbounded); FetchConcurrency
	// (--fetch-concurrency) bounds the range requests in flight per image
	// (0: remote.DefaultConcurrency). Remote images only.
	CacheDir         string
	CacheSize        int64
	FetchConcurrency int
	// Socket is the UNIX socket Firecracker connects to (--socket). It
	// may be empty under systemd socket activation or with Takeover.
	Socket string
	// SocketMode is the permissions of the socket (--socket-mode).
	SocketMode os.FileMode
	// Control is the control socket for handovers (--control): empty for
	// Socket's path + ".ctl", ControlNone for none.
	Control string
	// Takeover takes the socket and every VM over from the instance
	// listening on Control, then serves them (--takeover).
	Takeover bool
	// Metrics is the address of the Prometheus endpoint (--metrics), or
	// empty for none.
	Metrics string
	// Mode, Trace, RecordFor and Prefetch are the Server's (--mode,
	// --trace, --record-for, --prefetch). Trace defaults to MemFile +
	// ".trace" in record-replay mode; RecordFor 0 means DefaultRecordFor.
	Mode      Mode
	Trace     string
	RecordFor time.Duration
	Prefetch  pager.Prefetch
	// CPUs (--cpus) are the CPUs of the engine that serves every VM: a
	// reader and a worker pinned to each. Nil: every CPU the process may
	// run on.
	CPUs []int
	// Spin (--spin) is the engine's pager.EngineConfig.Spin; a negative
	// value means no spinning. Zero: pager.DefaultSpin in OnDemand mode,
	// none in Prefault and RecordReplay, whose background installs need
	// the CPUs that spinning readers would take (BenchmarkTouchAll with
	// -fc.spin: prefault and replay of 1 GiB in address order 1.2-1.5
	// times slower spinning).
	Spin time.Duration
	// HandshakeTimeout (--handshake-timeout) must be positive, MaxVMs
	// (--max-vms) at least 1: the command's defaults are
	// DefaultHandshakeTimeout and DefaultMaxVMs.
	HandshakeTimeout time.Duration
	MaxVMs           int
	// Logger receives the logs (slog.Default() when nil); see NewLogger.
	Logger *slog.Logger
}

// ControlNone as DaemonConfig.Control (--control none) runs without a
// control socket: no other instance can take over.
const ControlNone = "none"

// ConfigError is a DaemonConfig value that means nothing, with the flag
// that set it.
type ConfigError struct {
	Flag string // "--max-vms"
	Msg  string // "--max-vms 0: want at least 1"
}

func (e *ConfigError) Error() string { return "handler: " + e.Msg }

// maxSunPath is the longest path a UNIX socket address holds: sun_path is
// 108 bytes, with a terminating NUL.
const maxSunPath = 107

// ControlPath returns the control socket's path ("" for none).
func (c *DaemonConfig) ControlPath() string {
	switch {
	case c.Control == ControlNone:
		return ""
	case c.Control == "":
		if c.Socket == "" {
			return ""
		}
		return c.Socket + ".ctl"
	}
	return c.Control
}

// TracePath returns the trace file in record-replay mode ("" otherwise).
func (c *DaemonConfig) TracePath() string {
	switch {
	case c.Mode != RecordReplay:
		return ""
	case c.Trace == "" && !remote.IsURL(c.MemFile):
		return c.MemFile + ".trace"
	}
	return c.Trace
}

// Validate reports the first value of c that means nothing, as a
// *ConfigError. What needs the file system (the memory file, the trace's
// directory, the sockets) is checked by RunDaemon before it serves.
func (c *DaemonConfig) Validate() error {
	// bad reports flag: format, or flag VALUE: format when the format
	// starts with the value.
	bad := func(flag, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		sep := ": "
		if strings.HasPrefix(format, "%") {
			sep = " "
		}
		return &ConfigError{Flag: flag, Msg: flag + sep + msg}
	}
	switch {
	case c.MemFile == "":
		return bad("--mem-file", "required: the snapshot's memory file, or a remote image's URL")
	case !remote.IsURL(c.MemFile) && (c.CacheDir != "" || c.CacheSize != 0 || c.FetchConcurrency != 0):
		return bad("--cache-dir", "--cache-dir, --cache-size and --fetch-concurrency are for a remote --mem-file (s3://, http://, https://), not the local file %s", c.MemFile)
	case c.CacheSize < 0:
		return bad("--cache-size", "%d: want a size in bytes (0: unbounded)", c.CacheSize)
	case c.FetchConcurrency < 0:
		return bad("--fetch-concurrency", "%d: want at least 1 (0: %d)", c.FetchConcurrency, remote.DefaultConcurrency)
	case c.Mode == RecordReplay && c.Trace == "" && remote.IsURL(c.MemFile):
		return bad("--trace", "required with a remote --mem-file in --mode record-replay: the trace's file")
	case c.Socket == "" && !c.Takeover && !systemdActivated():
		return bad("--socket", "required (or systemd socket activation, or --takeover)")
	case len(c.Socket) > maxSunPath:
		return bad("--socket", "%s is %d bytes, longer than the %d a UNIX socket path holds (sun_path): use a shorter path", c.Socket, len(c.Socket), maxSunPath)
	case c.SocketMode&^os.ModePerm != 0:
		return bad("--socket-mode", "%#o: want permission bits (at most 0777)", uint32(c.SocketMode))
	case c.Mode < OnDemand || c.Mode > RecordReplay:
		return bad("--mode", "unknown mode %v", c.Mode)
	case c.Trace != "" && c.Mode != RecordReplay:
		return bad("--trace", "a trace is for --mode record-replay, not %v", c.Mode)
	case c.RecordFor != 0 && c.Mode != RecordReplay:
		return bad("--record-for", "recording is for --mode record-replay, not %v", c.Mode)
	case c.RecordFor < 0:
		return bad("--record-for", "%v: want a positive duration (0 or none: %v)", c.RecordFor, DefaultRecordFor)
	case c.HandshakeTimeout <= 0:
		return bad("--handshake-timeout", "%v: want a positive duration", c.HandshakeTimeout)
	case c.MaxVMs <= 0:
		return bad("--max-vms", "%d: want at least 1", c.MaxVMs)
	}
	ctl := c.ControlPath()
	switch {
	case c.Takeover && ctl == "":
		return bad("--takeover", "needs a control socket to take over from: --control PATH (or --socket, whose path + .ctl is the default)")
	case len(ctl) > maxSunPath && c.Control == "":
		return bad("--control", "the control socket's default path %s (--socket + .ctl) is %d bytes, longer than the %d a UNIX socket path holds (sun_path): give a shorter one with --control PATH, or --control none", ctl, len(ctl), maxSunPath)
	case len(ctl) > maxSunPath:
		return bad("--control", "%s is %d bytes, longer than the %d a UNIX socket path holds (sun_path): use a shorter path, or --control none", ctl, len(ctl), maxSunPath)
	}
	return nil
}

// openMemory opens the memory file, or the remote image (im, then): before
// any VM is accepted, so that a missing object, a refused credential or a
// wrong region is reported at start.
func openMemory(ctx context.Context, c DaemonConfig, log *slog.Logger) (mf interface {
	pager.Source
	Close() error
}, im *remote.Image, err error) {
	if !remote.IsURL(c.MemFile) {
		f, err := pager.OpenFile(c.MemFile)
		if err != nil {
			return nil, nil, fmt.Errorf("handler: --mem-file: %w", err)
		}
		return f, nil, nil
	}
	var cache *remote.Cache
	if c.CacheDir != "" {
		if cache, err = remote.OpenCache(c.CacheDir, c.CacheSize); err != nil {
			return nil, nil, fmt.Errorf("handler: --cache-dir: %w", err)
		}
	}
	im, err = remote.Open(ctx, c.MemFile, remote.Config{Cache: cache, Concurrency: c.FetchConcurrency, Logger: log})
	if err != nil {
		if cache != nil {
			cache.Close()
		}
		return nil, nil, fmt.Errorf("handler: --mem-file: %w", err)
	}
	id := im.Identity()
	log.Info("remote image", "url", c.MemFile, "bytes", im.Size(), "etag", id.ETag, "version", id.VersionID,
		"chunk_bytes", im.ChunkSize(), "index", im.Index() != nil, "cache_dir", c.CacheDir)
	if cache != nil {
		return closeBoth{im, cache}, im, nil
	}
	return im, im, nil
}

// closeBoth is a remote image whose Close also closes its cache.
type closeBoth struct {
	*remote.Image
	cache *remote.Cache
}

func (c closeBoth) Close() error { return errors.Join(c.Image.Close(), c.cache.Close()) }

// RunDaemon runs the Firecracker handler until ctx ends (SIGTERM) or
// another instance takes everything over: it maps the memory file, checks
// that the trace can be written, listens (or takes the socket over, or
// uses the one systemd passed), serves the control socket and the
// metrics, and tells systemd its state (sd_notify) when it runs as a
// Type=notify service.
func RunDaemon(ctx context.Context, c DaemonConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	mf, im, err := openMemory(ctx, c, log)
	if err != nil {
		return err
	}
	defer mf.Close()
	spin := c.Spin
	if spin == 0 && c.Mode != OnDemand {
		spin = -1
	}
	eng, err := pager.NewEngine(pager.EngineConfig{CPUs: c.CPUs, Spin: spin})
	if err != nil {
		return fmt.Errorf("handler: --cpus: %w", err)
	}
	defer eng.Close()
	s, err := New(Config{
		Memory: mf, Mode: c.Mode, Trace: c.TracePath(), RecordFor: c.RecordFor,
		Prefetch: c.Prefetch, Engine: eng, Logger: log,
		HandshakeTimeout: c.HandshakeTimeout, MaxVMs: c.MaxVMs,
	})
	if err != nil {
		return err
	}
	activated, err := systemdListener()
	if err != nil {
		return err
	}
	ctlPath := c.ControlPath()

	var ln *net.UnixListener
	switch {
	case c.Takeover:
		log.Info("taking over", "control", ctlPath)
		// Under systemd, this process becomes the service's main process
		// before the old one exits.
		ready := func() { sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())) }
		if ln, err = s.Takeover(ctx, ctlPath, ready); err != nil {
			return err
		}
		ln.SetUnlinkOnClose(true) // the path is ours now
	case activated != nil:
		ln = activated
		log.Info("listening on the socket systemd passed", "socket", ln.Addr().String())
	default:
		if ln, err = listenUnix(c.Socket, c.SocketMode); err != nil {
			return err
		}
	}
	var ctl *net.UnixListener
	if ctlPath != "" {
		if c.Takeover {
			// The old instance leaves its control socket's path alone
			// once it handed over.
			os.Remove(ctlPath)
		}
		if ctl, err = listenUnix(ctlPath, 0o600); err != nil {
			ln.Close()
			s.Shutdown()
			return err
		}
	}

	var srv *http.Server
	metricsAddr := ""
	if c.Metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(s.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if im != nil {
			rc := remotemetrics.NewCollector("uffd_firecracker")
			rc.Add(c.MemFile, im.Stats)
			reg.MustRegister(rc)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
		mln, err := net.Listen("tcp", c.Metrics)
		if err != nil {
			ln.Close()
			if ctl != nil {
				ctl.Close()
			}
			s.Shutdown()
			return fmt.Errorf("handler: --metrics: %w", err)
		}
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(mln)
		metricsAddr = mln.Addr().String()
		log.Info("metrics", "addr", metricsAddr)
	}

	attrs := []any{"socket", ln.Addr().String(), "control", ctlPath, "mode", c.Mode.String(),
		"prefetch", describePrefetch(c.Prefetch), "cpus", eng.CPUs(), "spin", eng.Spin(),
		"memory_file", c.MemFile, "memory_file_bytes", mf.Size(), "max_vms", c.MaxVMs}
	if ctlPath == "" {
		attrs[3] = "none"
	}
	if t := c.TracePath(); t != "" {
		attrs = append(attrs, "trace", t, "record_for", s.cfg.RecordFor)
	}
	if metricsAddr != "" {
		attrs = append(attrs, "metrics", metricsAddr)
	}
	log.Info("serving", attrs...)

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	ctlDone := make(chan error, 1)
	if ctl != nil {
		go func() { ctlDone <- s.ServeControl(sctx, ctl) }()
	} else {
		ctlDone <- nil
	}
	sdNotify("READY=1")
	err = s.Serve(sctx, ln)
	sdNotify("STOPPING=1")
	stop()
	if cerr := <-ctlDone; cerr != nil && err == nil {
		err = cerr
	}
	if ctl != nil {
		ctl.Close()
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	return err
}

// NewLogger returns the daemon's logger: text (logfmt) or JSON lines on
// w, from level up. In JSON, durations are numbers of seconds (slog's
// default is nanoseconds); in text they read as Go durations (1.5s).
func NewLogger(w io.Writer, json bool, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if !json {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			return slog.Float64(a.Key, a.Value.Duration().Seconds())
		}
		return a
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// listenUnix listens on path, replacing a stale socket file (one nobody
// listens on) but refusing to steal a live one.
func listenUnix(path string, perm os.FileMode) (*net.UnixListener, error) {
	if len(path) > maxSunPath {
		return nil, fmt.Errorf("handler: %s is %d bytes, longer than the %d a UNIX socket path holds", path, len(path), maxSunPath)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("handler: %s exists and is not a socket", path)
		}
		// A live instance accepts and sees the connection close with
		// nothing sent, which it takes for a probe (no rejection).
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("handler: another process listens on %s (to replace it without stalling its VMs, use --takeover)", path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("handler: listen: %w", err)
	}
	if err := os.Chmod(path, perm); err != nil {
		ln.Close()
		return nil, fmt.Errorf("handler: %w", err)
	}
	return ln, nil
}

// systemdActivated reports whether systemd passed this process a listening
// socket (LISTEN_PID is this process and LISTEN_FDS at least 1).
func systemdActivated() bool {
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return false
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	return err == nil && n >= 1
}

// systemdListener returns the listening socket systemd passed (socket
// activation: the first descriptor, 3), or nil.
func systemdListener() (*net.UnixListener, error) {
	if !systemdActivated() {
		return nil, nil
	}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	for fd := 4; fd < 3+n; fd++ { // only the first is ours
		syscall.CloseOnExec(fd)
	}
	syscall.CloseOnExec(3)
	f := os.NewFile(3, "systemd-socket")
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("handler: the socket systemd passed: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, errors.New("handler: the socket systemd passed is not a UNIX stream socket")
	}
	ul.SetUnlinkOnClose(false) // systemd owns the path
	return ul, nil
}

// sdNotify tells systemd about the service's state (sd_notify(3)) when it
// runs as a Type=notify service; otherwise it does nothing.
func sdNotify(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
