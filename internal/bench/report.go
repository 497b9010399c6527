//go:build linux

package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
)

// Result is a benchmark's outcome as ref_handler reports it: the median
// run by elapsed time, with that run's touch percentiles.
type Result struct {
	Impl string // "go", or "ref" for the C reference's runs
	Op   Op
	// Chunk is the bytes resolved per fault that Faults counts with: the
	// fixed chunk, or a page with adaptive prefetch.
	Chunk      int
	Faulters   int
	Handlers   int // the pager's readers, or the reference's handler threads
	MiB        int
	Median     Sample   // the median run
	Samples    []Sample // every run, in order
	FaultersIn Placement
	ReadTouch  bool
	Random     bool

	// Go runs only.
	Prefetch   string // "fixed" or "adaptive"
	Engine     string // Engine.String()
	GOMAXPROCS int

	// C runs only.
	RefMode string // "pinned" or "naive"
	Measure string // "uffd" (faults), or a limit: "touch", "prefill"
	Program string // the reference's path
}

// Bytes is the region's size.
func (r *Result) Bytes() int64 { return int64(r.MiB) << 20 }

// Faults is the number of faults as ref_handler counts them, region/chunk.
// The pager's own count is in Median.Stats.
func (r *Result) Faults() float64 { return float64(r.Bytes()) / float64(r.Chunk) }

// FaultsPerS is Faults per second of the median run.
func (r *Result) FaultsPerS() float64 { return r.Faults() / r.Median.Elapsed.Seconds() }

// NSPerPage is the median run's time per base page.
func (r *Result) NSPerPage() float64 {
	return float64(r.Median.Elapsed) / float64(r.Bytes()/int64(PageSize))
}

// GBPerS is the median run's throughput in GB (10^9 bytes) per second.
func (r *Result) GBPerS() float64 { return float64(r.Bytes()) / float64(r.Median.Elapsed) }

// MarshalJSON writes ref_handler's fields in its order and number formats,
// then the Go run's own fields. A ref_handler result is the line it
// printed for the median run, verbatim.
func (r *Result) MarshalJSON() ([]byte, error) {
	if r.Median.raw != nil {
		return r.Median.raw, nil
	}
	b := fmt.Appendf(nil, `{"op":%q,"chunk":%d,"faulters":%d,"handlers":%d,"mib":%d,"median_ns":%d,`+
		`"faults":%.0f,"faults_per_s":%.0f,"ns_per_page":%.1f,"gb_per_s":%.3f,`+
		`"touch_p50_ns":%d,"touch_p99_ns":%d`,
		r.Op, r.Chunk, r.Faulters, r.Handlers, r.MiB, r.Median.Elapsed.Nanoseconds(),
		r.Faults(), r.FaultsPerS(), r.NSPerPage(), r.GBPerS(),
		r.Median.P50.Nanoseconds(), r.Median.P99.Nanoseconds())
	st := r.Median.Stats
	b = fmt.Appendf(b, `,"impl":%q,"prefetch":%q,"engine":%q,"faulters_in":%q,"read":%t,"random":%t,"runs":%d,"gomaxprocs":%d,`+
		`"pager_faults":%d,"pager_pages":%d,"pager_prefetched":%d,"pager_exists":%d,"cpu_ns":%d,"runs_ns":[`,
		r.Impl, r.Prefetch, r.Engine, r.FaultersIn, r.ReadTouch, r.Random, len(r.Samples), r.GOMAXPROCS,
		st.Faults, st.Pages, st.Prefetched, st.Exists, r.Median.CPU.Nanoseconds())
	for i, s := range r.Samples {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, s.Elapsed.Nanoseconds(), 10)
	}
	return append(b, "]}"...), nil
}

// WriteJSON writes r as one line.
func (r *Result) WriteJSON(w io.Writer) error {
	b, _ := r.MarshalJSON()
	_, err := w.Write(append(bytes.TrimSpace(b), '\n'))
	return err
}

// describe is one line naming the configuration.
func (r *Result) describe() string {
	order, touch, where := "in order", "write", "this process"
	if r.Random {
		order = "in random order"
	}
	if r.ReadTouch {
		touch = "read"
	}
	if r.FaultersIn == Child {
		where = "another process"
	}
	perFault := fmt.Sprintf("%d bytes per fault", r.Chunk)
	if r.Prefetch == "adaptive" {
		perFault = "adaptive prefetch"
	}
	if r.Impl != "go" {
		handlers := fmt.Sprintf("%d handler(s) pinned one per CPU", r.Handlers)
		if r.RefMode == RefNaive.String() {
			handlers = fmt.Sprintf("%d unpinned handler(s)", r.Handlers)
		}
		return fmt.Sprintf("C reference %s, %s, %s in read(2), faulters in %s, median of %d runs",
			r.Program, perFault, handlers, where, len(r.Samples))
	}
	return fmt.Sprintf("%s, %d MiB, %s, %d faulter(s) in %s %s-touching %s, pager engine: %s, GOMAXPROCS %d, median of %d runs",
		r.Op, r.MiB, perFault, r.Faulters, where, touch, order, r.Engine, r.GOMAXPROCS, len(r.Samples))
}

