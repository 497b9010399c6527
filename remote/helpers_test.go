//go:build linux

package remote_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/gouffd/uffd/internal/miniotest"
	"github.com/gouffd/uffd/internal/netproxy"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/remote"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(testutil.Main(m))
}

// makeImage returns size bytes of a memory image: pages of random bytes,
// each page's first 8 bytes its offset (so a page in the wrong place is
// caught), with runs of zero pages and whole zero chunks.
func makeImage(size int64, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for off := int64(0); off < size; off += remote.PageSize {
		p := b[off:min(off+remote.PageSize, size)]
		switch {
		case (off>>20)%5 == 3: // every fifth MiB is zero
			continue
		case r.IntN(8) == 0: // and some pages elsewhere
			continue
		}
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		if len(p) >= 8 {
			for i := range 8 {
				p[i] = byte(uint64(off) >> (8 * i))
			}
		}
	}
	return b
}

func digest(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// s3env is a MinIO server with a bucket, the AWS configuration of this
// process pointed at it (optionally through a proxy).
type s3env struct {
	srv    *miniotest.Server
	proxy  *netproxy.Proxy
	bucket string
	client *s3.Client
}

func newS3(t *testing.T, viaProxy bool) *s3env {
	t.Helper()
	srv := miniotest.Start(t)
	e := &s3env{srv: srv, bucket: "images"}
	endpoint := ""
	if viaProxy {
		p, err := netproxy.Start(srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.proxy = p
		endpoint = p.URL()
	}
	srv.Env(t, endpoint)
	// Direct to the server, for setting up objects.
	c, err := remote.NewS3Client(context.Background(), remote.SourceConfig{S3Endpoint: srv.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	e.client = c
	createBucket(t, c, e.bucket)
	return e
}

func (e *s3env) put(t *testing.T, key string, data []byte) string {
	t.Helper()
	_, err := e.client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	return "s3://" + e.bucket + "/" + key
}

// rangeGets counts the range GETs the proxy saw for a path.
func rangeGets(p *netproxy.Proxy, path string) (n int, ranges map[string]int) {
	ranges = map[string]int{}
	for _, r := range p.Requests() {
		if r.Method == "GET" && r.Range != "" && r.Path == path {
			n++
			ranges[r.Range]++
		}
	}
	return n, ranges
}

// httpEnv serves a directory with net/http's FileServer, adding a strong
// ETag as nginx does (modification time and size) unless noETag.
type httpEnv struct {
	dir   string
	srv   *http.Server
	ln    net.Listener
	addr  string
	proxy *netproxy.Proxy
	mu    sync.Mutex
}

func newHTTP(t *testing.T, viaProxy, noETag bool) *httpEnv {
	t.Helper()
	e := &httpEnv{dir: t.TempDir()}
	fs := http.FileServer(http.Dir(e.dir))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !noETag {
			if st, err := os.Stat(filepath.Join(e.dir, filepath.Clean(r.URL.Path))); err == nil {
				w.Header().Set("ETag", fmt.Sprintf("\"%x-%x\"", st.ModTime().UnixNano(), st.Size()))
			}
		}
		fs.ServeHTTP(w, r)
	})
	e.srv = &http.Server{Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.ln, e.addr = ln, ln.Addr().String()
	go e.srv.Serve(ln)
	t.Cleanup(func() { e.srv.Close() })
	if viaProxy {
		p, err := netproxy.Start(e.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.proxy = p
	}
	return e
}

func (e *httpEnv) put(t *testing.T, name string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := e.addr
	if e.proxy != nil {
		addr = e.proxy.Addr()
	}
	return "http://" + addr + "/" + name
}

// stop closes the server; start serves again on the same address.
func (e *httpEnv) stop() { e.srv.Close() }

func (e *httpEnv) start(t *testing.T) {
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", e.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Error(err)
		return
	}
	e.srv = &http.Server{Handler: e.srv.Handler}
	go e.srv.Serve(ln)
}

// fetchAll fetches the whole image and waits for every page (or the
// first error).
func fetchAll(t testing.TB, im *remote.Image, urgent bool) error {
	t.Helper()
	n := (im.Size() + remote.PageSize - 1) &^ (remote.PageSize - 1)
	return fetchRange(im, 0, n, urgent)
}

func fetchRange(im *remote.Image, off, n int64, urgent bool) error {
	var mu sync.Mutex
	left := n
	done := make(chan error, 1)
	im.Fetch(off, n, urgent, func(_, m int64, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			select {
			case done <- err:
			default:
			}
			return
		}
		if left -= m; left == 0 {
			done <- nil
		}
	})
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("fetch [%d, %d): no answer in 5 minutes", off, off+n)
	}
}

// checkData compares the image's cached bytes with want.
func checkData(t testing.TB, im *remote.Image, want []byte) {
	t.Helper()
	st := im.State()
	if !bytes.Equal(st.Data[:len(want)], want) {
		for off := 0; off < len(want); off += remote.PageSize {
			end := min(off+remote.PageSize, len(want))
			if !bytes.Equal(st.Data[off:end], want[off:end]) {
				t.Fatalf("cached page at %#x differs from the image", off)
			}
		}
	}
}

// createBucket creates a bucket, waiting for a server just started to
// finish initializing.
func createBucket(t *testing.T, c *s3.Client, name string) {
	t.Helper()
	if err := miniotest.CreateBucket(context.Background(), c, name); err != nil {
		t.Fatal(err)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
