//go:build linux

package main

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

	"github.com/gouffd/uffd/firecracker"
	"github.com/gouffd/uffd/pager"
)

const firecrackerUsage = `uffd firecracker --socket PATH --mem-file FILE [flags]

Serve the guest memory of Firecracker microVMs restored from a snapshot
(mem_backend {"backend_type": "Uffd", "backend_path": PATH}): every VM that
connects to PATH is served from FILE, the snapshot's memory file.
`

// runFirecracker runs the Firecracker page-fault handler until ctx ends
// (SIGTERM) or another instance takes over.
func runFirecracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firecracker")
	socket := fs.String("socket", "", "UNIX socket to listen on (Firecracker's mem_backend backend_path); not needed under systemd socket activation")
	memFile := fs.String("mem-file", "", "the snapshot's memory file")
	mode := fs.String("mode", "on-demand", "how memory is brought in: on-demand, prefault (all of it in the background, faults first) or record-replay")
	trace := fs.String("trace", "", "record-replay: the trace file (default: the memory file's name + .trace)")
	recordFor := fs.Duration("record-for", firecracker.DefaultRecordFor, "record-replay: how long after a restore its faults are recorded")
	prefetch := fs.String("prefetch", "adaptive", "what a fault resolves beyond its page: none, adaptive (64 KiB..4 MiB on sequential access), or a fixed size such as 64KiB")
	workers := fs.Int("workers", 1, "fault-serving goroutines per VM")
	reader := fs.String("reader", "poller", "how a VM's readers wait for faults: poller (Go's runtime poller) or thread (poll(2) on a locked thread)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on ADDR (host:port) at /metrics")
	control := fs.String("control", "", "control socket for handing the VMs over to a new instance (default: the socket's path + .ctl; \"none\" to disable)")
	takeover := fs.Bool("takeover", false, "take the listening socket and every VM over from the instance listening on --control, then serve them")
	socketMode := fs.String("socket-mode", "0600", "permissions of the socket (octal): only Firecracker's user should reach it")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	handshakeTimeout := fs.Duration("handshake-timeout", firecracker.DefaultHandshakeTimeout, "how long a connection may take to send its message")
	maxVMs := fs.Int("max-vms", firecracker.DefaultMaxVMs, "VMs served at once at most")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{fmt.Sprintf("firecracker: unexpected argument %q", fs.Arg(0))}
	}
	activated, err := listenFDs()
	if err != nil {
		return err
	}
	switch {
	case *memFile == "":
		return &usageError{"firecracker: --mem-file is required"}
	case *socket == "" && activated == nil && !*takeover:
		return &usageError{"firecracker: --socket is required (or systemd socket activation)"}
	}
	var cfg firecracker.Config
	if cfg.Mode, err = firecracker.ParseMode(*mode); err != nil {
		return &usageError{"firecracker: --mode: " + err.Error()}
	}
	if cfg.Prefetch, err = parsePrefetch(*prefetch); err != nil {
		return &usageError{"firecracker: --prefetch: " + err.Error()}
	}
	switch *reader {
	case "poller":
		cfg.Reader = pager.ReaderPoller
	case "thread":
		cfg.Reader = pager.ReaderThread
	default:
		return &usageError{fmt.Sprintf("firecracker: --reader %q: want poller or thread", *reader)}
	}
	perm, err := strconv.ParseUint(*socketMode, 8, 32)
	if err != nil || perm > 0o777 {
		return &usageError{fmt.Sprintf("firecracker: --socket-mode %q: want octal permissions such as 0660", *socketMode)}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return &usageError{"firecracker: " + err.Error()}
	}
	if *trace == "" {
		*trace = *memFile + ".trace"
	}
	cfg.Trace, cfg.RecordFor, cfg.Workers, cfg.Logger = *trace, *recordFor, *workers, log
	cfg.HandshakeTimeout, cfg.MaxVMs = *handshakeTimeout, *maxVMs
	if *control == "" && *socket != "" {
		*control = *socket + ".ctl"
	}
	if *control == "none" {
		*control = ""
	}
	if *takeover && *control == "" {
		return &usageError{"firecracker: --takeover needs --control (or --socket)"}
	}

	mf, err := pager.OpenFile(*memFile)
	if err != nil {
		return fmt.Errorf("firecracker: memory file: %w", err)
	}
	defer mf.Close()
	cfg.MemFile = mf
	s, err := firecracker.NewServer(cfg)
	if err != nil {
		return err
	}

	var ln *net.UnixListener
	switch {
	case *takeover:
		log.Info("taking over", "control", *control)
		// Under systemd, this process becomes the service's main process
		// before the old one exits.
		ready := func() { sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())) }
		if ln, err = s.Takeover(ctx, *control, ready); err != nil {
			return err
		}
		ln.SetUnlinkOnClose(true) // the path is ours now
	case activated != nil:
		ln = activated
		log.Info("listening on the socket systemd passed", "socket", ln.Addr().String())
	default:
		if ln, err = listenUnix(*socket, os.FileMode(perm)); err != nil {
			return err
		}
	}
	var ctl *net.UnixListener
	if *control != "" {
		if *takeover {
			// The old instance leaves its control socket's path alone
			// once it handed over.
			os.Remove(*control)
		}
		if ctl, err = listenUnix(*control, 0o600); err != nil {
			ln.Close()
			s.Shutdown()
			return err
		}
	}

	var srv *http.Server
	if *metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(s.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
		mln, err := net.Listen("tcp", *metrics)
		if err != nil {
			ln.Close()
			if ctl != nil {
				ctl.Close()
			}
			s.Shutdown()
			return fmt.Errorf("firecracker: --metrics: %w", err)
		}
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(mln)
		log.Info("metrics", "addr", mln.Addr().String())
	}

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

// parsePrefetch parses --prefetch.
func parsePrefetch(s string) (pager.Prefetch, error) {
	switch s {
	case "none", "0":
		return pager.Prefetch{}, nil
	case "adaptive":
		return pager.Adaptive(), nil
	}
	n, err := parseSize(s)
	if err != nil {
		return pager.Prefetch{}, err
	}
	if n%os.Getpagesize() != 0 {
		return pager.Prefetch{}, fmt.Errorf("%s is not a multiple of the %d-byte page", s, os.Getpagesize())
	}
	return pager.Fixed(n), nil
}

// parseSize parses a byte count with an optional KiB, MiB or GiB suffix.
func parseSize(s string) (int, error) {
	mult := 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size (such as 65536, 64KiB or 2MiB)", s)
	}
	return n * mult, nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// listenUnix listens on path, replacing a stale socket file (one nobody
// listens on) but refusing to steal a live one.
func listenUnix(path string, perm os.FileMode) (*net.UnixListener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("firecracker: %s exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("firecracker: another process listens on %s (to replace it without stalling its VMs, use --takeover)", path)
		}
		os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("firecracker: listen: %w", err)
	}
	if err := os.Chmod(path, perm); err != nil {
		ln.Close()
		return nil, fmt.Errorf("firecracker: %w", err)
	}
	return ln, nil
}

// listenFDs returns the listening socket systemd passed (socket
// activation: LISTEN_PID is this process, LISTEN_FDS at least 1, the first
// descriptor 3), or nil.
func listenFDs() (*net.UnixListener, error) {
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, nil
	}
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
		return nil, fmt.Errorf("firecracker: the socket systemd passed: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, errors.New("firecracker: the socket systemd passed is not a UNIX stream socket")
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