// WriteText writes r as a table.
func (r *Result) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\n", r.describe())
	for _, row := range rows(r) {
		fmt.Fprintf(tw, "%s\t%s\n", row.name, row.value)
	}
	return tw.Flush()
}

type row struct{ name, value string }

func rows(r *Result) []row {
	rs := []row{
		{"median_ns", strconv.FormatInt(r.Median.Elapsed.Nanoseconds(), 10)},
		{"faults", strconv.FormatFloat(r.Faults(), 'f', 0, 64)},
		{"faults_per_s", strconv.FormatFloat(r.FaultsPerS(), 'f', 0, 64)},
		{"ns_per_page", strconv.FormatFloat(r.NSPerPage(), 'f', 1, 64)},
		{"gb_per_s", strconv.FormatFloat(r.GBPerS(), 'f', 3, 64)},
		{"touch_p50_ns", strconv.FormatInt(r.Median.P50.Nanoseconds(), 10)},
		{"touch_p99_ns", strconv.FormatInt(r.Median.P99.Nanoseconds(), 10)},
	}
	if r.Median.CPU > 0 {
		rs = append(rs, row{"cpu_ns", strconv.FormatInt(r.Median.CPU.Nanoseconds(), 10)})
	}
	if r.Impl == "go" {
		st := r.Median.Stats
		rs = append(rs,
			row{"pager_faults", strconv.FormatUint(st.Faults, 10)},
			row{"pager_pages", strconv.FormatUint(st.Pages, 10)},
			row{"pager_prefetched", strconv.FormatUint(st.Prefetched, 10)},
			row{"pager_exists", strconv.FormatUint(st.Exists, 10)})
	}
	return rs
}

// Ratio holds go/ref ratios, each the median over the pairs of runs (the
// element at pairs/2 in ascending order, as ref_handler picks its median).
// FaultsPerS is NaN (null in JSON) when the two count faults of different
// sizes.
// A faults_per_s or gb_per_s ratio above 1 means the Go run was faster; a
// touch latency ratio below 1 means it was faster.
type Ratio struct {
	PairRatio
	Pairs []PairRatio // per pair of runs, in order
}

// PairRatio holds the go/ref ratios of one pair of runs.
type PairRatio struct {
	FaultsPerS, GBPerS, TouchP50, TouchP99 float64
}

func (p PairRatio) appendJSON(b []byte) []byte {
	return fmt.Appendf(b, `{"faults_per_s":%s,"gb_per_s":%s,"touch_p50_ns":%s,"touch_p99_ns":%s`,
		jsonFloat(p.FaultsPerS), jsonFloat(p.GBPerS), jsonFloat(p.TouchP50), jsonFloat(p.TouchP99))
}

// MarshalJSON writes the median ratios and the pairs'.
func (r Ratio) MarshalJSON() ([]byte, error) {
	b := r.PairRatio.appendJSON(nil)
	b = append(b, `,"pairs":[`...)
	for i, p := range r.Pairs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(p.appendJSON(b), '}')
	}
	return append(b, "]}"...), nil
}

// jsonFloat formats a ratio with 3 decimals; JSON has no infinities.
func jsonFloat(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "null"
	}
	return strconv.FormatFloat(x, 'f', 3, 64)
}

func pairRatio(g, ref *Result, gs, rs Sample) PairRatio {
	gr := Result{MiB: g.MiB, Chunk: g.Chunk, Median: gs}
	rr := Result{MiB: ref.MiB, Chunk: ref.Chunk, Median: rs}
	fps := gr.FaultsPerS() / rr.FaultsPerS()
	if g.Chunk != ref.Chunk {
		// Faults of different sizes (--ref-chunk, or adaptive prefetch
		// counted per page): only GB/s compares.
		fps = math.NaN()
	}
	return PairRatio{
		FaultsPerS: fps,
		GBPerS:     gr.GBPerS() / rr.GBPerS(),
		TouchP50:   float64(gs.P50) / float64(rs.P50),
		TouchP99:   float64(gs.P99) / float64(rs.P99),
	}
}

