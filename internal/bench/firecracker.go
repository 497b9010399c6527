//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gouffd/uffd/firecracker/fctest"
)

// FirecrackerConfig describes the comparison of `uffd firecracker
// --prefetch none` with the C handler of the same protocol (ref/fchandler.c,
// one pinned reader per CPU), both serving test VMs (package fctest: each
// a process of its own that speaks Firecracker's side of the protocol and
// write-touches every 4 KiB page of its guest once, then checks every byte
// against the memory file). The zero value is the comparison: 64
// MiB guests, in address order and shuffled, one VM and 8 VMs at once,
// median of 5 interleaved runs.
type FirecrackerConfig struct {
	// MiB is each guest's size (default 64).
	MiB int
	// VMs lists how many VMs fault at once, one case each (default 1 and
	// 8). The daemon serves them all; the C handler runs as one process
	// per VM.
	VMs []int
	// Orders lists the touch orders, "seq" and "random" (default both).
	Orders []string
	// Runs is the number of runs of each case and handler (default 5).
	Runs int
	// Exe is the uffd program: the daemon runs as `Exe firecracker ...`,
	// and the VMs as Exe with fctest's environment, which its main hands
	// to ChildMain (default: this program, os.Executable).
	Exe string
	// DaemonArgs are more flags for the daemon, after --prefetch none.
	DaemonArgs []string
	// Handler is the C handler's program (default: built from
	// ref/fchandler.c with BuildRef, into CacheDir).
	Handler  string
	CacheDir string
}

// Limits of FirecrackerConfig.
const (
	MaxVMs      = 64
	MaxGuestMiB = 4096
)

func (c FirecrackerConfig) withDefaults() FirecrackerConfig {
	if c.MiB == 0 {
		c.MiB = 64
	}
	if len(c.VMs) == 0 {
		c.VMs = []int{1, 8}
	}
	if len(c.Orders) == 0 {
		c.Orders = []string{"seq", "random"}
	}
	if c.Runs == 0 {
		c.Runs = 5
	}
	return c
}

// Validate reports the first field out of range, named as `uffd bench
// firecracker` flags name it.
func (c FirecrackerConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.MiB < 1 || c.MiB > MaxGuestMiB:
		return fmt.Errorf("--mib %d: want 1 to %d", c.MiB, MaxGuestMiB)
	case c.Runs < 1 || c.Runs > MaxRuns:
		return fmt.Errorf("--runs %d: want 1 to %d", c.Runs, MaxRuns)
	}
	for _, n := range c.VMs {
		if n < 1 || n > MaxVMs {
			return fmt.Errorf("--vms %d: want 1 to %d", n, MaxVMs)
		}
	}
	for _, o := range c.Orders {
		if o != "seq" && o != "random" {
			return fmt.Errorf("--order %q: want seq or random", o)
		}
	}
	if c.Handler != "" {
		if st, err := os.Stat(c.Handler); err != nil {
			return fmt.Errorf("--handler %s: %w", c.Handler, err)
		} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("--handler %s: not an executable file", c.Handler)
		}
	}
	return nil
}

// FCRun is one run of one handler under one case.
type FCRun struct {
	// PassNS is each VM's time to touch its whole guest.
	PassNS []int64 `json:"pass_ns"`
}

// nsPerPage is the median VM's time per page.
func (r FCRun) nsPerPage(pages int) float64 {
	ns := slices.Sorted(slices.Values(r.PassNS))
	return float64(ns[len(ns)/2]) / float64(pages)
}

// pagesPerS is the throughput of all the VMs together: every page of every
// guest over the slowest VM's time (the VMs start together).
func (r FCRun) pagesPerS(pages int) float64 {
	return float64(pages*len(r.PassNS)) / (float64(slices.Max(r.PassNS)) / 1e9)
}

// FCSide is one handler's runs of a case and their medians.
type FCSide struct {
	Runs      []FCRun `json:"runs"`
	NSPerPage float64 `json:"ns_per_page"` // median over the runs
	PagesPerS float64 `json:"pages_per_s"` // median over the runs
}

