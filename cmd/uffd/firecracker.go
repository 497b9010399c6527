//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/remote"
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
	recordFor := fs.Duration("record-for", 0, "record-replay: how long after a restore its faults are recorded (0 or unset: "+handler.DefaultRecordFor.String()+")")
	prefetch := fs.String("prefetch", "adaptive", "what a fault resolves beyond its page: none, adaptive (a page, doubling up to 4 MiB on sequential access), or a fixed size such as 64KiB")
	cacheDir := fs.String("cache-dir", "", "remote --mem-file: the host-wide cache of its chunks, shared by every handler on the host and kept across restarts (default: a private temporary one)")
	cacheSize := fs.String("cache-size", "", "remote --mem-file: bound of --cache-dir, such as 64GiB (default: unbounded)")
	fetchConcurrency := fs.Int("fetch-concurrency", 0, "remote --mem-file: range requests in flight at most (0: "+strconv.Itoa(remote.DefaultConcurrency)+")")
	cpus := fs.String("cpus", "", "CPUs serving faults, a reader and a worker pinned to each, shared by every VM, as a list such as 0-3,6 (default: every CPU the process may run on)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on ADDR (host:port) at /metrics")
	control := fs.String("control", "", "control socket for handing the VMs over to a new instance (default: the socket's path + .ctl; \"none\" to disable)")
	takeover := fs.Bool("takeover", false, "take the listening socket and every VM over from the instance listening on --control, then serve them")
	socketMode := fs.String("socket-mode", "0600", "permissions of the socket (octal): only Firecracker's user should reach it")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	handshakeTimeout := fs.Duration("handshake-timeout", handler.DefaultHandshakeTimeout, "how long a connection may take to send its message")
	maxVMs := fs.Int("max-vms", handler.DefaultMaxVMs, "VMs served at once at most")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return &usageError{fmt.Sprintf("firecracker: unexpected argument %q", fs.Arg(0))}
	}
	cfg := handler.DaemonConfig{
		MemFile: *memFile, Socket: *socket, Control: *control, Takeover: *takeover, Metrics: *metrics,
		Trace: *trace, RecordFor: *recordFor,
		HandshakeTimeout: *handshakeTimeout, MaxVMs: *maxVMs,
	}
	var err error
	if cfg.Mode, err = handler.ParseMode(*mode); err != nil {
		return &usageError{"firecracker: --mode: " + err.Error()}
	}
	if cfg.Prefetch, err = parsePrefetch(*prefetch); err != nil {
		return &usageError{"firecracker: --prefetch: " + err.Error()}
	}
	cfg.CacheDir, cfg.FetchConcurrency = *cacheDir, *fetchConcurrency
	if *cacheSize != "" {
		n, err := parseSize(*cacheSize)
		if err != nil {
			return &usageError{"firecracker: --cache-size: " + err.Error()}
		}
		cfg.CacheSize = int64(n)
	}
	if cfg.CPUs, err = parseCPUList(*cpus); err != nil {
		return &usageError{"firecracker: --cpus: " + err.Error()}
	}
	perm, err := strconv.ParseUint(*socketMode, 8, 32)
	if err != nil || perm > 0o777 {
		return &usageError{fmt.Sprintf("firecracker: --socket-mode %q: want octal permissions such as 0660", *socketMode)}
	}
	cfg.SocketMode = os.FileMode(perm)
	if cfg.Logger, err = newLogger(stderr, *logFormat, *logLevel); err != nil {
		return &usageError{"firecracker: " + err.Error()}
	}
	if err := cfg.Validate(); err != nil {
		var ce *handler.ConfigError
		if errors.As(err, &ce) {
			return &usageError{"firecracker: " + ce.Msg}
		}
		return err
	}
	return handler.RunDaemon(ctx, cfg)
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
	switch format {
	case "text", "json":
		return handler.NewLogger(w, format == "json", lv), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// parseCPUList parses a list of CPUs such as 0-3,6 (taskset's and the
// kernel's cpulist format); "" is nil (every CPU).
func parseCPUList(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b > 4095 {
			return nil, fmt.Errorf("%q: want CPU numbers or ranges such as 0-3,6", s)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
