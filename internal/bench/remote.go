//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/internal/miniotest"
	"github.com/gouffd/uffd/internal/netproxy"
	"github.com/gouffd/uffd/remote"
)

// RemoteConfig describes `uffd bench remote`: the figures and targets of
// remote memory images (issue 11), measured end to end. A real server
// (MinIO, or net/http's FileServer) holds the images; a TCP proxy of this
// process (internal/netproxy) between it and every client adds the
// round-trip time and the bandwidth cap; `uffd firecracker --mem-file URL`
// runs as a child process with a fresh cache directory for each run, and
// test VMs (package fctest, each a process of its own) touch every 4 KiB
// page of their guest and check every byte against the memory file. The
// zero value is the setup: a 1 GiB guest, 3 runs of each case.
type RemoteConfig struct {
	// MiB is the size of the guests and of the images (default 1024).
	MiB int
	// Runs is the number of runs of each case (default 3); medians are
	// reported.
	Runs int
	// Cases lists what to measure (default all of RemoteCases).
	Cases []string
	// RTTs are the round-trip times of the first-fault and sequential
	// cases (default 0, 1 ms and 10 ms).
	RTTs []time.Duration
	// Prefetch lists the daemon's --prefetch values of the on-demand
	// cases (default none and adaptive).
	Prefetch []string
	// Server is "s3" (MinIO, the default) or "http" (net/http's
	// FileServer with an ETag, as nginx sends).
	Server string
	// Concurrency is the daemon's --fetch-concurrency and the whole-object
	// download's (default remote.DefaultConcurrency).
	Concurrency int
	// ChunkSize is the images' chunk size (their index's) and the
	// download's part size (default remote.DefaultChunkSize).
	ChunkSize int64
	// RandomRTT is the round-trip time of the random case, ReplayRTT of
	// the record-replay case, SharedRTT of the shared case (default 10 ms
	// each; a negative value adds none).
	RandomRTT, ReplayRTT, SharedRTT time.Duration
	// Bandwidth is the link's cap in the record-replay case, in bytes per
	// second (default 100 MB/s: under what this machine's server and
	// proxy can move, so that the link is what limits).
	Bandwidth int64
	// SharedVMs is the number of VMs restored at once in the shared case
	// (default 3).
	SharedVMs int
	// Serial is the number of single-page GETs, one at a time, sampled
	// for the random case's baseline (default 200).
	Serial int
	// Exe is the uffd program: the daemon runs as `Exe firecracker ...`
	// and the VMs as Exe with fctest's environment (default: this
	// program).
	Exe string
	// DaemonArgs are more flags for the daemon.
	DaemonArgs []string
}

// RemoteCases are the cases of RunRemote: "seq" (every page in address
// order, on demand, against downloading the whole object; the first
// fault's latency), "random" (every page in a shuffled order, against one
// request per page at a time), "replay" (record-replay: the recorded pages
// prefetched under a bandwidth cap), "shared" (VMs restored at once from
// one image with zero chunks: bytes fetched).
var RemoteCases = []string{"seq", "random", "replay", "shared"}

// MaxRemoteMiB bounds RemoteConfig.MiB.
const MaxRemoteMiB = 16 << 10

func (c RemoteConfig) withDefaults() RemoteConfig {
	if c.MiB == 0 {
		c.MiB = 1024
	}
	if c.Runs == 0 {
		c.Runs = 3
	}
	if len(c.Cases) == 0 {
		c.Cases = RemoteCases
	}
	if c.RTTs == nil {
		c.RTTs = []time.Duration{0, time.Millisecond, 10 * time.Millisecond}
	}
	if len(c.Prefetch) == 0 {
		c.Prefetch = []string{"none", "adaptive"}
	}
	if c.Server == "" {
		c.Server = "s3"
	}
	if c.Concurrency == 0 {
		c.Concurrency = remote.DefaultConcurrency
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = remote.DefaultChunkSize
	}
	for _, d := range []*time.Duration{&c.RandomRTT, &c.ReplayRTT, &c.SharedRTT} {
		switch {
		case *d == 0:
			*d = 10 * time.Millisecond
		case *d < 0:
			*d = 0
		}
	}
	if c.Bandwidth == 0 {
		c.Bandwidth = 100e6
	}
	if c.SharedVMs == 0 {
		c.SharedVMs = 3
	}
	if c.Serial == 0 {
		c.Serial = 200
	}
	return c
}

// Validate reports the first field out of range, named as `uffd bench
// remote` flags name it.
func (c RemoteConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.MiB < 1 || c.MiB > MaxRemoteMiB:
		return fmt.Errorf("--mib %d: want 1 to %d", c.MiB, MaxRemoteMiB)
	case c.Runs < 1 || c.Runs > MaxRuns:
		return fmt.Errorf("--runs %d: want 1 to %d", c.Runs, MaxRuns)
	case c.Server != "s3" && c.Server != "http":
		return fmt.Errorf("--server %q: want s3 or http", c.Server)
	case c.Concurrency < 1 || c.Concurrency > 4096:
		return fmt.Errorf("--concurrency %d: want 1 to 4096", c.Concurrency)
	case c.ChunkSize < remote.PageSize || c.ChunkSize > 1<<30 || c.ChunkSize&(c.ChunkSize-1) != 0:
		return fmt.Errorf("--chunk-size %d: want a power of two from 4KiB to 1GiB", c.ChunkSize)
	case int64(c.MiB)<<20 < c.ChunkSize:
		return fmt.Errorf("--chunk-size %d: larger than the %d MiB image", c.ChunkSize, c.MiB)
	case c.Bandwidth < 1<<20:
		return fmt.Errorf("--bandwidth %d: want at least 1 MiB/s", c.Bandwidth)
	case c.SharedVMs < 1 || c.SharedVMs > MaxVMs:
		return fmt.Errorf("--shared-vms %d: want 1 to %d", c.SharedVMs, MaxVMs)
	case c.Serial < 1 || c.Serial > 100000:
		return fmt.Errorf("--serial %d: want 1 to 100000", c.Serial)
	}
	for _, k := range c.Cases {
		if !slices.Contains(RemoteCases, k) {
			return fmt.Errorf("--cases %q: want some of %s", k, strings.Join(RemoteCases, ","))
		}
	}
	for _, p := range c.Prefetch {
		if p != "none" && p != "adaptive" {
			return fmt.Errorf("--prefetch %q: want none or adaptive", p)
		}
	}
	for _, d := range append(slices.Clone(c.RTTs), c.RandomRTT, c.ReplayRTT, c.SharedRTT) {
		if d < 0 || d > 10*time.Second {
			return fmt.Errorf("an RTT of %v: want 0 to 10s", d)
		}
	}
	return nil
}