// FCCase is one case: a number of VMs and an order, both handlers.
type FCCase struct {
	VMs   int    `json:"vms"`
	Order string `json:"order"`
	Go    FCSide `json:"go"`
	C     FCSide `json:"c"`
	// PerPage is C's time per page over the daemon's, and Throughput the
	// daemon's pages per second over C's: medians over the pairs of runs,
	// above 1 when the daemon is faster.
	PerPage    float64 `json:"per_page_ratio"`
	Throughput float64 `json:"throughput_ratio"`
}

// FCReport is the outcome of RunFirecracker.
type FCReport struct {
	MiB     int      `json:"mib"`
	Pages   int      `json:"pages_per_vm"`
	Runs    int      `json:"runs"`
	Readers int      `json:"c_readers"` // the C handler's readers per VM
	Daemon  []string `json:"daemon"`    // the daemon's command line
	Handler string   `json:"c_handler"`
	Cases   []FCCase `json:"cases"`
}

// FCProgress reports one finished run.
type FCProgress struct {
	Impl  string // "go" or "c"
	VMs   int
	Order string
	Run   int
	Runs  int
	Pages int
	FCRun
}

// Line is a one-line summary for stderr.
func (p FCProgress) Line() string {
	return fmt.Sprintf("%-2s %d VM(s) %-6s run %d/%d: %.1f us/page (median VM), %.0f pages/s in all",
		p.Impl, p.VMs, p.Order, p.Run, p.Runs, p.nsPerPage(p.Pages)/1e3, p.pagesPerS(p.Pages))
}

// RunFirecracker runs the comparison: for each case, cfg.Runs runs of the
// daemon and of the C handler, alternating which goes first.
func RunFirecracker(ctx context.Context, cfg FirecrackerConfig, progress func(FCProgress)) (*FCReport, error) {
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
	if cfg.Handler == "" {
		h, err := BuildRef(ctx, RefFirecracker, cfg.CacheDir)
		if err != nil {
			return nil, err
		}
		cfg.Handler = h
	}
	// Socket paths must fit in sun_path: a short directory.
	dir, err := os.MkdirTemp("", "uffd-fcbench")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	memFile := filepath.Join(dir, "mem")
	if err := writeMemFile(memFile, cfg.MiB<<20); err != nil {
		return nil, err
	}
	pages := cfg.MiB << 20 / PageSize
	rep := &FCReport{
		MiB: cfg.MiB, Pages: pages, Runs: cfg.Runs, Readers: min(AllowedCPUs(), MaxThreads), Handler: cfg.Handler,
		Daemon: append([]string{cfg.Exe, "firecracker", "--socket", "SOCKET", "--mem-file", "FILE", "--prefetch", "none", "--control", "none"}, cfg.DaemonArgs...),
	}
	seq := 0
	for _, n := range cfg.VMs {
		for _, order := range cfg.Orders {
			c := FCCase{VMs: n, Order: order}
			for i := range cfg.Runs {
				impls := []string{"go", "c"}
				if i%2 == 1 {
					impls = []string{"c", "go"}
				}
				for _, impl := range impls {
					seq++
					run, err := fcRun(ctx, cfg, dir, memFile, impl, n, order, seq)
					if err != nil {
						if ctx.Err() != nil {
							return nil, ctx.Err()
						}
						return nil, fmt.Errorf("bench: firecracker, %s, %d VM(s), %s, run %d of %d: %w", impl, n, order, i+1, cfg.Runs, err)
					}
					side := &c.Go
					if impl == "c" {
						side = &c.C
					}
					side.Runs = append(side.Runs, run)
					if progress != nil {
						progress(FCProgress{Impl: impl, VMs: n, Order: order, Run: i + 1, Runs: cfg.Runs, Pages: pages, FCRun: run})
					}
				}
			}
			c.summarize(pages)
			rep.Cases = append(rep.Cases, c)
		}
	}
	return rep, nil
}

