//go:build linux

// Package hazard shows the Go runtime hazard that decides the pager's
// design, behind `uffd hazard`.
//
// A goroutine that faults on registered memory waits in the kernel until
// the fault is served. Inside runtime assembly (the memmove behind copy
// and append, the memequal behind bytes.Equal) it cannot be preempted, so
// a garbage collection's stop-the-world waits for it; when the handler
// that would serve the fault is itself a goroutine, the stop-the-world has
// already stopped it, and the whole process hangs. The pager's engine
// serves faults from threads that are not Go's, which a stop-the-world
// does not stop.
//
// Run shows it with the same workload served both ways, each in a child
// process (this program started again): goroutines read a served region
// page by page through copy, bytes.Equal and append while another calls
// runtime.GC in a loop. A child that makes no progress for a while is
// reported hung, and killed.
package hazard

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// Handlers are the ways of serving the faults that Run compares.
const (
	// Goroutine serves with the library used simply: a goroutine reads
	// the messages (ReadMessages) and copies each page in.
	Goroutine = "goroutine"
	// Engine serves with the pager's engine.
	Engine = "engine"
)

const childEnv = "UFFD_HAZARD_CHILD"

// Config says what Run does.
type Config struct {
	// MiB is the region's size (default 64).
	MiB int
	// Stall is how long a child may go without progress before it is
	// reported hung (default 5s).
	Stall time.Duration
	// Rounds is how many times each handler runs the workload at most
	// (default 3): the goroutine handler can be lucky.
	Rounds int
	// Exe is the program to start as the child: one that calls
	// IsChild/ChildMain first thing (default os.Executable).
	Exe string
	// Args are the child's arguments (for a test binary, -test.run=^$).
	Args []string
}

// Outcome is what one child did.
type Outcome struct {
	Handler string
	Round   int
	Hung    bool
	Pages   int // pages read
	GCs     int // collections completed
	Took    time.Duration
	Err     error // the child failed (neither finished nor hung)
}

func (o Outcome) String() string {
	switch {
	case o.Err != nil:
		return fmt.Sprintf("%s handler, round %d: failed: %v", o.Handler, o.Round, o.Err)
	case o.Hung:
		return fmt.Sprintf("%s handler, round %d: HUNG after %d pages and %s, %v in: a collection stopped the world while a reader was inside runtime assembly, waiting for a fault that the stopped handler would serve",
			o.Handler, o.Round, o.Pages, plural(o.GCs, "collection"), o.Took.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s handler, round %d: finished: %d pages read through copy, bytes.Equal and append in %v, %s meanwhile",
		o.Handler, o.Round, o.Pages, o.Took.Round(time.Millisecond), plural(o.GCs, "collection"))
}

// Run runs the workload with each handler, reporting each child's outcome
// to w as it ends: the goroutine handler until it hangs or Rounds ran,
// the engine Rounds times.
func Run(ctx context.Context, w io.Writer, cfg Config) ([]Outcome, error) {
	if cfg.MiB == 0 {
		cfg.MiB = 64
	}
	if cfg.Stall == 0 {
		cfg.Stall = 5 * time.Second
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 3
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Exe = exe
	}
	var out []Outcome
	for _, h := range []string{Goroutine, Engine} {
		for r := 1; r <= cfg.Rounds; r++ {
			o := runChild(ctx, cfg, h, r)
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			out = append(out, o)
			fmt.Fprintln(w, o)
			if o.Hung || o.Err != nil {
				break
			}
		}
	}
	return out, nil
}

func runChild(ctx context.Context, cfg Config, handler string, round int) Outcome {
	o := Outcome{Handler: handler, Round: round}
	cmd := exec.CommandContext(ctx, cfg.Exe, cfg.Args...)
	cmd.Env = append(os.Environ(), childEnv+"="+handler+":"+strconv.Itoa(cfg.MiB))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pr, err := cmd.StdoutPipe()
	if err != nil {
		o.Err = err
		return o
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		o.Err = err
		return o
	}
	progress := make(chan [2]int, 16)
	finished := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		done := false
		for sc.Scan() {
			var p, g int
			if n, _ := fmt.Sscanf(sc.Text(), "progress pages=%d gcs=%d", &p, &g); n == 2 {
				progress <- [2]int{p, g}
			}
			done = done || sc.Text() == "done"
		}
		finished <- done
	}()
	stall := time.NewTimer(cfg.Stall)
	defer stall.Stop()
	for {
		select {
		case p := <-progress:
			o.Pages, o.GCs = p[0], p[1]
			stall.Reset(cfg.Stall)
			continue
		case <-stall.C:
			// Progress stopped with the world: the hang.
			o.Hung = true
			o.Took = time.Since(t0) - cfg.Stall
			cmd.Process.Kill()
			cmd.Wait()
			return o
		case done := <-finished:
			err := cmd.Wait()
			o.Took = time.Since(t0)
			if !done || err != nil {
				o.Err = fmt.Errorf("child: %v: %s", err, strings.TrimSpace(stderr.String()))
			}
			for len(progress) > 0 {
				p := <-progress
				o.Pages, o.GCs = p[0], p[1]
			}
			return o
		}
	}
}

