//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Ref is the C reference handler to compare with: a binary built from
// shared/bench/ref_handler.c (cc -O2 -pthread -o ref_handler ref_handler.c).
type Ref struct {
	// Path is the binary.
	Path string
	// Chunk is its -c, the bytes resolved per fault: by default the Go
	// run's chunk, or one page with adaptive prefetch. ref_handler aligns
	// chunks with a mask, so it must be a power of two.
	Chunk int
}

// chunk is the -c to run with against cfg (with defaults).
func (r Ref) chunk(cfg Config) int {
	switch {
	case r.Chunk != 0:
		return r.Chunk
	case cfg.Adaptive:
		return PageSize
	}
	return cfg.Chunk
}

// Validate checks r for a run against cfg.
func (r Ref) Validate(cfg Config) error {
	if r.Path == "" {
		return errors.New("--ref: no path given")
	}
	if st, err := os.Stat(r.Path); err != nil {
		return fmt.Errorf("--ref %s: %w", r.Path, err)
	} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("--ref %s: not an executable file", r.Path)
	}
	c := r.chunk(cfg.withDefaults())
	if c < PageSize || c%PageSize != 0 || c&(c-1) != 0 {
		return fmt.Errorf("ref chunk %d: want a power of two multiple of the page size %d (ref_handler aligns chunks with a mask)", c, PageSize)
	}
	if c > cfg.withDefaults().MiB<<20 {
		return fmt.Errorf("ref chunk %d: larger than the region", c)
	}
	return nil
}

// Args are ref_handler's flags for one run of the workload cfg.
func (r Ref) Args(cfg Config) []string {
	cfg = cfg.withDefaults()
	args := []string{
		"-s", strconv.Itoa(cfg.MiB),
		"-c", strconv.Itoa(r.chunk(cfg)),
		"-f", strconv.Itoa(cfg.Faulters),
		"-n", strconv.Itoa(cfg.Workers),
		"-o", cfg.Op.String(),
		"-r", "1",
	}
	if cfg.ReadTouch {
		args = append(args, "-R")
	}
	if cfg.Random {
		args = append(args, "-x")
	}
	return args
}

// refJSON is ref_handler's output.
type refJSON struct {
	Op         string   `json:"op"`
	Chunk      int      `json:"chunk"`
	Faulters   int      `json:"faulters"`
	Handlers   int      `json:"handlers"`
	MiB        int      `json:"mib"`
	MedianNS   int64    `json:"median_ns"`
	Faults     *float64 `json:"faults"`
	FaultsPerS float64  `json:"faults_per_s"`
	TouchP50NS *int64   `json:"touch_p50_ns"`
	TouchP99NS *int64   `json:"touch_p99_ns"`
}

// parseRef decodes a line of ref_handler's output and checks it describes
// the run asked for.
func parseRef(out []byte, cfg Config, chunk int) (Sample, error) {
	line := bytes.TrimSpace(out)
	var j refJSON
	if err := json.Unmarshal(line, &j); err != nil {
		return Sample{}, fmt.Errorf("output %q is not ref_handler's JSON: %w", line, err)
	}
	if j.MedianNS <= 0 || j.Faults == nil || j.TouchP50NS == nil || j.TouchP99NS == nil {
		return Sample{}, fmt.Errorf("output %q lacks median_ns, faults or touch percentiles", line)
	}
	for _, f := range []struct {
		name      string
		got, want any
	}{
		{"op", j.Op, cfg.Op.String()},
		{"mib", j.MiB, cfg.MiB},
		{"chunk", j.Chunk, chunk},
		{"faulters", j.Faulters, cfg.Faulters},
		{"handlers", j.Handlers, cfg.Workers},
	} {
		if f.got != f.want {
			return Sample{}, fmt.Errorf("reported %s %v, asked for %v", f.name, f.got, f.want)
		}
	}
	return Sample{
		Elapsed: time.Duration(j.MedianNS),
		P50:     time.Duration(*j.TouchP50NS),
		P99:     time.Duration(*j.TouchP99NS),
		raw:     line,
	}, nil
}

// run runs ref_handler once.
func (r Ref) run(ctx context.Context, cfg Config) (Sample, error) {
	var stdout, stderr bytes.Buffer
	args := r.Args(cfg)
	cmd := exec.CommandContext(ctx, r.Path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return Sample{}, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			msg = ": " + msg
		}
		return Sample{}, fmt.Errorf("%s %s: %w%s", r.Path, strings.Join(args, " "), err, msg)
	}
	s, err := parseRef(stdout.Bytes(), cfg, r.chunk(cfg))
	if err != nil {
		return Sample{}, fmt.Errorf("%s %s: %w", r.Path, strings.Join(args, " "), err)
	}
	return s, nil
}

// Compare runs the workload cfg in Go and with ref_handler, alternating
// one run of each cfg.Runs times (the Go run first in odd pairs, second
// in even ones, so that drift of the machine weighs on both alike), and
// reports both medians and the go/ref ratios over the pairs. progress,
// when not nil, is called after each run.
func Compare(ctx context.Context, cfg Config, ref Ref, progress func(Progress)) (*Comparison, error) {
	if err := ref.Validate(cfg); err != nil {
		return nil, err
	}
	b, err := New(cfg)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	cfg = b.cfg
	defer setGOMAXPROCS(cfg.GOMAXPROCS)()
	var goSamples, refSamples []Sample
	for i := range cfg.Runs {
		for k := range 2 {
			var (
				s    Sample
				err  error
				impl = "go"
			)
			if (i+k)%2 == 1 {
				impl = "ref"
			}
			if impl == "go" {
				s, err = b.Run(ctx)
			} else {
				s, err = ref.run(ctx, cfg)
			}
			if err != nil {
				return nil, runError(impl, i+1, cfg.Runs, err)
			}
			if impl == "go" {
				goSamples = append(goSamples, s)
			} else {
				refSamples = append(refSamples, s)
			}
			if progress != nil {
				progress(Progress{Impl: impl, Run: i + 1, Runs: cfg.Runs, Sample: s})
			}
		}
	}
	g := b.result(goSamples)
	r := &Result{
		Impl:     "ref",
		Op:       cfg.Op,
		Chunk:    ref.chunk(cfg),
		Faulters: cfg.Faulters,
		Handlers: cfg.Workers,
		MiB:      cfg.MiB,
		Median:   refSamples[medianIndex(refSamples)],
		Samples:  refSamples,
	}
	return &Comparison{Go: g, Ref: r, Ratio: ratio(g, r)}, nil
}