// RemoteRun is one run of one case.
type RemoteRun struct {
	Case     string        `json:"case"` // "local", "download", "seq", "random", "serial", "record", "replay", "download-capped", "shared"
	Prefetch string        `json:"prefetch,omitempty"`
	RTT      time.Duration `json:"rtt_ns"`
	Run      int           `json:"run"`
	// PassNS is the median VM's pass over its pages (for "download", the
	// download's time; for "serial", the mean single-page request);
	// FirstNS the first touch of that pass (a cold cache's first fault);
	// P50NS, P99NS its touches' latencies.
	PassNS  int64 `json:"pass_ns"`
	FirstNS int64 `json:"first_ns,omitempty"`
	P50NS   int64 `json:"touch_p50_ns,omitempty"`
	P99NS   int64 `json:"touch_p99_ns,omitempty"`
	// TTFBNS (seq) is the server's own time to the first byte of a
	// chunk's range request, measured just before the run (median of 3).
	TTFBNS int64 `json:"ttfb_ns,omitempty"`
	// BytesDown and Requests are what the proxy carried from the server
	// and the range requests it saw, from the daemon's start to the VMs'
	// end.
	BytesDown int64 `json:"bytes_down"`
	Requests  int   `json:"requests"`
	// ArrivedNS (replay) is the time from the VM's connection until the
	// recorded working set had passed the proxy.
	ArrivedNS int64 `json:"arrived_ns,omitempty"`
}

// Line is a one-line summary for stderr.
func (r RemoteRun) Line() string {
	s := fmt.Sprintf("%-8s", r.Case)
	if r.Prefetch != "" {
		s += " prefetch " + fmt.Sprintf("%-8s", r.Prefetch)
	}
	s += fmt.Sprintf(" rtt %-5v run %d: ", r.RTT, r.Run)
	switch r.Case {
	case "download", "download-capped":
		return s + fmt.Sprintf("%v, %.0f MB/s through the proxy", ms(r.PassNS), float64(r.BytesDown)/float64(r.PassNS)*1e3)
	case "serial":
		return s + fmt.Sprintf("%v per single-page request (mean)", time.Duration(r.PassNS))
	case "replay":
		return s + fmt.Sprintf("working set (%d MiB) arrived in %v: %.1f MB/s; then the pass took %v", r.BytesDown>>20, ms(r.ArrivedNS),
			float64(r.BytesDown)/float64(r.ArrivedNS)*1e3, ms(r.PassNS))
	}
	s += fmt.Sprintf("pass %v, first touch %v, touch p50 %v p99 %v, %d MiB in %d requests", ms(r.PassNS), time.Duration(r.FirstNS),
		time.Duration(r.P50NS), time.Duration(r.P99NS), r.BytesDown>>20, r.Requests)
	if r.TTFBNS != 0 {
		s += fmt.Sprintf(" (the server's first byte just before: %v)", time.Duration(r.TTFBNS).Round(time.Microsecond))
	}
	return s
}

func ms(ns int64) time.Duration { return time.Duration(ns).Round(time.Millisecond) }

// RemoteTarget is one figure of the issue against its target.
type RemoteTarget struct {
	Name  string `json:"target"`
	About string `json:"about"`
	// Value is the figure measured (median over the runs) and Ref what it
	// is compared with, both in Unit; Ratio is the ratio the target
	// bounds (Op Want).
	Value float64 `json:"value"`
	Ref   float64 `json:"reference"`
	Unit  string  `json:"unit"`
	Ratio float64 `json:"ratio"`
	Op    string  `json:"op"`
	Want  float64 `json:"want"`
	Met   bool    `json:"met"`
	// Control is a figure of the same run that bounds what the machine
	// allows (in Unit), said by ControlAbout: the same touch served from
	// a local file, the server's own time to a first byte, a download
	// under the same cap. 0: none.
	Control      float64 `json:"control,omitempty"`
	ControlAbout string  `json:"control_about,omitempty"`
}

// RemoteReport is the outcome of RunRemote.
type RemoteReport struct {
	MiB         int            `json:"mib"`
	Runs        int            `json:"runs"`
	Server      string         `json:"server"`
	Concurrency int            `json:"concurrency"`
	ChunkSize   int64          `json:"chunk_size"`
	Bandwidth   int64          `json:"bandwidth"`
	CPUs        int            `json:"cpus"`
	Daemon      []string       `json:"daemon"`
	Baseline    string         `json:"download"`
	Targets     []RemoteTarget `json:"targets"`
	Results     []RemoteRun    `json:"runs_detail"`
}