func medianOf(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

func (c *FCCase) summarize(pages int) {
	var perPage, tput []float64
	for _, side := range []*FCSide{&c.Go, &c.C} {
		var ns, ps []float64
		for _, r := range side.Runs {
			ns = append(ns, r.nsPerPage(pages))
			ps = append(ps, r.pagesPerS(pages))
		}
		side.NSPerPage, side.PagesPerS = medianOf(ns), medianOf(ps)
	}
	for i := range min(len(c.Go.Runs), len(c.C.Runs)) {
		g, r := c.Go.Runs[i], c.C.Runs[i]
		perPage = append(perPage, r.nsPerPage(pages)/g.nsPerPage(pages))
		tput = append(tput, g.pagesPerS(pages)/r.pagesPerS(pages))
	}
	c.PerPage, c.Throughput = medianOf(perPage), medianOf(tput)
}

// writeMemFile writes a memory file of random bytes with no zero byte, so
// that zeroes served in place of data show in the VMs' checks.
func writeMemFile(path string, size int) error {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{'u', 'f', 'f', 'd'})
	r.Read(b)
	for i := range b {
		if b[i] == 0 {
			b[i] = 1
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("bench: memory file: %w", err)
	}
	return nil
}

// handlerProc is a page-fault handler process, its stderr watched for the
// lines that say it listens and that a VM connected.
type handlerProc struct {
	cmd       *exec.Cmd
	mu        sync.Mutex
	log       bytes.Buffer
	serving   bool
	connected int
	changed   chan struct{} // closed and replaced on each line
	done      chan struct{} // closed when stderr ended
}

var (
	servingLine   = regexp.MustCompile(`(?i)\bserving\b`)
	connectedLine = regexp.MustCompile(`\bVM\b.*\bconnected\b`)
)

func startHandler(ctx context.Context, name string, args ...string) (*handlerProc, error) {
	return startHandlerEnv(ctx, nil, name, args...)
}

// startHandlerEnv starts a handler with the environment env (nil: this
// process's).
func startHandlerEnv(ctx context.Context, env []string, name string, args ...string) (*handlerProc, error) {
	h := &handlerProc{cmd: exec.CommandContext(ctx, name, args...), changed: make(chan struct{}), done: make(chan struct{})}
	h.cmd.Env = env
	h.cmd.Cancel = func() error { return h.cmd.Process.Signal(syscall.SIGTERM) }
	h.cmd.WaitDelay = 10 * time.Second
	stderr, err := h.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(h.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			h.mu.Lock()
			fmt.Fprintln(&h.log, line)
			if servingLine.MatchString(line) {
				h.serving = true
			}
			if connectedLine.MatchString(line) {
				h.connected++
			}
			close(h.changed)
			h.changed = make(chan struct{})
			h.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
	}()
	return h, nil
}

// wait waits until cond holds of the handler's state, for up to 20 s.
func (h *handlerProc) wait(ctx context.Context, what string, cond func(serving bool, connected int) bool) error {
	deadline := time.After(20 * time.Second)
	for {
		h.mu.Lock()
		ok, ch := cond(h.serving, h.connected), h.changed
		h.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-h.done:
			return fmt.Errorf("%s ended before %s: %s", h.cmd.Path, what, h.logText())
		case <-deadline:
			return fmt.Errorf("%s: no sign of %s in 20 s: %s", h.cmd.Path, what, h.logText())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (h *handlerProc) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := strings.TrimSpace(h.log.String())
	if s == "" {
		return "(no output)"
	}
	return "its stderr:\n" + s
}

// stop ends the handler with SIGTERM and waits for it.
func (h *handlerProc) stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
	h.cmd.Wait()
	<-h.done
}

// fcRun is one run: the handler(s), n VMs started together, their passes.
func fcRun(ctx context.Context, cfg FirecrackerConfig, dir, memFile, impl string, n int, order string, seq int) (FCRun, error) {
	runDir := filepath.Join(dir, strconv.Itoa(seq))
	if err := os.Mkdir(runDir, 0o700); err != nil {
		return FCRun{}, err
	}
	defer os.RemoveAll(runDir)
	var handlers []*handlerProc
	defer func() {
		for _, h := range handlers {
			h.stop()
		}
	}()
	sockets := make([]string, n)
	if impl == "go" {
		sock := filepath.Join(runDir, "fc.sock")
		args := append([]string{"firecracker", "--socket", sock, "--mem-file", memFile, "--prefetch", "none", "--control", "none"}, cfg.DaemonArgs...)
		h, err := startHandler(ctx, cfg.Exe, args...)
		if err != nil {
			return FCRun{}, err
		}
		handlers = append(handlers, h)
		for i := range sockets {
			sockets[i] = sock
		}
	} else {
		// One process per VM, as the comparison asks.
		for i := range sockets {
			sockets[i] = filepath.Join(runDir, fmt.Sprintf("c%d.sock", i))
			h, err := startHandler(ctx, cfg.Handler, "-s", sockets[i], "-m", memFile)
			if err != nil {
				return FCRun{}, err
			}
			handlers = append(handlers, h)
		}
	}
	for _, h := range handlers {
		if err := h.wait(ctx, "listening", func(s bool, _ int) bool { return s }); err != nil {
			return FCRun{}, err
		}
	}

	start := filepath.Join(runDir, "start")
	type vmProc struct {
		cmd    *exec.Cmd
		out    bytes.Buffer
		stderr bytes.Buffer
	}
	vms := make([]*vmProc, n)
	defer func() {
		for _, v := range vms {
			if v != nil && v.cmd.ProcessState == nil {
				v.cmd.Process.Kill()
				v.cmd.Wait()
			}
		}
	}()
	touch := "seq-write"
	if order == "random" {
		touch = "random-write"
	}
	for i := range vms {
		cmd, err := fctest.Command(cfg.Exe, fctest.Config{
			Socket: sockets[i], MemFile: memFile,
			Regions:   []fctest.Region{{Size: uint64(cfg.MiB) << 20}},
			Touch:     []string{touch},
			Verify:    true,
			StartFile: start,
		})
		if err != nil {
			return FCRun{}, err
		}
		v := &vmProc{cmd: cmd}
		cmd.Stdout, cmd.Stderr = &v.out, &v.stderr
		if err := cmd.Start(); err != nil {
			return FCRun{}, fmt.Errorf("start a test VM: %w", err)
		}
		vms[i] = v
	}
	// Every VM connected: start them together.
	if impl == "go" {
		if err := handlers[0].wait(ctx, fmt.Sprintf("%d VMs connected", n), func(_ bool, c int) bool { return c >= n }); err != nil {
			return FCRun{}, err
		}
	} else {
		for _, h := range handlers {
			if err := h.wait(ctx, "its VM connected", func(_ bool, c int) bool { return c >= 1 }); err != nil {
				return FCRun{}, err
			}
		}
	}
	if err := os.WriteFile(start, nil, 0o600); err != nil {
		return FCRun{}, err
	}
	var run FCRun
	var errs []error
	for _, v := range vms {
		res, err := fctest.Wait(v.cmd, &v.out)
		if err == nil && (len(res.Passes) != 1 || res.Verified == 0) {
			err = fmt.Errorf("test VM reported %d passes, %d pages verified", len(res.Passes), res.Verified)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("test VM %d: %w (stderr: %s)", v.cmd.Process.Pid, err, strings.TrimSpace(v.stderr.String())))
			continue
		}
		run.PassNS = append(run.PassNS, res.Passes[0].Ns)
	}
	if err := errors.Join(errs...); err != nil {
		var logs []string
		for _, h := range handlers {
			logs = append(logs, h.logText())
		}
		return FCRun{}, fmt.Errorf("%w\nhandler %s", err, strings.Join(logs, "\n"))
	}
	return run, nil
}

// WriteText writes the report as a table.
func (r *FCReport) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "test VMs (fctest) of %d MiB each write-touching every 4 KiB page once, medians of %d interleaved runs\n", r.MiB, r.Runs)
	fmt.Fprintf(w, "go: %s\nc:  %s -s SOCKET -m FILE (%d readers per VM, pinned one per CPU; one process per VM)\n",
		strings.Join(r.Daemon, " "), r.Handler, r.Readers)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "VMs\torder\tgo us/page\tc us/page\tc/go\tgo pages/s\tc pages/s\tgo/c\t\n")
	for _, c := range r.Cases {
		fmt.Fprintf(tw, "%d\t%s\t%.2f\t%.2f\t%.3f\t%.0f\t%.0f\t%.3f\t\n", c.VMs, c.Order,
			c.Go.NSPerPage/1e3, c.C.NSPerPage/1e3, c.PerPage, c.Go.PagesPerS, c.C.PagesPerS, c.Throughput)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "us/page: the median VM's pass over its pages; pages/s: every VM's pages over the slowest pass; ratios are medians over the pairs, above 1 when the daemon is faster")
	return err
}

// WriteJSON writes the report as one line.
func (r *FCReport) WriteJSON(w io.Writer) error { return writeJSONLine(w, r) }
