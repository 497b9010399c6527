//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/remote"
)

// setupFirecracker defines `uffd firecracker`'s flags.
func setupFirecracker(fs *flag.FlagSet) runFunc {
	o := &fcOptions{}
	o.socket = stringFlag(fs, "socket", "", "path", "the UNIX socket to listen on (Firecracker's mem_backend backend_path); not needed under systemd socket activation")
	o.memFile = stringFlag(fs, "mem-file", "", "path", "the snapshot's memory file (mapped once, read-only), or a remote image's URL: s3://BUCKET/KEY, http:// or https://")
	o.mode = choiceFlag(fs, "mode", "on-demand", []string{"on-demand", "prefault", "record-replay"}, "how memory is brought in: on-demand, prefault (all of it in the background, faults first) or record-replay")
	o.trace = stringFlag(fs, "trace", "", "path", "record-replay: the trace file (default: the memory file's path + .trace)")
	o.recordFor = durationFlag(fs, "record-for", 0, time.Nanosecond, "record-replay: how long after a restore its faults are recorded (default "+handler.DefaultRecordFor.String()+")")
	o.prefetch = prefetchFlag(fs, "prefetch", "adaptive", "what a fault resolves beyond its page: none, adaptive (a page, doubling up to 4MiB on sequential access), or a fixed size such as 64KiB")
	o.cpus = cpusFlag(fs, "cpus", "the CPUs serving faults, a reader and a worker pinned to each, shared by every VM, as a list such as 0-3,6 (default: every CPU the process may run on)")
	o.spin = spinFlag(fs, pager.DefaultSpin.String()+" with --mode on-demand, 0 otherwise")
	o.cacheDir = stringFlag(fs, "cache-dir", "", "path", "remote --mem-file: the host-wide cache of its chunks, shared by every handler on the host and kept across restarts (default: a private temporary one)")
	o.cacheSize = sizeFlag(fs, "cache-size", 0, 0, 1<<50, 1, "remote --mem-file: the bound of --cache-dir, such as 64GiB (default: unbounded)")
	o.fetchConcurrency = intFlag(fs, "fetch-concurrency", 0, 0, 4096, "remote --mem-file: range requests in flight at most (default "+strconv.Itoa(remote.DefaultConcurrency)+")")
	o.metrics = stringFlag(fs, "metrics", "", "addr", "serve Prometheus metrics on host:port at /metrics")
	o.control = stringFlag(fs, "control", "", "path", "the control socket for handing the VMs over to a new instance (default: the socket's path + .ctl); none: no control socket")
	o.takeover = fs.Bool("takeover", false, "take the listening socket and every VM over from the instance listening on --control, then serve them")
	o.socketMode = octalFlag(fs, "socket-mode", 0o600, "the socket's permissions, in octal: only Firecracker's user should reach it")
	o.logFormat = choiceFlag(fs, "log-format", "text", []string{"text", "json"}, "log format: text or json (durations in seconds)")
	o.logLevel = choiceFlag(fs, "log-level", "info", []string{"debug", "info", "warn", "error"}, "log level: debug, info, warn or error")
	o.handshakeTimeout = durationFlag(fs, "handshake-timeout", handler.DefaultHandshakeTimeout, time.Nanosecond, "how long a connection may take to send its message")
	o.maxVMs = intFlag(fs, "max-vms", handler.DefaultMaxVMs, 1, 0, "VMs served at once, at most")
	return o.run
}

// fcOptions are `uffd firecracker`'s flags.
type fcOptions struct {
	socket, memFile, mode, trace, metrics, control, cacheDir, logFormat, logLevel *string
	recordFor, handshakeTimeout, spin                                             *time.Duration
	prefetch                                                                      *pager.Prefetch
	cpus                                                                          *[]int
	maxVMs, cacheSize, fetchConcurrency                                           *int
	takeover                                                                      *bool
	socketMode                                                                    *os.FileMode
}

// runFirecracker runs `uffd firecracker args...`.
func runFirecracker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return firecrackerCmd.execute(ctx, args, stdout, stderr)
}

// run maps the flags to the daemon's configuration and runs it until ctx
// ends (SIGTERM) or another instance takes over. What means nothing is a
// usage error naming the flag (handler.DaemonConfig.Validate).
func (o *fcOptions) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 0 {
		return usagef("unexpected argument %q", args[0])
	}
	cfg := handler.DaemonConfig{
		MemFile: *o.memFile, Socket: *o.socket, SocketMode: *o.socketMode, Control: *o.control, Takeover: *o.takeover,
		Metrics: *o.metrics, Trace: *o.trace, RecordFor: *o.recordFor, Prefetch: *o.prefetch, CPUs: *o.cpus, Spin: flagSpin(*o.spin),
		CacheDir: *o.cacheDir, CacheSize: int64(*o.cacheSize), FetchConcurrency: *o.fetchConcurrency,
		HandshakeTimeout: *o.handshakeTimeout, MaxVMs: *o.maxVMs,
	}
	var err error
	if cfg.Mode, err = handler.ParseMode(*o.mode); err != nil {
		return usagef("--mode %s: %v", *o.mode, err)
	}
	var lv slog.Level
	lv.UnmarshalText([]byte(*o.logLevel)) // a checked choice
	cfg.Logger = handler.NewLogger(stderr, *o.logFormat == "json", lv)
	if err := cfg.Validate(); err != nil {
		var ce *handler.ConfigError
		if errors.As(err, &ce) {
			return usagef("%s", ce.Msg)
		}
		return err
	}
	return handler.RunDaemon(ctx, cfg)
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

// cpusValue is a list of CPUs such as 0-3,6 (taskset's and the kernel's
// cpulist format); empty is nil, every CPU.
type cpusValue struct {
	p   *[]int
	raw string
	err error
}

// unsetSpin is --spin's value when it is not given.
const unsetSpin = -1

// spinFlag is --spin, the engine's EngineConfig.Spin as a flag, whose
// default (def, for the usage) is the configuration's own: read it with
// flagSpin.
func spinFlag(fs *flag.FlagSet, def string) *time.Duration {
	v := &durationValue{p: new(time.Duration), min: 0}
	*v.p = unsetSpin
	fs.Var(v, "spin", "how long after the last fault the engine's readers keep looking for the next without sleeping, yielding their CPU to any other thread, before they block (default: "+def+"; 0: never, they wait in the kernel at once)")
	return v.p
}

// flagSpin maps --spin to EngineConfig.Spin and DaemonConfig.Spin, whose
// zero is the default and whose negative values turn spinning off.
func flagSpin(d time.Duration) time.Duration {
	switch d {
	case unsetSpin:
		return 0
	case 0:
		return -1
	}
	return d
}

func cpusFlag(fs *flag.FlagSet, name, usage string) *[]int {
	v := &cpusValue{p: new([]int)}
	fs.Var(v, name, usage)
	return v.p
}

func (v *cpusValue) Type() string { return "list" }
func (v *cpusValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.raw
}

func (v *cpusValue) Set(s string) error {
	v.raw, v.err = s, nil
	*v.p, v.err = parseCPUList(s)
	return nil
}

func (v *cpusValue) check() error { return v.err }

// parseCPUList parses a list of CPUs such as 0-3,6; "" is nil.
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
			return nil, errors.New("want CPU numbers and ranges such as 0-3,6")
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}