// RunRemote measures the cases of cfg and checks their targets.
//
// It sets the standard AWS variables of this process (credentials,
// region, endpoint) for its own S3 clients while it runs, and puts them
// back when it returns.
func RunRemote(ctx context.Context, cfg RemoteConfig, progress func(RemoteRun)) (*RemoteReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: the uffd program: %w", err)
		}
		cfg.Exe = exe
	}
	e, err := newRemoteEnv(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer e.close()
	rep := &RemoteReport{
		MiB: cfg.MiB, Runs: cfg.Runs, Server: cfg.Server, Concurrency: cfg.Concurrency, ChunkSize: cfg.ChunkSize,
		Bandwidth: cfg.Bandwidth, CPUs: AllowedCPUs(), Daemon: e.daemonArgs("URL", "PREFETCH", "DIR"),
		Baseline: "the SDK's parallel downloader (feature/s3/manager) into a file",
	}
	if cfg.Server == "http" {
		rep.Baseline = "remote.Pull (uffd image pull: parallel range requests) into a file"
	}
	report := func(r RemoteRun) {
		rep.Results = append(rep.Results, r)
		if progress != nil {
			progress(r)
		}
	}
	for _, k := range cfg.Cases {
		var ts []RemoteTarget
		var err error
		switch k {
		case "seq":
			ts, err = e.seqCase(ctx, report)
		case "random":
			ts, err = e.randomCase(ctx, report)
		case "replay":
			ts, err = e.replayCase(ctx, report)
		case "shared":
			ts, err = e.sharedCase(ctx, report)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("bench: remote, %s: %w", k, err)
		}
		rep.Targets = append(rep.Targets, ts...)
	}
	return rep, nil
}

// imageFile is an image: the local memory file the VMs check against, and
// where the server holds it.
type imageFile struct {
	path, url string
	size      int64
	// nonzero is the bytes of the chunks that are not all zeroes.
	nonzero int64
}

type remoteEnv struct {
	cfg      RemoteConfig
	dir      string
	minio    *miniotest.Server
	httpSrv  *http.Server
	proxy    *netproxy.Proxy
	endpoint string // the proxy's URL, for the S3 clients
	env      []string
	restore  func()
	full     imageFile // no zero page: every byte travels
	sparse   imageFile // every fifth chunk zero, and zero pages elsewhere
	seq      int
}

// awsEnv is the standard AWS configuration pointed at endpoint, shared
// files and the instance metadata service off.
func awsEnv(endpoint string) map[string]string {
	return map[string]string{
		"AWS_ACCESS_KEY_ID": miniotest.AccessKey, "AWS_SECRET_ACCESS_KEY": miniotest.SecretKey,
		"AWS_REGION": miniotest.Region, "AWS_ENDPOINT_URL": endpoint,
		"AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
		"AWS_EC2_METADATA_DISABLED": "true",
	}
}

func newRemoteEnv(ctx context.Context, cfg RemoteConfig) (_ *remoteEnv, err error) {
	// Socket paths must fit in sun_path: a short directory.
	dir, err := os.MkdirTemp("", "uffd-rbench")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e := &remoteEnv{cfg: cfg, dir: dir, restore: func() {}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	size := int64(cfg.MiB) << 20
	e.full = imageFile{path: filepath.Join(dir, "full.mem"), size: size, nonzero: size}
	if err := writeImage(e.full.path, size, cfg.ChunkSize, false); err != nil {
		return nil, err
	}
	if slices.Contains(cfg.Cases, "shared") {
		e.sparse = imageFile{path: filepath.Join(dir, "sparse.mem"), size: size}
		if err := writeImage(e.sparse.path, size, cfg.ChunkSize, true); err != nil {
			return nil, err
		}
		for c := int64(0); c*cfg.ChunkSize < size; c++ {
			if !zeroChunk(c) {
				e.sparse.nonzero += min(cfg.ChunkSize, size-c*cfg.ChunkSize)
			}
		}
	}
	var target string
	if cfg.Server == "s3" {
		if err := os.Mkdir(filepath.Join(dir, "minio"), 0o700); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		if e.minio, err = miniotest.Launch(filepath.Join(dir, "minio")); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		target = e.minio.Addr()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		e.httpSrv = &http.Server{Handler: etagFileServer(dir)}
		go e.httpSrv.Serve(ln)
		target = ln.Addr().String()
	}
	if e.proxy, err = netproxy.Start(target); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e.endpoint = e.proxy.URL()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			e.env = append(e.env, kv)
		}
	}
	for k, v := range awsEnv(e.endpoint) {
		e.env = append(e.env, k+"="+v)
	}
	if cfg.Server == "s3" {
		e.restore = setEnv(awsEnv(e.endpoint))
		if err := e.upload(ctx); err != nil {
			return nil, err
		}
	} else {
		for _, im := range []*imageFile{&e.full, &e.sparse} {
			if im.path == "" {
				continue
			}
			if _, err := remote.WriteIndexFile(ctx, im.path, cfg.ChunkSize); err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			im.url = e.endpoint + "/" + filepath.Base(im.path)
		}
	}
	return e, nil
}

// setEnv sets the variables of kv in this process and returns what puts
// them back.
func setEnv(kv map[string]string) func() {
	old := map[string]*string{}
	for k, v := range kv {
		if o, ok := os.LookupEnv(k); ok {
			old[k] = &o
		} else {
			old[k] = nil
		}
		os.Setenv(k, v)
	}
	for _, k := range []string{"AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"} {
		if o, ok := os.LookupEnv(k); ok {
			old[k] = &o
			os.Unsetenv(k)
		}
	}
	return func() {
		for k, v := range old {
			if v == nil {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, *v)
			}
		}
	}
}

