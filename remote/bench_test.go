//go:build linux

package remote_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/gouffd/uffd/internal/miniotest"
	"github.com/gouffd/uffd/internal/netproxy"
	"github.com/gouffd/uffd/remote"
)

// benchImageSize is the image of the fetch benchmarks (UFFD_BENCH_MIB
// overrides it).
func benchImageSize() int64 {
	var mib int64 = 64
	if s := os.Getenv("UFFD_BENCH_MIB"); s != "" {
		fmt.Sscan(s, &mib)
	}
	return mib << 20
}

type benchEnv struct {
	proxy *netproxy.Proxy
	url   string
	sdk   *s3.Client
}

func newBenchS3(b *testing.B) *benchEnv {
	srv := miniotest.Start(b)
	p, err := netproxy.Start(srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": miniotest.AccessKey, "AWS_SECRET_ACCESS_KEY": miniotest.SecretKey,
		"AWS_REGION": miniotest.Region, "AWS_ENDPOINT_URL": p.URL(), "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
	} {
		b.Setenv(k, v)
	}
	direct, err := remote.NewS3Client(context.Background(), remote.SourceConfig{S3Endpoint: srv.Endpoint()})
	if err != nil {
		b.Fatal(err)
	}
	if err := miniotest.CreateBucket(context.Background(), direct, "bench"); err != nil {
		b.Fatal(err)
	}
	data := makeImage(benchImageSize(), 99)
	for i := range data { // no zero pages: every byte travels
		if data[i] == 0 {
			data[i] = 1
		}
	}
	file := filepath.Join(b.TempDir(), "bench.mem")
	os.WriteFile(file, data, 0o600)
	up := manager.NewUploader(direct)
	f, _ := os.Open(file)
	defer f.Close()
	if _, err := up.Upload(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bench"), Key: aws.String("bench.mem"), Body: f}); err != nil {
		b.Fatal(err)
	}
	sdk, err := remote.NewS3Client(context.Background(), remote.SourceConfig{Connections: 32})
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{proxy: p, url: "s3://bench/bench.mem", sdk: sdk}
}

// BenchmarkFetch: the whole image into a fresh cache, background
// requests, through the proxy at 0, 1 and 10 ms RTT, per chunk size;
// BenchmarkFetch/.../sdk is the SDK's parallel downloader (what an
// operator runs before a restore) with the same concurrency and part size,
// into a file.
//
//	go test -run '^$' -bench Fetch -benchtime 3x ./remote
func BenchmarkFetch(b *testing.B) {
	e := newBenchS3(b)
	size := benchImageSize()
	for _, rtt := range []time.Duration{0, time.Millisecond, 10 * time.Millisecond} {
		for _, chunk := range []int64{1 << 20, 4 << 20} {
			name := fmt.Sprintf("rtt=%v/chunk=%dKiB", rtt, chunk>>10)
			b.Run(name+"/remote", func(b *testing.B) {
				e.proxy.SetRTT(rtt)
				b.SetBytes(size)
				for range b.N {
					im, err := remote.Open(context.Background(), e.url, remote.Config{ChunkSize: chunk, Concurrency: remote.DefaultConcurrency})
					if err != nil {
						b.Fatal(err)
					}
					if err := fetchAll(b, im, false); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					im.Close()
					b.StartTimer()
				}
			})
			if chunk != remote.DefaultChunkSize {
				continue
			}
			b.Run(name+"/sdk", func(b *testing.B) {
				e.proxy.SetRTT(rtt)
				b.SetBytes(size)
				d := manager.NewDownloader(e.sdk, func(d *manager.Downloader) {
					d.Concurrency, d.PartSize = remote.DefaultConcurrency, chunk
				})
				for range b.N {
					f, err := os.Create(filepath.Join(b.TempDir(), "out"))
					if err != nil {
						b.Fatal(err)
					}
					n, err := d.Download(context.Background(), f, &s3.GetObjectInput{Bucket: aws.String("bench"), Key: aws.String("bench.mem")})
					f.Close()
					if err != nil || n != size {
						b.Fatalf("%d bytes, %v", n, err)
					}
				}
			})
		}
	}
}
