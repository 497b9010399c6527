//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Target is a workload the engine's performance targets name, with the
// ratio to the C reference it must reach.
type Target struct {
	Name string
	// Config is the workload (Runs and Engine are the suite's).
	Config Config
	// RefChunk is the reference's bytes per fault (0: the Go run's).
	RefChunk int
	// Metric is the ratio compared: "faults_per_s" (go/ref, at least Want),
	// "gb_per_s" (go/ref, at least Want) or "touch_p50_ns" (go/ref, at most
	// Want).
	Metric string
	Want   float64
	// About says what the target is, as the issue puts it.
	About string
}

// Targets are the in-process and cross-process targets of the engine
// (issue 10), against the C reference with one pinned reader per CPU. The
// Firecracker targets are RunFirecracker's.
func Targets() []Target {
	const mib = 64 // a page per fault: Chunk 0
	return []Target{
		{"4k-1", Config{MiB: mib, Faulters: 1}, 0, "faults_per_s", 0.95,
			"4 KiB per fault, 1 faulter, in order"},
		{"4k-2", Config{MiB: mib, Faulters: 2}, 0, "faults_per_s", 0.95,
			"4 KiB per fault, 2 faulters, in order"},
		{"64k", Config{MiB: mib, Chunk: 64 << 10, Faulters: 1}, 0, "faults_per_s", 0.95,
			"64 KiB per fault, 1 faulter, in order"},
		{"random-p50", Config{MiB: mib, Adaptive: true, Random: true}, 0, "touch_p50_ns", 1.1,
			"random order, adaptive prefetch against C with 4 KiB, p50 touch latency"},
		{"seq-adaptive", Config{MiB: 256, Adaptive: true}, 2 << 20, "gb_per_s", 1.5,
			"sequential 256 MiB, adaptive prefetch against C with 2 MiB chunks"},
		{"child-4k-seq", Config{MiB: mib, FaultersIn: Child}, 0, "faults_per_s", 0.95,
			"faulters in another process, 4 KiB per fault, in order (per page)"},
		{"child-4k-random", Config{MiB: mib, FaultersIn: Child, Random: true}, 0, "faults_per_s", 0.95,
			"faulters in another process, 4 KiB per fault, shuffled (per page)"},
	}
}

// TargetNames lists the names of Targets.
func TargetNames() []string {
	var names []string
	for _, t := range Targets() {
		names = append(names, t.Name)
	}
	return names
}

// SelectTargets returns the targets named (all of them for "all").
func SelectTargets(names []string) ([]Target, error) {
	all := Targets()
	if len(names) == 1 && names[0] == "all" {
		return all, nil
	}
	var out []Target
	for _, n := range names {
		i := slices.IndexFunc(all, func(t Target) bool { return t.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("--targets %q: want all or some of %s", n, strings.Join(TargetNames(), ","))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// TargetResult is a target's comparison and whether it was met.
type TargetResult struct {
	Target     Target
	Comparison *Comparison
	Ratio      float64
	Met        bool
}

// RunTargets runs each target's comparison with the given engine, runs and
// reference, in turn.
func RunTargets(ctx context.Context, targets []Target, engine Engine, runs int, ref Ref, progress func(Target, Progress)) ([]TargetResult, error) {
	var out []TargetResult
	for _, t := range targets {
		cfg := t.Config
		cfg.Engine, cfg.Runs = engine, runs
		r := ref
		r.Chunk = t.RefChunk
		var p func(Progress)
		if progress != nil {
			p = func(pr Progress) { progress(t, pr) }
		}
		c, err := Compare(ctx, cfg, r, p)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		tr := TargetResult{Target: t, Comparison: c}
		switch t.Metric {
		case "faults_per_s":
			tr.Ratio, tr.Met = c.Ratio.FaultsPerS, c.Ratio.FaultsPerS >= t.Want
		case "gb_per_s":
			tr.Ratio, tr.Met = c.Ratio.GBPerS, c.Ratio.GBPerS >= t.Want
		case "touch_p50_ns":
			tr.Ratio, tr.Met = c.Ratio.TouchP50, c.Ratio.TouchP50 <= t.Want
		}
		out = append(out, tr)
	}
	return out, nil
}

// WriteTargetsText writes one row per target.
func WriteTargetsText(w io.Writer, rs []TargetResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "target\tgo\tC\tratio\twant\tmet\tworkload\n")
	for _, r := range rs {
		var g, c string
		switch r.Target.Metric {
		case "faults_per_s":
			g, c = fmt.Sprintf("%.0f faults/s", r.Comparison.Go.FaultsPerS()), fmt.Sprintf("%.0f", r.Comparison.Ref.FaultsPerS())
		case "gb_per_s":
			g, c = fmt.Sprintf("%.3f GB/s", r.Comparison.Go.GBPerS()), fmt.Sprintf("%.3f", r.Comparison.Ref.GBPerS())
		case "touch_p50_ns":
			g, c = fmt.Sprintf("p50 %d ns", r.Comparison.Go.Median.P50.Nanoseconds()), fmt.Sprintf("%d", r.Comparison.Ref.Median.P50.Nanoseconds())
		}
		op := ">="
		if r.Target.Metric == "touch_p50_ns" {
			op = "<="
		}
		met := "no"
		if r.Met {
			met = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s %.2f\t%s\t%s\n", r.Target.Name, g, c, jsonFloat(r.Ratio), op, r.Target.Want, met, r.Target.About)
	}
	return tw.Flush()
}

// WriteTargetsJSON writes one line: an array of {"target","ratio","want",
// "met","comparison"}.
func WriteTargetsJSON(w io.Writer, rs []TargetResult) error {
	b := []byte{'['}
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		c, _ := r.Comparison.MarshalJSON()
		ratio := jsonFloat(r.Ratio)
		if math.IsNaN(r.Ratio) {
			ratio = "null"
		}
		b = fmt.Appendf(b, `{"target":%q,"metric":%q,"ratio":%s,"want":%.2f,"met":%t,"comparison":%s}`,
			r.Target.Name, r.Target.Metric, ratio, r.Target.Want, r.Met, c)
	}
	_, err := w.Write(append(b, ']', '\n'))
	return err
}
