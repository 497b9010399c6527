package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gouffd/uffd/remote"
)

const imageUsage = `uffd image <command> [flags] [arguments]

Memory images in object storage and on HTTP servers:

  push FILE s3://BUCKET/KEY   upload a memory file (parallel multipart) and
                              its index (zero pages, chunk checksums) beside it
  pull URL FILE               download an image (parallel; zero chunks skipped)
  stat URL                    an image's size, version and index
  compact -o OUT LAYER...     fold a chain of snapshot layers (package snapshot:
                              a full layer and its diffs, oldest first) into one
  index FILE                  write FILE's index to FILE.uffd-index (for images
                              served over HTTP)

URLs: s3://BUCKET/KEY (credentials, region and endpoint from the standard AWS
configuration: AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3,
...), http(s)://... (a server honouring Range requests), or a file.
`

func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{"image: no command given (push, pull, stat, index, compact)"}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "push":
		return runImagePush(ctx, rest, stdout, stderr)
	case "pull":
		return runImagePull(ctx, rest, stdout, stderr)
	case "stat":
		return runImageStat(ctx, rest, stdout, stderr)
	case "index":
		return runImageIndex(ctx, rest, stdout, stderr)
	case "compact":
		return runImageCompact(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, imageUsage)
		return nil
	default:
		return &usageError{fmt.Sprintf("image: unknown command %q (push, pull, stat, index, compact)", cmd)}
	}
}

// parseByteSize parses a size such as 4096, 64KiB, 2MiB or 1GiB.
func parseByteSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (such as 4096, 64KiB, 2MiB, 1GiB)", s)
	}
	return n * mult, nil
}

func runImagePush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image push")
	chunk := fs.String("chunk-size", "4MiB", "the index's chunk size: the unit of fetching for readers")
	part := fs.String("part-size", "16MiB", "multipart upload part size")
	conc := fs.Int("concurrency", 8, "parts uploaded at once")
	progress := fs.String("progress", "auto", "progress bar on stderr: auto (on a terminal), always or never")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return &usageError{"image push: want FILE s3://BUCKET/KEY"}
	}
	var cfg remote.PushConfig
	var err error
	if cfg.ChunkSize, err = parseByteSize(*chunk); err != nil {
		return &usageError{"image push: --chunk-size: " + err.Error()}
	}
	if cfg.PartSize, err = parseByteSize(*part); err != nil {
		return &usageError{"image push: --part-size: " + err.Error()}
	}
	if *conc <= 0 {
		return &usageError{"image push: --concurrency: want at least 1"}
	}
	cfg.Concurrency = *conc
	bar, err := newProgress(*progress, stderr, "push")
	if err != nil {
		return &usageError{"image push: " + err.Error()}
	}
	cfg.Progress = bar.update
	file, url := fs.Arg(0), fs.Arg(1)
	began := time.Now()
	idx, err := remote.Push(ctx, file, url, cfg)
	bar.done()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pushed %s to %s in %v: %s, %s\n", file, url, time.Since(began).Round(time.Millisecond), humanBytes(idx.Size), describeIndex(idx))
	return nil
}

func runImagePull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image pull")
	conc := fs.Int("concurrency", remote.DefaultConcurrency, "range requests in flight")
	noIndex := fs.Bool("no-index", false, "ignore the image's index (fetch zero chunks, check no checksums)")
	progress := fs.String("progress", "auto", "progress bar on stderr: auto (on a terminal), always or never")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return &usageError{"image pull: want URL FILE"}
	}
	if *conc <= 0 {
		return &usageError{"image pull: --concurrency: want at least 1"}
	}
	bar, err := newProgress(*progress, stderr, "pull")
	if err != nil {
		return &usageError{"image pull: " + err.Error()}
	}
	url, file := fs.Arg(0), fs.Arg(1)
	began := time.Now()
	st, err := remote.Pull(ctx, url, file, remote.PullConfig{Concurrency: *conc, NoIndex: *noIndex, Progress: bar.update})
	bar.done()
	if err != nil {
		return err
	}
	d := time.Since(began)
	fmt.Fprintf(stdout, "pulled %s to %s in %v: %s fetched in %d requests (%s/s)\n", url, file, d.Round(time.Millisecond),
		humanBytes(int64(st.Bytes)), st.Requests, humanBytes(int64(float64(st.Bytes)/d.Seconds())))
	return nil
}