// upload creates the bucket and pushes the images with their index,
// straight to the server.
func (e *remoteEnv) upload(ctx context.Context) error {
	direct := remote.SourceConfig{S3Endpoint: e.minio.Endpoint()}
	c, err := remote.NewS3Client(ctx, direct)
	if err != nil {
		return err
	}
	if err := miniotest.CreateBucket(ctx, c, "bench"); err != nil {
		return fmt.Errorf("bench: create the bucket: %w", err)
	}
	for _, im := range []*imageFile{&e.full, &e.sparse} {
		if im.path == "" {
			continue
		}
		im.url = "s3://bench/" + filepath.Base(im.path)
		if _, err := remote.Push(ctx, im.path, im.url, remote.PushConfig{ChunkSize: e.cfg.ChunkSize, Source: direct}); err != nil {
			return fmt.Errorf("bench: push %s: %w", im.path, err)
		}
	}
	return nil
}

// etagFileServer serves dir with a strong ETag, as nginx does.
func etagFileServer(dir string) http.Handler {
	fs := http.FileServer(http.Dir(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st, err := os.Stat(filepath.Join(dir, filepath.Clean(r.URL.Path))); err == nil {
			w.Header().Set("ETag", fmt.Sprintf("\"%x-%x\"", st.ModTime().UnixNano(), st.Size()))
		}
		fs.ServeHTTP(w, r)
	})
}

func (e *remoteEnv) close() {
	e.restore()
	if e.proxy != nil {
		e.proxy.Close()
	}
	if e.minio != nil {
		e.minio.Stop()
	}
	if e.httpSrv != nil {
		e.httpSrv.Close()
	}
	os.RemoveAll(e.dir)
}

// zeroChunk says which chunks of the sparse image are all zeroes.
func zeroChunk(c int64) bool { return c%5 == 3 }

// writeImage writes an image of random bytes with no zero byte (so that
// zeroes served in place of data show in the VMs' checks); sparse, every
// fifth chunk is zeroes, and one page in eight elsewhere.
func writeImage(path string, size, chunk int64, sparse bool) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: image: %w", err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{'u', 'f', 'f', 'd', 'r'})
	pick := rand.New(rand.NewPCG(11, 12))
	buf := make([]byte, chunk)
	for c := int64(0); c*chunk < size; c++ {
		b := buf[:min(chunk, size-c*chunk)]
		if sparse && zeroChunk(c) {
			clear(b)
		} else {
			r.Read(b)
			for i := range b {
				if b[i] == 0 {
					b[i] = 1
				}
			}
			if sparse {
				for p := 0; p+remote.PageSize <= len(b); p += remote.PageSize {
					if pick.IntN(8) == 0 {
						clear(b[p : p+remote.PageSize])
					}
				}
			}
		}
		if _, err := f.Write(b); err != nil {
			return fmt.Errorf("bench: image: %w", err)
		}
	}
	return f.Close()
}

// daemonArgs are the daemon's flags for a run.
func (e *remoteEnv) daemonArgs(url, prefetch, dir string, more ...string) []string {
	args := []string{e.cfg.Exe, "firecracker", "--socket", filepath.Join(dir, "fc.sock"), "--mem-file", url,
		"--prefetch", prefetch, "--control", "none"}
	if !strings.HasPrefix(url, "/") { // a remote image (a local file: the floor of the seq case)
		args = append(args, "--cache-dir", filepath.Join(dir, "cache"), "--fetch-concurrency", strconv.Itoa(e.cfg.Concurrency))
	}
	return append(append(args, more...), e.cfg.DaemonArgs...)
}

// run is one run's directory, daemon and VMs.
type run struct {
	e       *remoteEnv
	dir     string
	h       *handlerProc
	vms     []*vmProc
	start   string
	started time.Time
}

type vmProc struct {
	cmd         *exec.Cmd
	out, stderr bytes.Buffer
}

// startRun starts a daemon serving url with a fresh cache at rtt.
func (e *remoteEnv) startRun(ctx context.Context, url, prefetch string, rtt time.Duration, more ...string) (*run, error) {
	e.seq++
	r := &run{e: e, dir: filepath.Join(e.dir, "run"+strconv.Itoa(e.seq))}
	if err := os.Mkdir(r.dir, 0o700); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	r.start = filepath.Join(r.dir, "start")
	e.proxy.SetRTT(rtt)
	e.proxy.ResetCounts()
	args := e.daemonArgs(url, prefetch, r.dir, more...)
	h, err := startHandlerEnv(ctx, e.env, args[0], args[1:]...)
	if err != nil {
		r.close()
		return nil, err
	}
	r.h = h
	if err := h.wait(ctx, "listening", func(s bool, _ int) bool { return s }); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// startVMs starts n VMs on the image's memory file, each touching its
// guest in order touch once (after release), and waits until the daemon
// saw them all connect.
func (r *run) startVMs(ctx context.Context, im imageFile, n int, touch string) error {
	for range n {
		cmd, err := fctest.Command(r.e.cfg.Exe, fctest.Config{
			Socket: filepath.Join(r.dir, "fc.sock"), MemFile: im.path,
			Regions: []fctest.Region{{Size: uint64(im.size)}},
			Touch:   []string{touch}, Latency: true, Verify: true, StartFile: r.start,
		})
		if err != nil {
			return err
		}
		v := &vmProc{cmd: cmd}
		cmd.Stdout, cmd.Stderr = &v.out, &v.stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start a test VM: %w", err)
		}
		r.vms = append(r.vms, v)
	}
	if err := r.h.wait(ctx, fmt.Sprintf("%d VMs connected", n), func(_ bool, c int) bool { return c >= n }); err != nil {
		return err
	}
	r.started = time.Now()
	return nil
}

