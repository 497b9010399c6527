//go:build linux

package remote_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/gouffd/uffd/internal/miniotest"
	"github.com/gouffd/uffd/remote"
)

const helperEnv = "UFFD_REMOTE_TEST_HELPER"

// runHelper is the test binary started again as another handler process:
// it opens the image at $URL through the cache at $CACHE, fetches all of
// it and prints its Stats as JSON.
func runHelper(role string) int {
	switch role {
	case "fetch":
		cache, err := remote.OpenCache(os.Getenv("CACHE"), 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		im, err := remote.Open(context.Background(), os.Getenv("URL"), remote.Config{Cache: cache, ChunkSize: 256 << 10})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer im.Close()
		if err := fetchRange(im, 0, (im.Size()+remote.PageSize-1)&^(remote.PageSize-1), false); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		want, err := os.ReadFile(os.Getenv("WANT"))
		if err != nil || !bytes.Equal(im.State().Data[:len(want)], want) {
			fmt.Fprintln(os.Stderr, "helper: cached bytes differ from the image", err)
			return 1
		}
		json.NewEncoder(os.Stdout).Encode(im.Stats())
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 2
}

func TestS3RangesAndIdentity(t *testing.T) {
	e := newS3(t, false)
	data := makeImage(3<<20+123, 1)
	url := e.put(t, "a.mem", data)
	src, err := remote.OpenSource(context.Background(), url, remote.SourceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	id := src.Identity()
	if id.Size != int64(len(data)) || id.ETag == "" {
		t.Fatalf("identity %v: want %d bytes and an ETag", id, len(data))
	}
	for _, r := range [][2]int64{{0, 1}, {4096, 8192}, {1 << 20, 1<<20 + 5}, {int64(len(data)) - 100, 100}} {
		body, err := src.ReadRange(context.Background(), r[0], r[1])
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(body)
		body.Close()
		if err != nil || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("range %v: %d bytes, err %v; want the image's", r, len(got), err)
		}
	}
	if _, err := src.ReadRange(context.Background(), int64(len(data))-1, 2); err == nil {
		t.Fatal("a range past the end was accepted")
	}
}

func TestHTTPRangesAndIdentity(t *testing.T) {
	for _, noETag := range []bool{false, true} {
		t.Run(fmt.Sprintf("noETag=%v", noETag), func(t *testing.T) {
			e := newHTTP(t, false, noETag)
			data := makeImage(1<<20+7, 2)
			url := e.put(t, "a.mem", data)
			src, err := remote.OpenSource(context.Background(), url, remote.SourceConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			id := src.Identity()
			if id.Size != int64(len(data)) || (id.ETag == "") != noETag || id.LastModified.IsZero() {
				t.Fatalf("identity %v", id)
			}
			body, err := src.ReadRange(context.Background(), 5000, 70000)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(body)
			body.Close()
			if !bytes.Equal(got, data[5000:75000]) {
				t.Fatal("range differs")
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	e := newS3(t, false)
	url := e.put(t, "present.mem", makeImage(8192, 3))
	ctx := context.Background()
	check := func(t *testing.T, url string, want error, text string) {
		t.Helper()
		_, err := remote.Open(ctx, url, remote.Config{})
		if !errors.Is(err, want) || !strings.Contains(err.Error(), text) {
			t.Fatalf("Open(%s) = %v; want an error matching %v saying %q", url, err, want, text)
		}
	}
	t.Run("missing object", func(t *testing.T) { check(t, "s3://images/absent.mem", remote.ErrNotFound, "no such key") })
	t.Run("missing bucket", func(t *testing.T) { check(t, "s3://nobucket/a.mem", remote.ErrNotFound, "no such bucket") })
	t.Run("wrong credentials", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-key-0000")
		check(t, url, remote.ErrDenied, "SignatureDoesNotMatch")
	})
	t.Run("unknown access key", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "nobody")
		check(t, url, remote.ErrDenied, "InvalidAccessKeyId")
	})
	t.Run("bad URL", func(t *testing.T) {
		_, err := remote.Open(ctx, "s3://bucketonly", remote.Config{})
		if remote.KindOf(err) != remote.KindOther || !strings.Contains(err.Error(), "want s3://BUCKET/KEY") {
			t.Fatalf("s3://bucketonly: %v", err)
		}
	})
	h := newHTTP(t, false, false)
	t.Run("HTTP 404", func(t *testing.T) { check(t, "http://"+h.addr+"/absent.mem", remote.ErrNotFound, "404") })
	t.Run("no server", func(t *testing.T) {
		_, err := remote.OpenSource(ctx, "ftp://host/x", remote.SourceConfig{})
		if !errors.Is(err, remote.ErrUnsupported) {
			t.Fatalf("ftp URL: %v", err)
		}
	})
}

func TestS3WrongRegion(t *testing.T) {
	srv := miniotest.Start(t, "MINIO_SITE_REGION=eu-west-1")
	srv.Env(t, "")
	t.Setenv("AWS_REGION", "eu-west-1")
	c, err := remote.NewS3Client(context.Background(), remote.SourceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	createBucket(t, c, "bucket-eu")
	if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bucket-eu"), Key: aws.String("k"), Body: bytes.NewReader([]byte("x"))}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_REGION", "us-west-2")
	_, err = remote.Open(context.Background(), "s3://bucket-eu/k", remote.Config{})
	if !errors.Is(err, remote.ErrWrongRegion) || !strings.Contains(err.Error(), "eu-west-1") {
		t.Fatalf("Open with the wrong region: %v; want ErrWrongRegion naming eu-west-1", err)
	}
}

func TestFetchS3AndHTTP(t *testing.T) {
	data := makeImage(5<<20+4096*3+100, 4)
	s := newS3(t, true)
	h := newHTTP(t, true, false)
	for name, url := range map[string]string{"s3": s.put(t, "img.mem", data), "http": h.put(t, "img.mem", data)} {
		t.Run(name, func(t *testing.T) {
			im, err := remote.Open(context.Background(), url, remote.Config{ChunkSize: 1 << 20, Concurrency: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if err := fetchAll(t, im, false); err != nil {
				t.Fatal(err)
			}
			checkData(t, im, data)
			st := im.Stats()
			if st.Misses != 6 || st.Bytes != uint64(len(data)) {
				t.Fatalf("stats %+v: want 6 chunks fetched, %d bytes", st, len(data))
			}
			// ReadAt, unaligned, through the cache.
			buf := make([]byte, 10000)
			if n, err := im.ReadAt(buf, 12345); err != nil || n != len(buf) || !bytes.Equal(buf, data[12345:22345]) {
				t.Fatalf("ReadAt: %d, %v", n, err)
			}
		})
	}
}

// An object replaced while an image is being fetched: the rest of the
// fetch fails with ErrChanged, and no byte of the new version reaches the
// cache.
func TestObjectReplaced(t *testing.T) {
	old, repl := makeImage(4<<20, 5), makeImage(4<<20, 6)
	s := newS3(t, false)
	h := newHTTP(t, false, false)
	hn := newHTTP(t, false, true)
	cases := []struct {
		name     string
		url      string
		setNew   func()
		checkErr error
	}{
		{"s3", s.put(t, "r.mem", old), func() { s.put(t, "r.mem", repl) }, remote.ErrChanged},
		{"http-etag", h.put(t, "r.mem", old), func() { h.put(t, "r.mem", repl) }, remote.ErrChanged},
		{"http-last-modified", hn.put(t, "r.mem", old), func() {
			hn.put(t, "r.mem", repl)
			os.Chtimes(hn.dir+"/r.mem", time.Now().Add(time.Hour), time.Now().Add(time.Hour))
		}, remote.ErrChanged},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im, err := remote.Open(context.Background(), c.url, remote.Config{ChunkSize: 1 << 20, Concurrency: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if err := fetchRange(im, 0, 1<<20, true); err != nil {
				t.Fatal(err)
			}
			c.setNew()
			err = fetchRange(im, 1<<20, 3<<20, true)
			if !errors.Is(err, c.checkErr) {
				t.Fatalf("fetch after the replacement: %v; want %v", err, c.checkErr)
			}
			st := im.State()
			for off := int64(0); off < int64(len(old)); off += remote.PageSize {
				if im.Present(off) && !bytes.Equal(st.Data[off:off+remote.PageSize], old[off:off+remote.PageSize]) {
					t.Fatalf("page %#x is present with bytes other than the version opened", off)
				}
			}
			if !errors.Is(im.Err(), remote.ErrChanged) {
				t.Fatalf("Err() = %v", im.Err())
			}
			if err := fetchRange(im, 0, 4096, true); err != nil {
				t.Fatalf("a page cached before the change: %v", err)
			}
		})
	}
}