func runImageStat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image stat")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{"image stat: want URL"}
	}
	info, err := remote.Stat(ctx, fs.Arg(0), remote.SourceConfig{})
	if err != nil {
		return err
	}
	id := info.Identity
	fmt.Fprintf(stdout, "URL            %s\n", info.URL)
	fmt.Fprintf(stdout, "Size           %d (%s)\n", id.Size, humanBytes(id.Size))
	if id.ETag != "" {
		fmt.Fprintf(stdout, "ETag           %s\n", id.ETag)
	}
	if id.VersionID != "" {
		fmt.Fprintf(stdout, "Version        %s\n", id.VersionID)
	}
	if !id.LastModified.IsZero() {
		fmt.Fprintf(stdout, "Last modified  %s\n", id.LastModified.UTC().Format(time.RFC3339))
	}
	switch {
	case info.Index != nil:
		fmt.Fprintf(stdout, "Index          %s\n", describeIndex(info.Index))
	case info.IndexErr != nil:
		fmt.Fprintf(stdout, "Index          unusable: %v\n", info.IndexErr)
	default:
		fmt.Fprintf(stdout, "Index          none (every chunk is fetched)\n")
	}
	return nil
}

func runImageIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("image index")
	chunk := fs.String("chunk-size", "4MiB", "chunk size: the unit of fetching for readers")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{"image index: want FILE"}
	}
	size, err := parseByteSize(*chunk)
	if err != nil {
		return &usageError{"image index: --chunk-size: " + err.Error()}
	}
	idx, err := remote.WriteIndexFile(ctx, fs.Arg(0), size)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s\n", remote.IndexURL(fs.Arg(0)), describeIndex(idx))
	return nil
}

func describeIndex(x *remote.Index) string {
	zc := x.ZeroChunks()
	return fmt.Sprintf("chunks of %s, %d of %d chunks all zero (%s never fetched), %d of %d pages zero",
		humanBytes(1<<x.ChunkShift), zc, len(x.Sums), humanBytes(zc<<x.ChunkShift), x.ZeroPages(), x.Pages())
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// progress draws a bar on a terminal, at most ten times a second.
type progress struct {
	w    io.Writer
	verb string
	on   bool
	mu   sync.Mutex
	last time.Time
	max  int64
	t0   time.Time
	drew bool
}

func newProgress(mode string, w io.Writer, verb string) (*progress, error) {
	p := &progress{w: w, verb: verb, t0: time.Now()}
	switch mode {
	case "always":
		p.on = true
	case "never":
	case "auto":
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
				p.on = true
			}
		}
	default:
		return nil, fmt.Errorf("--progress %q: want auto, always or never", mode)
	}
	return p, nil
}

func (p *progress) update(done, total int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if done < p.max || (time.Since(p.last) < 100*time.Millisecond && done < total) {
		return // out of order (calls come from several goroutines), or too soon
	}
	p.max = done
	p.last = time.Now()
	const width = 40
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * width)
	rate := float64(done) / max(time.Since(p.t0).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r%s [%s%s] %5.1f%% %s of %s, %s/s ", p.verb, strings.Repeat("=", n), strings.Repeat(" ", width-n),
		100*frac, humanBytes(done), humanBytes(total), humanBytes(int64(rate)))
	p.drew = true
}

func (p *progress) done() {
	if p.on && p.drew {
		fmt.Fprintln(p.w)
	}
}
