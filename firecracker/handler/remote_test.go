//go:build linux

package handler_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
	"github.com/gouffd/uffd/remote"
)

// countingServer serves dir over HTTP on loopback (net/http's FileServer,
// which honours Range) and counts the bytes it sent.
func countingServer(t *testing.T, dir string) (url string, sent *atomic.Int64) {
	t.Helper()
	sent = &atomic.Int64{}
	fs := http.FileServer(http.Dir(dir))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.ServeHTTP(countingWriter{w, sent}, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), sent
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(b []byte) (int, error) {
	w.n.Add(int64(len(b)))
	return w.ResponseWriter.Write(b)
}

// TestRemoteImage: VMs restored at once from a remote image (on an HTTP
// server that honours Range) get every byte right, and the image is
// fetched once for all of them.
func TestRemoteImage(t *testing.T) {
	const size = 32 << 20
	dir := sockDir(t)
	path, data := memFile(t, dir, size)
	base, sent := countingServer(t, dir)
	cache, err := remote.OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() }) // after the daemon stopped (cleanups run last first)
	im, err := remote.Open(context.Background(), base+"/mem", remote.Config{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	d := startDaemonOn(t, dir, path, data, im, handler.Config{})
	var wg sync.WaitGroup
	for range 3 {
		vm := d.startVM(vmOf(size))
		wg.Add(1)
		go func() {
			defer wg.Done()
			vm.wait(t) // the VM checks every byte against the file
		}()
	}
	wg.Wait()
	if got := sent.Load(); got > size*105/100 {
		t.Errorf("the server sent %d bytes for 3 VMs of a %d-byte image: want it once", got, size)
	}
}

// TestRemoteImageMissing: an image that does not exist is an error at
// start, before any VM is accepted.
func TestRemoteImageMissing(t *testing.T) {
	base, _ := countingServer(t, t.TempDir())
	_, err := remote.Open(context.Background(), base+"/nothing", remote.Config{})
	if err == nil {
		t.Fatal("opened an image that does not exist")
	}
	err = handler.RunDaemon(context.Background(), handler.DaemonConfig{
		MemFile: base + "/nothing", Socket: sockDir(t) + "/s", HandshakeTimeout: 1e9, MaxVMs: 1,
	})
	if err == nil || !errorsIs(err, remote.ErrNotFound) {
		t.Fatalf("RunDaemon with a missing image: %v, want an error matching remote.ErrNotFound", err)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// TestRemoteImageReplay: record-replay from a remote image. A restore is
// recorded; a later restore, by a new daemon with a cold cache, has the
// trace's chunks fetched and every recorded page installed before the
// guest touches anything, the image fetched once, every byte right.
func TestRemoteImageReplay(t *testing.T) {
	const size = 32 << 20
	dir := sockDir(t)
	path, data := memFile(t, dir, size)
	base, sent := countingServer(t, dir)
	trace := filepath.Join(t.TempDir(), "trace")
	open := func() *remote.Image {
		cache, err := remote.OpenCache(t.TempDir(), 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cache.Close() })
		im, err := remote.Open(context.Background(), base+"/mem", remote.Config{Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { im.Close() })
		return im
	}
	cfg := handler.Config{Mode: handler.RecordReplay, Trace: trace, Prefetch: pager.Adaptive()}
	rec := startDaemonOn(t, dir, path, data, open(), cfg)
	rec.startVM(vmOf(size)).wait(t)
	waitFor(t, "the trace", func() bool { return len(rec.logLines("trace written")) == 1 })
	rec.stop()

	sent.Store(0)
	d := startDaemonOn(t, sockDir(t), path, data, open(), cfg)
	startFile := filepath.Join(t.TempDir(), "start")
	vm := vmOf(size)
	vm.StartFile = startFile
	p := d.startVM(vm)
	waitFor(t, "the replay", func() bool { return len(d.logLines("replay done")) == 1 })
	if filled := d.s.Stats().Filled; filled != size/4096 {
		t.Errorf("the replay installed %d pages, want all %d recorded", filled, size/4096)
	}
	os.WriteFile(startFile, nil, 0o600)
	p.wait(t) // every byte checked
	if got := sent.Load(); got < size || got > size*105/100 {
		t.Errorf("the server sent %d bytes for a replay of a %d-byte image: want it once", got, size)
	}
}
