package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gouffd/uffd/internal/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// letters returns the letters that the "Read address" lines show, in order.
func letters(t *testing.T, out string) string {
	t.Helper()
	var sb strings.Builder
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "Read address "); ok {
			sb.WriteByte(rest[len(rest)-1])
		}
	}
	return sb.String()
}

// The letter cycles through 'A'..'T' ('A' + fault_cnt % 20).
func TestLettersWrap(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), &out, Config{Pages: 22}); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for p := range 22 {
		want.WriteString(strings.Repeat(string(rune('A'+p%20)), 4))
	}
	if got := letters(t, out.String()); got != want.String() {
		t.Errorf("letters %s, want %s", got, want.String())
	}
	if n := strings.Count(out.String(), "\nfault_handler_thread():\n"); n != 22 {
		t.Errorf("%d faults handled, want 22", n)
	}
}

func TestBadConfig(t *testing.T) {
	for _, pages := range []int{0, -1, int(^uint(0) >> 1)} {
		if err := Run(context.Background(), &bytes.Buffer{}, Config{Pages: pages}); err == nil {
			t.Errorf("Pages %d: no error", pages)
		}
	}
}

// failWriter fails every write after the first n.
type failWriter struct {
	mu sync.Mutex
	n  int
}

var errWrite = errors.New("write failed")

func (w *failWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 {
		return 0, errWrite
	}
	w.n--
	return len(p), nil
}

// A failing writer, on either goroutine, ends the demo with the error
// instead of hanging the reader on a fault that is never served.
func TestWriteError(t *testing.T) {
	for n := range 12 {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			err := Run(context.Background(), &failWriter{n: n}, Config{Pages: 2})
			if !errors.Is(err, errWrite) {
				t.Errorf("after %d writes: err = %v, want %v", n, err, errWrite)
			}
		})
	}
}

// The faults are plain Go loads, which a garbage collection can preempt:
// forced collections during the demo must not hang it.
func TestConcurrentGC(t *testing.T) {
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			runtime.GC()
		}
	}()
	var out bytes.Buffer
	err := Run(context.Background(), &out, Config{Pages: 200})
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(letters(t, out.String())); got != 800 {
		t.Errorf("%d reads, want 800", got)
	}
}

func TestCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, &out, Config{Pages: 3, Delay: time.Hour}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want %v", err, context.DeadlineExceeded)
	}
	if got := letters(t, out.String()); got != "A" {
		t.Errorf("read %q before the deadline, want A", got)
	}
}