// release lets the VMs touch their memory.
func (r *run) release() error { return os.WriteFile(r.start, nil, 0o600) }

// wait waits for the VMs and returns their results.
func (r *run) wait() ([]fctest.Result, error) {
	var out []fctest.Result
	var errs []error
	for _, v := range r.vms {
		res, err := fctest.Wait(v.cmd, &v.out)
		if err == nil && (len(res.Passes) != 1 || res.Verified == 0) {
			err = fmt.Errorf("test VM reported %d passes, %d pages verified", len(res.Passes), res.Verified)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("test VM %d: %w (stderr: %s)", v.cmd.Process.Pid, err, strings.TrimSpace(v.stderr.String())))
			continue
		}
		out = append(out, res)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w\nhandler %s", err, r.h.logText())
	}
	return out, nil
}

func (r *run) close() {
	for _, v := range r.vms {
		if v.cmd.ProcessState == nil {
			v.cmd.Process.Kill()
			v.cmd.Wait()
		}
	}
	if r.h != nil {
		r.h.stop()
	}
	os.RemoveAll(r.dir)
}

// requests counts the range requests the proxy saw for the image.
func (e *remoteEnv) requests() int {
	n := 0
	for _, q := range e.proxy.Requests() {
		if q.Method == http.MethodGet && q.Range != "" {
			n++
		}
	}
	return n
}

// touchRun is one on-demand run: a daemon, n VMs touching in order touch,
// their passes.
func (e *remoteEnv) touchRun(ctx context.Context, kind string, im imageFile, prefetch string, rtt time.Duration, n int, touch string, i int) (RemoteRun, error) {
	var ttfb int64
	if kind == "seq" {
		// The server's own time to a first byte, just before: what
		// the first fault waits for at the least.
		t, err := e.firstByte(ctx, rtt, 3)
		if err != nil {
			return RemoteRun{}, err
		}
		ttfb = t.PassNS
	}
	r, err := e.startRun(ctx, im.url, prefetch, rtt)
	if err != nil {
		return RemoteRun{}, err
	}
	defer r.close()
	if err := r.startVMs(ctx, im, n, touch); err != nil {
		return RemoteRun{}, err
	}
	if err := r.release(); err != nil {
		return RemoteRun{}, err
	}
	res, err := r.wait()
	if err != nil {
		return RemoteRun{}, err
	}
	slices.SortFunc(res, func(a, b fctest.Result) int { return int(a.Passes[0].Ns - b.Passes[0].Ns) })
	p := res[len(res)/2].Passes[0]
	first := slices.MinFunc(res, func(a, b fctest.Result) int { return int(a.Passes[0].FirstNs - b.Passes[0].FirstNs) }).Passes[0].FirstNs
	return RemoteRun{
		Case: kind, Prefetch: prefetch, RTT: rtt, Run: i, PassNS: p.Ns, FirstNS: first, P50NS: p.P50Ns, P99NS: p.P99Ns,
		TTFBNS: ttfb, BytesDown: e.proxy.BytesDown(), Requests: e.requests(),
	}, nil
}

