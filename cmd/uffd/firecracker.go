//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
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

// setupFirecracker defines `uffd firecracker`'s flags.
func setupFirecracker(fs *flag.FlagSet) runFunc {
	o := &fcOptions{}
	o.socket = stringFlag(fs, "socket", "", "path", "the UNIX socket to listen on (Firecracker's mem_backend backend_path); not needed under systemd socket activation")
	o.memFile = stringFlag(fs, "mem-file", "", "path", "the snapshot's memory file (mapped once, read-only)")
	o.mode = choiceFlag(fs, "mode", "on-demand", []string{"on-demand", "prefault", "record-replay"}, "how memory is brought in: on-demand, prefault (all of it in the background, faults first) or record-replay")
	o.trace = stringFlag(fs, "trace", "", "path", "record-replay: the trace file (default: the memory file's path + .trace)")
	o.recordFor = durationFlag(fs, "record-for", firecracker.DefaultRecordFor, time.Nanosecond, "record-replay: how long after a restore its faults are recorded")
	o.prefetch = prefetchFlag(fs, "prefetch", "adaptive", "what a fault resolves beyond its page: none, adaptive (64KiB to 4MiB on sequential access), or a fixed size such as 64KiB")
	o.workers = intFlag(fs, "workers", 1, 1, 1024, "fault-serving goroutines per VM")
	o.reader = choiceFlag(fs, "reader", "poller", []string{"poller", "thread"}, "how a VM's readers wait for faults: poller (Go's runtime poller) or thread (ppoll(2) on a locked thread)")
	o.metrics = stringFlag(fs, "metrics", "", "addr", "serve Prometheus metrics on host:port at /metrics")
	o.control = stringFlag(fs, "control", "", "path", "the control socket for handing the VMs over to a new instance (default: the socket's path + .ctl); none: no control socket")
	o.takeover = fs.Bool("takeover", false, "take the listening socket and every VM over from the instance listening on --control, then serve them")
	o.socketMode = octalFlag(fs, "socket-mode", 0o600, "the socket's permissions, in octal: only Firecracker's user should reach it")
	o.logFormat = choiceFlag(fs, "log-format", "text", []string{"text", "json"}, "log format: text or json")
	o.logLevel = choiceFlag(fs, "log-level", "info", []string{"debug", "info", "warn", "error"}, "log level: debug, info, warn or error")
	o.handshakeTimeout = durationFlag(fs, "handshake-timeout", firecracker.DefaultHandshakeTimeout, time.Nanosecond, "how long a connection may take to send its message")
	o.maxVMs = intFlag(fs, "max-vms", firecracker.DefaultMaxVMs, 1, 0, "VMs served at once, at most")
	return o.run
}

// fcOptions are `uffd firecracker`'s flags.
type fcOptions struct {
	socket, memFile, mode, trace, metrics, control, reader, logFormat, logLevel *string
	recordFor, handshakeTimeout                                                 *time.Duration
	prefetch                                                                    *pager.Prefetch
	workers, maxVMs                                                             *int
	takeover                                                                    *bool
	socketMode                                                                  *os.FileMode
}

// runFirecracker runs `uffd firecracker args...`.
func runFirecracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return firecrackerCmd.execute(ctx, args, stdout, stderr)
}

// run runs the Firecracker page-fault handler until ctx ends (SIGTERM)
// or another instance takes over.
func (o *fcOptions) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	socket, memFile, control, trace, takeover := o.socket, o.memFile, o.control, o.trace, o.takeover
	if len(args) != 0 {
		return usagef("unexpected argument %q", args[0])
	}
	activated, err := listenFDs()
	if err != nil {
		return err
	}
	switch {
	case *memFile == "":
		return usagef("--mem-file is required")
	case *socket == "" && activated == nil && !*takeover:
		return usagef("--socket is required (or systemd socket activation)")
	}
	var cfg firecracker.Config
	if cfg.Mode, err = firecracker.ParseMode(*o.mode); err != nil {
		return usagef("--mode %s: %v", *o.mode, err)
	}
	cfg.Prefetch = *o.prefetch
	cfg.Reader = pager.ReaderPoller
	if *o.reader == "thread" {
		cfg.Reader = pager.ReaderThread
	}
	log := newLogger(stderr, *o.logFormat, *o.logLevel)
	if *trace == "" {
		*trace = *memFile + ".trace"
	}
	cfg.Trace, cfg.RecordFor, cfg.Workers, cfg.Logger = *trace, *o.recordFor, *o.workers, log
	cfg.HandshakeTimeout, cfg.MaxVMs = *o.handshakeTimeout, *o.maxVMs
	if *control == "" && *socket != "" {
		*control = *socket + ".ctl"
	}
	if *control == "none" {
		*control = ""
	}
	if *takeover && *control == "" {
		return usagef("--takeover needs --control (or --socket)")
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
		if ln, err = listenUnix(*socket, *o.socketMode); err != nil {
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
	if *o.metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(s.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
		mln, err := net.Listen("tcp", *o.metrics)
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

// prefetchValue is --prefetch: none, adaptive, or a fixed size.
type prefetchValue struct {
	p   *pager.Prefetch
	raw string
	err error
}

// maxPrefetch bounds a fixed prefetch: 1 GiB, the largest huge page.
const maxPrefetch = 1 << 30

func prefetchFlag(fs *flag.FlagSet, name, def, usage string) *pager.Prefetch {
	v := &prefetchValue{p: new(pager.Prefetch)}
	v.Set(def)
	fs.Var(v, name, usage)
	return v.p
}

func (v *prefetchValue) Type() string { return "string" }
func (v *prefetchValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.raw
}

func (v *prefetchValue) Set(s string) error {
	v.raw, v.err = s, nil
	switch s {
	case "none", "0":
		*v.p = pager.Prefetch{}
		return nil
	case "adaptive":
		*v.p = pager.Adaptive()
		return nil
	}
	ps := int64(os.Getpagesize())
	n, err := parseSize(s)
	switch {
	case err != nil || n < ps || n > maxPrefetch || n%ps != 0:
		v.err = fmt.Errorf("want none, adaptive, or a size from %s to %s, a multiple of %s", formatSize(ps), formatSize(maxPrefetch), formatSize(ps))
		if err != nil {
			v.err = fmt.Errorf("%v; %v", err, v.err)
		}
	default:
		*v.p = pager.Fixed(int(n))
	}
	return nil
}

func (v *prefetchValue) check() error { return v.err }

// octalValue is a file mode in octal.
type octalValue struct {
	p   *os.FileMode
	raw string
	err error
}

func octalFlag(fs *flag.FlagSet, name string, def os.FileMode, usage string) *os.FileMode {
	v := &octalValue{p: new(os.FileMode), raw: fmt.Sprintf("%04o", def)}
	*v.p = def
	fs.Var(v, name, usage)
	return v.p
}

func (v *octalValue) Type() string { return "perm" }
func (v *octalValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.raw
}

func (v *octalValue) Set(s string) error {
	v.raw = s
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		v.err = errors.New("want octal permissions such as 0660")
		return nil
	}
	*v.p, v.err = os.FileMode(n), nil
	return nil
}

func (v *octalValue) check() error { return v.err }

// newLogger makes the daemon's logger (format and level are checked
// choices).
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
