package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gouffd/uffd/remote"
)

var imagePushCmd = &command{
	name:    "image push",
	args:    "FILE s3://BUCKET/KEY",
	summary: "upload a memory file (parallel multipart) and its index (zero chunks, chunk checksums) beside it",
	about: `
Upload a memory file to S3 in parallel parts, and beside it (KEY.uffd-index)
its index: which chunks are all zeroes (readers never fetch them) and a
checksum per chunk (readers check what they fetch).`,
	arguments: [][2]string{{"FILE", "the memory file"}, {"s3://BUCKET/KEY", "where to put it"}},
	setup: func(fs *flag.FlagSet) runFunc {
		chunk := sizeFlag(fs, "chunk-size", 4<<20, 4096, 1<<30, 4096, "the index's chunk size: the unit of fetching for readers")
		part := sizeFlag(fs, "part-size", 16<<20, 5<<20, 5<<30, 1, "multipart upload part size")
		conc := intFlag(fs, "concurrency", 8, 1, 1024, "parts uploaded at once")
		progress := choiceFlag(fs, "progress", "auto", []string{"auto", "always", "never"}, "a progress bar on stderr: auto (on a terminal), always or never")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 2 {
				return usagef("want FILE s3://BUCKET/KEY, got %d arguments", len(args))
			}
			bar := newProgress(*progress, stderr, "push")
			cfg := remote.PushConfig{ChunkSize: int64(*chunk), PartSize: int64(*part), Concurrency: *conc, Progress: bar.update}
			file, url := args[0], args[1]
			began := time.Now()
			idx, err := remote.Push(ctx, file, url, cfg)
			bar.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "pushed %s to %s in %v: %s, %s\n", file, url, time.Since(began).Round(time.Millisecond), humanBytes(idx.Size), describeIndex(idx))
			return nil
		}
	},
}

var imagePullCmd = &command{
	name:      "image pull",
	args:      "URL FILE",
	summary:   "download an image in parallel (zero chunks skipped, chunks checked against the index)",
	arguments: [][2]string{{"URL", "s3://BUCKET/KEY, http(s)://..., or a file"}, {"FILE", "where to write it"}},
	setup: func(fs *flag.FlagSet) runFunc {
		conc := intFlag(fs, "concurrency", remote.DefaultConcurrency, 1, 1024, "range requests in flight")
		noIndex := fs.Bool("no-index", false, "ignore the image's index (fetch zero chunks, check no checksums)")
		progress := choiceFlag(fs, "progress", "auto", []string{"auto", "always", "never"}, "a progress bar on stderr: auto (on a terminal), always or never")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 2 {
				return usagef("want URL FILE, got %d arguments", len(args))
			}
			bar := newProgress(*progress, stderr, "pull")
			url, file := args[0], args[1]
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
	},
}

var imageStatCmd = &command{
	name:      "image stat",
	args:      "URL",
	summary:   "an image's size, version and index",
	arguments: [][2]string{{"URL", "s3://BUCKET/KEY, http(s)://..., or a file"}},
	setup: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 1 {
				return usagef("want URL, got %d arguments", len(args))
			}
			info, err := remote.Stat(ctx, args[0], remote.SourceConfig{})
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
	},
}

var imageIndexCmd = &command{
	name:      "image index",
	args:      "FILE",
	summary:   "write FILE's index to FILE.uffd-index, for an image served over HTTP",
	arguments: [][2]string{{"FILE", "the memory file"}},
	setup: func(fs *flag.FlagSet) runFunc {
		chunk := sizeFlag(fs, "chunk-size", 4<<20, 4096, 1<<30, 4096, "chunk size: the unit of fetching for readers")
		return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			if len(args) != 1 {
				return usagef("want FILE, got %d arguments", len(args))
			}
			idx, err := remote.WriteIndexFile(ctx, args[0], int64(*chunk))
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s: %s\n", remote.IndexURL(args[0]), describeIndex(idx))
			return nil
		}
	},
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

// newProgress makes the bar of mode (auto, always or never, checked).
func newProgress(mode string, w io.Writer, verb string) *progress {
	p := &progress{w: w, verb: verb, t0: time.Now()}
	switch mode {
	case "always":
		p.on = true
	case "auto":
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
				p.on = true
			}
		}
	}
	return p
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