// download is one whole-object download through the proxy at rtt.
func (e *remoteEnv) download(ctx context.Context, rtt time.Duration, i int) (RemoteRun, error) {
	e.proxy.SetRTT(rtt)
	e.proxy.ResetCounts()
	out := filepath.Join(e.dir, "download")
	defer os.Remove(out)
	t0 := time.Now()
	if e.cfg.Server == "s3" {
		client, err := remote.NewS3Client(ctx, remote.SourceConfig{S3Endpoint: e.endpoint, Connections: e.cfg.Concurrency + 4})
		if err != nil {
			return RemoteRun{}, err
		}
		defer client.Options().HTTPClient.(interface{ CloseIdleConnections() }).CloseIdleConnections()
		t0 = time.Now()
		f, err := os.Create(out)
		if err != nil {
			return RemoteRun{}, err
		}
		d := manager.NewDownloader(client, func(d *manager.Downloader) {
			d.Concurrency, d.PartSize = e.cfg.Concurrency, e.cfg.ChunkSize
		})
		bucket, key, _ := remote.ParseS3URL(e.full.url)
		n, err := d.Download(ctx, f, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
		if err == nil {
			err = f.Close()
		} else {
			f.Close()
		}
		if err == nil && n != e.full.size {
			err = fmt.Errorf("downloaded %d bytes of %d", n, e.full.size)
		}
		if err != nil {
			return RemoteRun{}, fmt.Errorf("download: %w", err)
		}
	} else {
		_, err := remote.Pull(ctx, e.full.url, out, remote.PullConfig{Concurrency: e.cfg.Concurrency, ChunkSize: e.cfg.ChunkSize, NoIndex: true})
		if err != nil {
			return RemoteRun{}, fmt.Errorf("download: %w", err)
		}
	}
	return RemoteRun{Case: "download", RTT: rtt, Run: i, PassNS: time.Since(t0).Nanoseconds(), BytesDown: e.proxy.BytesDown(), Requests: e.requests()}, nil
}

// seqCase: every page in address order, on demand, at each RTT, against
// the whole object's download; and the first fault's latency.
func (e *remoteEnv) seqCase(ctx context.Context, report func(RemoteRun)) ([]RemoteTarget, error) {
	var ts, first []RemoteTarget
	// The floor: the same touch served from the image's file, on the host.
	local := map[string][]RemoteRun{}
	onHost := e.full
	onHost.url = e.full.path
	for i := range e.cfg.Runs {
		for _, pf := range e.cfg.Prefetch {
			r, err := e.touchRun(ctx, "local", onHost, pf, 0, 1, "seq-write", i+1)
			if err != nil {
				return nil, fmt.Errorf("local file, prefetch %s, run %d: %w", pf, i+1, err)
			}
			report(r)
			local[pf] = append(local[pf], r)
		}
	}
	for _, rtt := range e.cfg.RTTs {
		var downloads []RemoteRun
		passes := map[string][]RemoteRun{}
		for i := range e.cfg.Runs {
			// Alternate which goes first.
			order := append([]string{"download"}, e.cfg.Prefetch...)
			if i%2 == 1 {
				slices.Reverse(order)
			}
			for _, what := range order {
				var r RemoteRun
				var err error
				if what == "download" {
					r, err = e.download(ctx, rtt, i+1)
				} else {
					r, err = e.touchRun(ctx, "seq", e.full, what, rtt, 1, "seq-write", i+1)
				}
				if err != nil {
					return nil, fmt.Errorf("%s at %v, run %d: %w", what, rtt, i+1, err)
				}
				report(r)
				if what == "download" {
					downloads = append(downloads, r)
				} else {
					passes[what] = append(passes[what], r)
				}
			}
		}
		dl := median(downloads, func(r RemoteRun) float64 { return float64(r.PassNS) })
		var firsts, ttfbs, own []float64
		for _, pf := range e.cfg.Prefetch {
			var ratios []float64
			for i, r := range passes[pf] {
				ratios = append(ratios, float64(r.PassNS)/float64(downloads[i].PassNS))
				firsts = append(firsts, float64(r.FirstNS))
				ttfbs = append(ttfbs, float64(r.TTFBNS))
				own = append(own, float64(r.FirstNS-r.TTFBNS))
			}
			t := RemoteTarget{
				Name:  fmt.Sprintf("seq/%s/rtt=%v", pf, rtt),
				About: fmt.Sprintf("every page in address order on demand (--prefetch %s) against downloading the whole object at the same concurrency", pf),
				Value: median(passes[pf], func(r RemoteRun) float64 { return float64(r.PassNS) }) / 1e9, Ref: dl / 1e9, Unit: "s",
				Ratio: medianOf(ratios), Op: "<=", Want: 1.2,
				Control:      median(local[pf], func(r RemoteRun) float64 { return float64(r.PassNS) }) / 1e9,
				ControlAbout: "the same touch served from the image's file on the host",
			}
			t.Met = t.Ratio <= t.Want
			ts = append(ts, t)
		}
		// A page's transfer at the rate the download reached.
		rate := float64(e.full.size) / dl // bytes per ns
		budget := float64(rtt) + remote.PageSize/rate + float64(time.Millisecond)
		f := RemoteTarget{
			Name:  fmt.Sprintf("first-fault/rtt=%v", rtt),
			About: "a cold cache's first fault, from the VM's touch to its page installed, against one RTT + a page's transfer + 1 ms",
			Value: medianOf(firsts) / 1e6, Ref: budget / 1e6, Unit: "ms", Op: "<=", Want: 1,
			Control:      medianOf(ttfbs) / 1e6,
			ControlAbout: "the server's own time to the first byte of a chunk's range request through the proxy, just before each run (median)",
		}
		f.Ratio = f.Value / f.Ref
		f.Met = f.Ratio <= f.Want
		// The handler's part: the first fault less the server's own
		// time to a first byte (which holds the RTT), against a page's
		// transfer + 1 ms.
		h := RemoteTarget{
			Name:  fmt.Sprintf("first-fault-handler/rtt=%v", rtt),
			About: "the first fault less the server's own time to a first byte just before (the control), against a page's transfer + 1 ms: what the handler adds (median over the runs)",
			Value: medianOf(own) / 1e6, Ref: (budget - float64(rtt)) / 1e6, Unit: "ms", Op: "<=", Want: 1,
		}
		h.Ratio = h.Value / h.Ref
		h.Met = h.Ratio <= h.Want
		first = append(first, f, h)
	}
	return append(first, ts...), nil
}

func median(rs []RemoteRun, f func(RemoteRun) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return medianOf(xs)
}

// randomCase: every page in a shuffled order at RandomRTT, against
// fetching each page with one request at a time (a sample of single-page
// requests, extrapolated to every page).
func (e *remoteEnv) randomCase(ctx context.Context, report func(RemoteRun)) ([]RemoteTarget, error) {
	rtt := e.cfg.RandomRTT
	serial, err := e.serial(ctx, rtt)
	if err != nil {
		return nil, err
	}
	report(serial)
	pages := float64(e.full.size / remote.PageSize)
	serialTotal := float64(serial.PassNS) * pages
	var ts []RemoteTarget
	for _, pf := range e.cfg.Prefetch {
		var rs []RemoteRun
		for i := range e.cfg.Runs {
			r, err := e.touchRun(ctx, "random", e.full, pf, rtt, 1, "random-write", i+1)
			if err != nil {
				return nil, fmt.Errorf("prefetch %s, run %d: %w", pf, i+1, err)
			}
			report(r)
			rs = append(rs, r)
		}
		pass := median(rs, func(r RemoteRun) float64 { return float64(r.PassNS) })
		t := RemoteTarget{
			Name:  fmt.Sprintf("random/%s/rtt=%v", pf, rtt),
			About: fmt.Sprintf("every page in a shuffled order on demand (--prefetch %s) against one single-page request at a time (%d sampled, x %.0f pages)", pf, e.cfg.Serial, pages),
			Value: pass / 1e9, Ref: serialTotal / 1e9, Unit: "s", Ratio: serialTotal / pass, Op: ">=", Want: 100,
		}
		t.Met = t.Ratio >= t.Want
		ts = append(ts, t)
	}
	return ts, nil
}

// firstByte times n range requests of a chunk, one at a time, through
// the proxy at rtt with the source the daemon uses, to their first byte:
// the server's part of a fault's latency (their median).
func (e *remoteEnv) firstByte(ctx context.Context, rtt time.Duration, n int) (RemoteRun, error) {
	e.proxy.SetRTT(rtt)
	e.proxy.ResetCounts()
	src, err := remote.OpenSource(ctx, e.full.url, remote.SourceConfig{S3Endpoint: e.endpoint, Connections: 4})
	if err != nil {
		return RemoteRun{}, err
	}
	defer src.Close()
	pick := rand.New(rand.NewPCG(5, 6))
	chunks := e.full.size / e.cfg.ChunkSize
	var ds []float64
	var one [1]byte
	for range n {
		off := pick.Int64N(chunks) * e.cfg.ChunkSize
		t0 := time.Now()
		body, err := src.ReadRange(ctx, off, e.cfg.ChunkSize)
		if err == nil {
			_, err = io.ReadFull(body, one[:])
			ds = append(ds, float64(time.Since(t0)))
			io.Copy(io.Discard, body)
			body.Close()
		}
		if err != nil {
			return RemoteRun{}, fmt.Errorf("a chunk's range request: %w", err)
		}
	}
	return RemoteRun{Case: "ttfb", RTT: rtt, Run: 1, PassNS: int64(medianOf(ds)), BytesDown: e.proxy.BytesDown(), Requests: e.requests()}, nil
}

// serial times single-page requests of random pages, one at a time,
// through the proxy at rtt, with the source the daemon uses.
func (e *remoteEnv) serial(ctx context.Context, rtt time.Duration) (RemoteRun, error) {
	e.proxy.SetRTT(rtt)
	e.proxy.ResetCounts()
	src, err := remote.OpenSource(ctx, e.full.url, remote.SourceConfig{S3Endpoint: e.endpoint, Connections: 4})
	if err != nil {
		return RemoteRun{}, err
	}
	defer src.Close()
	pick := rand.New(rand.NewPCG(3, 4))
	pages := e.full.size / remote.PageSize
	buf := make([]byte, remote.PageSize)
	var total time.Duration
	for range e.cfg.Serial {
		off := pick.Int64N(pages) * remote.PageSize
		t0 := time.Now()
		body, err := src.ReadRange(ctx, off, remote.PageSize)
		if err != nil {
			return RemoteRun{}, fmt.Errorf("single-page request: %w", err)
		}
		_, err = io.ReadFull(body, buf)
		body.Close()
		if err != nil {
			return RemoteRun{}, fmt.Errorf("single-page request: %w", err)
		}
		total += time.Since(t0)
	}
	return RemoteRun{Case: "serial", RTT: rtt, Run: 1, PassNS: int64(total) / int64(e.cfg.Serial), BytesDown: e.proxy.BytesDown(), Requests: e.requests()}, nil
}

// replayCase: a restore recorded (at no added latency), then restores
// replaying it at ReplayRTT with the link capped at Bandwidth: the time
// until the recorded working set (every page the recorded VM touched, in
// its shuffled order) has passed the proxy, the VM waiting meanwhile.
func (e *remoteEnv) replayCase(ctx context.Context, report func(RemoteRun)) ([]RemoteTarget, error) {
	trace := filepath.Join(e.dir, "replay.trace")
	mode := []string{"--mode", "record-replay", "--trace", trace}
	r, err := e.recordRun(ctx, mode)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	report(r)
	rtt := e.cfg.ReplayRTT
	var rs, ds []RemoteRun
	for i := range e.cfg.Runs {
		r, err := e.replayRun(ctx, mode, rtt, i+1)
		if err != nil {
			return nil, fmt.Errorf("replay, run %d: %w", i+1, err)
		}
		report(r)
		rs = append(rs, r)
		e.proxy.SetBandwidth(e.cfg.Bandwidth)
		d, err := e.download(ctx, rtt, i+1)
		e.proxy.SetBandwidth(0)
		if err != nil {
			return nil, fmt.Errorf("download under the cap, run %d: %w", i+1, err)
		}
		d.Case = "download-capped"
		report(d)
		ds = append(ds, d)
	}
	rate := median(rs, func(r RemoteRun) float64 { return float64(e.full.size) / float64(r.ArrivedNS) * 1e9 })
	t := RemoteTarget{
		Name:  fmt.Sprintf("replay/rtt=%v", rtt),
		About: fmt.Sprintf("record-replay: the recorded working set (%d MiB, recorded in shuffled order) arriving, against the link's cap", e.full.size>>20),
		Value: rate / 1e6, Ref: float64(e.cfg.Bandwidth) / 1e6, Unit: "MB/s", Op: ">=", Want: 0.8,
		Control:      median(ds, func(r RemoteRun) float64 { return float64(e.full.size) / float64(r.PassNS) * 1e9 }) / 1e6,
		ControlAbout: "the whole object downloaded under the same cap and RTT, at the same concurrency",
	}
	t.Ratio = t.Value / t.Ref
	t.Met = t.Ratio >= t.Want
	return []RemoteTarget{t}, nil
}

// recordRun restores a VM in record-replay mode with no trace yet: its
// faults are recorded as it touches every page in a shuffled order.
func (e *remoteEnv) recordRun(ctx context.Context, mode []string) (RemoteRun, error) {
	r, err := e.startRun(ctx, e.full.url, "none", 0, mode...)
	if err != nil {
		return RemoteRun{}, err
	}
	defer r.close()
	if err := r.startVMs(ctx, e.full, 1, "random-write"); err != nil {
		return RemoteRun{}, err
	}
	if err := r.release(); err != nil {
		return RemoteRun{}, err
	}
	res, err := r.wait()
	if err != nil {
		return RemoteRun{}, err
	}
	r.h.stop() // writes the trace, if the VM's end did not
	r.h = nil
	p := res[0].Passes[0]
	return RemoteRun{Case: "record", Prefetch: "none", Run: 1, PassNS: p.Ns, FirstNS: p.FirstNs, P50NS: p.P50Ns, P99NS: p.P99Ns,
		BytesDown: e.proxy.BytesDown(), Requests: e.requests()}, nil
}

func (e *remoteEnv) replayRun(ctx context.Context, mode []string, rtt time.Duration, i int) (RemoteRun, error) {
	r, err := e.startRun(ctx, e.full.url, "adaptive", rtt, mode...)
	if err != nil {
		return RemoteRun{}, err
	}
	defer r.close()
	e.proxy.SetBandwidth(e.cfg.Bandwidth)
	defer e.proxy.SetBandwidth(0)
	e.proxy.ResetCounts()
	if err := r.startVMs(ctx, e.full, 1, "random-write"); err != nil {
		return RemoteRun{}, err
	}
	want := e.full.nonzero
	limit := time.Now().Add(max(time.Minute, 10*time.Duration(float64(want)/float64(e.cfg.Bandwidth)*1e9)))
	for e.proxy.BytesDown() < want {
		if time.Now().After(limit) {
			return RemoteRun{}, fmt.Errorf("%d of %d bytes arrived by the deadline: %s", e.proxy.BytesDown(), want, r.h.logText())
		}
		if err := ctx.Err(); err != nil {
			return RemoteRun{}, err
		}
		time.Sleep(time.Millisecond)
	}
	arrived := time.Since(r.started)
	down, reqs := e.proxy.BytesDown(), e.requests()
	e.proxy.SetBandwidth(0)
	if err := r.release(); err != nil {
		return RemoteRun{}, err
	}
	res, err := r.wait()
	if err != nil {
		return RemoteRun{}, err
	}
	p := res[0].Passes[0]
	return RemoteRun{Case: "replay", Prefetch: "adaptive", RTT: rtt, Run: i, PassNS: p.Ns, FirstNS: p.FirstNs, P50NS: p.P50Ns, P99NS: p.P99Ns,
		BytesDown: down, Requests: reqs, ArrivedNS: arrived.Nanoseconds()}, nil
}

// sharedCase: SharedVMs VMs restored at once from the sparse image,
// touching every page in a shuffled order: the bytes the proxy carried
// against the image's non-zero chunks.
func (e *remoteEnv) sharedCase(ctx context.Context, report func(RemoteRun)) ([]RemoteTarget, error) {
	rtt := e.cfg.SharedRTT
	var rs []RemoteRun
	for i := range e.cfg.Runs {
		r, err := e.touchRun(ctx, "shared", e.sparse, "adaptive", rtt, e.cfg.SharedVMs, "random-write", i+1)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		report(r)
		rs = append(rs, r)
	}
	t := RemoteTarget{
		Name: fmt.Sprintf("shared/vms=%d/rtt=%v", e.cfg.SharedVMs, rtt),
		About: fmt.Sprintf("%d VMs restored at once from one image (every fifth chunk zero, with an index), each touching every page in a shuffled order: bytes through the proxy against the non-zero chunks",
			e.cfg.SharedVMs),
		Value: median(rs, func(r RemoteRun) float64 { return float64(r.BytesDown) }) / (1 << 20),
		Ref:   float64(e.sparse.nonzero) / (1 << 20), Unit: "MiB", Op: "<=", Want: 1.05,
	}
	t.Ratio = t.Value / t.Ref
	t.Met = t.Ratio <= t.Want
	return []RemoteTarget{t}, nil
}

// WriteText writes the targets as a table, then the setup.
func (r *RemoteReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "remote images: %d MiB guests and images, %s server behind the proxy, chunks of %d KiB, %d requests in flight, medians of %d runs, %d CPUs\n",
		r.MiB, r.Server, r.ChunkSize>>10, r.Concurrency, r.Runs, r.CPUs)
	fmt.Fprintf(w, "daemon: %s\ndownload: %s\n", strings.Join(r.Daemon, " "), r.Baseline)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "target\tmeasured\treference\tratio\twant\tmet\tcontrol\n")
	controls := map[string]bool{}
	var notes []string
	for _, t := range r.Targets {
		met := "no"
		if t.Met {
			met = "yes"
		}
		control := "-"
		if t.Control != 0 {
			control = num(t.Control) + " " + t.Unit
			if !controls[t.ControlAbout] {
				controls[t.ControlAbout] = true
				notes = append(notes, t.ControlAbout)
			}
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s %s\t%s\t%s %.2f\t%s\t%s\n", t.Name, num(t.Value), t.Unit, num(t.Ref), t.Unit, jsonFloat(t.Ratio), t.Op, t.Want, met, control)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	abouts := map[string]bool{}
	for _, t := range r.Targets {
		if !abouts[t.About] {
			abouts[t.About] = true
			fmt.Fprintf(w, "%s: %s\n", t.Name, t.About)
		}
	}
	for i, n := range notes {
		if i == 0 {
			fmt.Fprintf(w, "control: ")
		} else {
			fmt.Fprintf(w, "         ")
		}
		fmt.Fprintf(w, "%s\n", n)
	}
	return nil
}

func num(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "-"
	case math.Abs(x) >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case math.Abs(x) >= 1:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strconv.FormatFloat(x, 'f', 3, 64)
}

// WriteJSON writes the report as one line.
func (r *RemoteReport) WriteJSON(w io.Writer) error { return writeJSONLine(w, r) }
