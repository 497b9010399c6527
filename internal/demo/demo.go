// Package demo is the example program of userfaultfd(2) in Go: it maps
// private anonymous pages, registers them in missing mode, and touches them
// from one goroutine while another serves each page fault by copying in a
// page of letters, printing what both sides see in the format of the
// manual page's transcript, line for line.
//
// It is what `uffd demo N` runs. The faulting accesses are plain single-byte
// Go loads: a fault taken inside runtime assembly (copy, bytes functions)
// could stall a garbage collection forever (see package uffd, "Faults of the
// Go process itself").
package demo

import (
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// DefaultDelay is the C program's pause between two reads (usleep(100000)).
const DefaultDelay = 100 * time.Millisecond

// Stride is the distance between two reads, and Offset the first one: the C
// program reads at 0xf, 0x40f, 0x80f, ... so that the faulting address is
// never page-aligned.
const (
	Stride = 1024
	Offset = 0xf
)

// Config says what Run does. Pages must be positive.
type Config struct {
	// Pages is the number of pages to map and fault in.
	Pages int
	// Delay is the pause after each read; 0 means none. The C program
	// pauses DefaultDelay.
	Delay time.Duration
}

// Run runs the demo, writing its transcript to w. It returns nil when every
// page was served and read, ctx.Err() when ctx ended first, and otherwise
// the first error of the setup, the fault handler or a write to w.
func Run(ctx context.Context, w io.Writer, cfg Config) error {
	if cfg.Pages <= 0 {
		return fmt.Errorf("demo: %d pages: want a positive number", cfg.Pages)
	}
	ps := mem.PageSize()
	if cfg.Pages > int(^uint(0)>>1)/ps {
		return fmt.Errorf("demo: %d pages do not fit in the address space", cfg.Pages)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// The transcript shows the exact faulting address (older kernels did
	// not round it down); ask for that when the kernel offers it.
	var features uffd.Feature
	if sup, err := uffd.Probe(); err == nil {
		features = sup.Features & uffd.FeatureExactAddress
	}
	u, err := uffd.Open(uffd.Config{Features: features})
	if err != nil {
		return err
	}
	defer u.Close()

	m, err := mem.Map(mem.Anonymous, cfg.Pages*ps)
	if err != nil {
		return err
	}
	defer m.Close() // runs after the handler stopped (below)

	out := &printer{w: w}
	out.printf("Address returned by mmap() = %#x\n", m.Addr())
	if out.err != nil {
		return out.err
	}
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		return err
	}
	rc, err := u.SyscallConn()
	if err != nil {
		return err
	}

	h := &handler{u: u, rc: rc, out: out, page: make([]byte, ps), done: make(chan struct{})}
	go h.run()
	// Closing the userfaultfd stops the handler and wakes a read blocked
	// on a fault (it then sees a zero page, which is never printed: the
	// loop below checks ctx first).
	stopOnCancel := context.AfterFunc(ctx, func() { u.Close() })
	defer func() {
		stopOnCancel()
		u.Close()
		<-h.done
	}()

	for l := Offset; l < len(m.Data); l += Stride {
		c := m.Data[l] // faults on the first read of each page
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-h.done:
			return fmt.Errorf("demo: fault handler: %w", h.err)
		default:
		}
		out.mu.Lock()
		out.printf("Read address %#x in main(): %c\n", m.Addr()+uintptr(l), c)
		err := out.err
		out.mu.Unlock()
		if err != nil {
			return err
		}
		if err := sleep(ctx, cfg.Delay); err != nil {
			return err
		}
	}
	return nil
}

// sleep pauses for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// printer serializes the two goroutines' output and keeps the first write
// error. printf must be called with mu held, except before the handler
// starts.
type printer struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// handler is fault_handler_thread.
type handler struct {
	u    *uffd.UFFD
	rc   syscall.RawConn
	out  *printer
	page []byte

	done chan struct{} // closed when run returns; err is set then
	err  error
}

func (h *handler) run() {
	h.err = h.serve()
	close(h.done)
	// Wake the reader if it is blocked on a fault nobody will serve now.
	h.u.Close()
}

func (h *handler) serve() error {
	msgs := make([]uffd.Message, 1)
	for faultCnt := 0; ; faultCnt++ {
		pr, err := h.poll()
		if err != nil {
			return err
		}
		if err := h.serveOne(msgs, faultCnt, pr); err != nil {
			return err
		}
	}
}

// serveOne prints and serves one fault. It holds the output lock from the
// header through the copy's result, so that the faulting goroutine, woken
// by the copy, prints after it, as in the manual page's transcript.
func (h *handler) serveOne(msgs []uffd.Message, faultCnt int, pr pollResult) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.printf("\nfault_handler_thread():\n")
	h.out.printf("    poll() returns: nready = %d; POLLIN = %d; POLLERR = %d\n",
		pr.nready, b2i(pr.in), b2i(pr.err))

	if _, err := h.u.ReadMessages(context.Background(), msgs); err != nil {
		return err
	}
	msg := msgs[0]
	if msg.Event != uffd.EventPagefault {
		return fmt.Errorf("unexpected event on userfaultfd: %v", msg)
	}
	h.out.printf("    UFFD_EVENT_PAGEFAULT event: flags = %x; address = %x\n", uint64(msg.Flags), msg.Address)

	// Vary the contents copied in, so that it is obvious that each fault
	// is handled separately.
	for i := range h.page {
		h.page[i] = byte('A' + faultCnt%20)
	}
	dst := msg.Address &^ uintptr(len(h.page)-1)
	n, err := h.u.Copy(dst, h.page, 0)
	if err != nil {
		return err
	}
	h.out.printf("        (uffdio_copy.copy returned %d)\n", n)
	return h.out.err
}

// pollResult is what poll(2) says about the userfaultfd.
type pollResult struct {
	nready  int  // poll's return value
	in, err bool // POLLIN and POLLERR in revents
}

// poll waits in the Go runtime's poller until the userfaultfd is readable,
// then reports what poll(2) itself says about it, as the C program prints
// it.
func (h *handler) poll() (pollResult, error) {
	var pr pollResult
	var pollErr error
	err := h.rc.Read(func(fd uintptr) bool {
		pr, pollErr = pollNow(fd)
		// Not ready: park in the poller until it is.
		return pollErr != nil || pr.nready > 0
	})
	if err == nil {
		err = pollErr
	}
	return pr, err
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