// IsChild reports whether this process was started by Run.
func IsChild() bool { return os.Getenv(childEnv) != "" }

// ChildMain runs the workload of a child and returns its exit status.
func ChildMain() int {
	handler, mib, _ := strings.Cut(os.Getenv(childEnv), ":")
	n, _ := strconv.Atoi(mib)
	if err := workload(handler, n<<20); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("done")
	return 0
}

// workload maps and registers size bytes, serves them with handler, and
// reads every page through runtime assembly while collections run.
func workload(handler string, size int) error {
	ps := mem.PageSize()
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(i/ps*7 + 1)
	}
	m, err := mem.Map(mem.Anonymous, size)
	if err != nil {
		return err
	}
	defer m.Close()
	u, err := uffd.Open(uffd.Config{})
	if err != nil {
		return err
	}
	defer u.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch handler {
	case Goroutine:
		go serveGoroutine(ctx, u, m.Addr(), img)
	case Engine:
		p, err := pager.New(u, pager.Config{})
		if err != nil {
			return err
		}
		if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(img)}); err != nil {
			return err
		}
		go p.Serve(ctx)
		<-p.Serving()
	default:
		return fmt.Errorf("hazard: unknown handler %q", handler)
	}

	var pages, gcs atomic.Int64
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // collections, in a loop
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			runtime.GC()
			gcs.Add(1)
		}
	}()
	go func() { // progress, which stops when the world does
		defer bg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Printf("progress pages=%d gcs=%d\n", pages.Load(), gcs.Load())
			}
		}
	}()
	var bad atomic.Int64
	ReadPages(m.Data, img, ps, 4, func(i int, ok bool) {
		if !ok {
			bad.Add(1)
		}
		pages.Add(1)
	})
	close(stop)
	bg.Wait()
	fmt.Printf("progress pages=%d gcs=%d\n", pages.Load(), gcs.Load())
	if n := bad.Load(); n > 0 {
		return fmt.Errorf("hazard: %d pages differ from the image", n)
	}
	return nil
}

// ReadPages reads every page of data from readers goroutines through the
// runtime's routines that cannot be preempted: copy (runtime.memmove),
// bytes.Equal (runtime.memequal) and append (memmove after growslice), a
// third of the pages each, so that the first touch of a registered page
// faults inside one of them. It compares each page with img and calls
// check with the page's index and the outcome, from any of the readers.
func ReadPages(data, img []byte, ps, readers int, check func(i int, ok bool)) {
	var wg sync.WaitGroup
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, ps)
			var dst []byte
			for i := r; i < len(data)/ps; i += readers {
				page, want := data[i*ps:(i+1)*ps], img[i*ps:(i+1)*ps]
				ok := true
				switch i % 3 {
				case 0:
					copy(buf, page)
					ok = bytes.Equal(buf, want)
				case 1:
					ok = bytes.Equal(page, want)
				case 2:
					dst = append(dst[:0], page...)
					ok = bytes.Equal(dst, want)
				}
				check(i, ok)
			}
		}()
	}
	wg.Wait()
}

// serveGoroutine is the library used simply: read the fault messages,
// copy each page in.
func serveGoroutine(ctx context.Context, u *uffd.UFFD, base uintptr, img []byte) {
	ps := uintptr(mem.PageSize())
	msgs := make([]uffd.Message, 16)
	for {
		n, err := u.ReadMessages(ctx, msgs)
		if err != nil {
			return
		}
		for _, msg := range msgs[:n] {
			if msg.Event != uffd.EventPagefault {
				continue
			}
			page := msg.Address &^ (ps - 1)
			off := page - base
			_, err := u.Copy(page, img[off:off+ps], 0)
			switch {
			case errors.Is(err, uffd.ErrPageExists):
				u.Wake(page, ps)
			case err != nil:
				return
			}
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
