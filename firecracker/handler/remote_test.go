//go:build linux

package handler_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gouffd/uffd/firecracker/handler"
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