func ratio(g, ref *Result) Ratio {
	r := Ratio{}
	for i := range min(len(g.Samples), len(ref.Samples)) {
		r.Pairs = append(r.Pairs, pairRatio(g, ref, g.Samples[i], ref.Samples[i]))
	}
	median := func(f func(PairRatio) float64) float64 {
		xs := make([]float64, len(r.Pairs))
		for i, p := range r.Pairs {
			xs[i] = f(p)
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	r.FaultsPerS = median(func(p PairRatio) float64 { return p.FaultsPerS })
	r.GBPerS = median(func(p PairRatio) float64 { return p.GBPerS })
	r.TouchP50 = median(func(p PairRatio) float64 { return p.TouchP50 })
	r.TouchP99 = median(func(p PairRatio) float64 { return p.TouchP99 })
	return r
}

// Comparison is the outcome of Compare.
type Comparison struct {
	Go, Ref *Result
	Ratio   Ratio
	// The limits, when measured (Ref.Limits): the kernel's own first touch
	// with no userfaultfd, and the region installed ahead of the faulters.
	Touch, Prefill *Result
}

// MarshalJSON writes {"go":...,"ref":...,"ratio":...}, and
// "limits":{"touch":...,"prefill":...} when they were measured.
func (c *Comparison) MarshalJSON() ([]byte, error) {
	g, _ := c.Go.MarshalJSON()
	r, _ := c.Ref.MarshalJSON()
	ra, _ := c.Ratio.MarshalJSON()
	b := append([]byte(`{"go":`), g...)
	b = append(append(b, `,"ref":`...), bytes.TrimSpace(r)...)
	b = append(append(b, `,"ratio":`...), ra...)
	if c.Touch != nil && c.Prefill != nil {
		t, _ := c.Touch.MarshalJSON()
		p, _ := c.Prefill.MarshalJSON()
		b = append(append(b, `,"limits":{"touch":`...), bytes.TrimSpace(t)...)
		b = append(append(b, `,"prefill":`...), bytes.TrimSpace(p)...)
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// WriteJSON writes c as one line.
func (c *Comparison) WriteJSON(w io.Writer) error {
	b, _ := c.MarshalJSON()
	_, err := w.Write(append(b, '\n'))
	return err
}

// WriteText writes both results and the ratios as a table.
func (c *Comparison) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "go:  %s\nref: %s\n", c.Go.describe(), c.Ref.describe())
	fmt.Fprintf(tw, "%-16s\tgo\tref\tgo/ref\t\n", "")
	ratios := map[string]float64{
		"faults_per_s": c.Ratio.FaultsPerS,
		"gb_per_s":     c.Ratio.GBPerS,
		"touch_p50_ns": c.Ratio.TouchP50,
		"touch_p99_ns": c.Ratio.TouchP99,
	}
	refRows := rows(c.Ref)
	for i, g := range rows(c.Go) {
		refValue, ratioValue := "", ""
		if i < len(refRows) {
			refValue = refRows[i].value
		}
		if x, ok := ratios[g.name]; ok {
			ratioValue = jsonFloat(x)
			if ratioValue == "null" {
				ratioValue = "-"
			}
		}
		// Padded: AlignRight would right-align the names too.
		fmt.Fprintf(tw, "%-16s\t%s\t%s\t%s\t\n", g.name, g.value, refValue, ratioValue)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "go/ref ratios are medians over %d pairs of alternating runs (faults_per_s and gb_per_s: higher is faster; touch: lower is faster)\n", len(c.Ratio.Pairs)); err != nil {
		return err
	}
	if c.Touch != nil && c.Prefill != nil {
		_, err := fmt.Fprintf(w, "limits, C, medians of %d runs: the kernel's own first touch (no userfaultfd) %.1f ns/page, touch p50 %d ns; "+
			"the region installed ahead by %d pinned threads, %d bytes each, no fault waiting: %.3f GB/s\n",
			len(c.Touch.Samples), c.Touch.NSPerPage(), c.Touch.Median.P50.Nanoseconds(), c.Prefill.Handlers, c.Prefill.Chunk, c.Prefill.GBPerS())
		return err
	}
	return nil
}

// ProgressLine is a one-line summary of a finished run, for stderr.
func ProgressLine(p Progress) string {
	s := p.Sample
	line := fmt.Sprintf("%-7s run %d/%d: %v, touch p50 %v p99 %v",
		p.Impl, p.Run, p.Runs, s.Elapsed.Round(time.Microsecond), s.P50, s.P99)
	if s.CPU > 0 {
		line += fmt.Sprintf(", cpu %v", s.CPU.Round(time.Millisecond))
	}
	return line
}
