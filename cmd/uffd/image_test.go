package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gouffd/uffd/internal/miniotest"
	"github.com/gouffd/uffd/remote"
)

// uffd image push, stat and pull against a real MinIO.
func TestImageCommands(t *testing.T) {
	srv := miniotest.Start(t)
	srv.Env(t, "")
	srv.Bucket(t, "snaps")
	dir := t.TempDir()
	data := make([]byte, 9<<20)
	for i := range data {
		if (i>>20)%3 != 1 { // MiB 1, 4 and 7 zero
			data[i] = byte(i*7 + i>>12)
		}
	}
	file := filepath.Join(dir, "vm.mem")
	os.WriteFile(file, data, 0o600)
	ctx := context.Background()

	out, stderr, err := runCmd(ctx, "image", "push", "--chunk-size", "1MiB", "--part-size", "5MiB", file, "s3://snaps/vm.mem")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "3 of 9 chunks all zero") {
		t.Fatalf("push said %q", out)
	}
	out, stderr, err = runCmd(ctx, "image", "stat", "s3://snaps/vm.mem")
	if err != nil {
		t.Fatalf("stat: %v\n%s", err, stderr)
	}
	for _, want := range []string{"Size           9437184 (9.0 MiB)", "ETag", "chunks of 1.0 MiB, 3 of 9 chunks all zero"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stat printed %q; want %q", out, want)
		}
	}
	pulled := filepath.Join(dir, "pulled.mem")
	out, stderr, err = runCmd(ctx, "image", "pull", "--progress", "always", "s3://snaps/vm.mem", pulled)
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, stderr)
	}
	if got, _ := os.ReadFile(pulled); !bytes.Equal(got, data) {
		t.Fatal("pulled file differs")
	}
	if !strings.Contains(out, "6.0 MiB fetched") || !strings.Contains(stderr, "100.0%") {
		t.Fatalf("pull printed %q, progress %q", out, stderr)
	}

	// Errors: a missing key is named, a bad command line is a usage error.
	_, stderr, err = runCmd(ctx, "image", "stat", "s3://snaps/absent.mem")
	if !errors.Is(err, remote.ErrNotFound) || !strings.Contains(stderr, "no such key") {
		t.Fatalf("stat of a missing key: %v, %q", err, stderr)
	}
	if _, _, err = runCmd(ctx, "image", "push", file); !errors.Is(err, errUsage) {
		t.Fatalf("push with one argument: %v", err)
	}
	if _, _, err = runCmd(ctx, "image", "push", "--chunk-size", "3KiB", file, "s3://snaps/x"); err == nil {
		t.Fatal("a chunk size that is not a power of two was accepted")
	}

	// index: for HTTP servers.
	out, _, err = runCmd(ctx, "image", "index", "--chunk-size", "1MiB", file)
	if err != nil || !strings.Contains(out, "3 of 9 chunks all zero") {
		t.Fatalf("index: %v, %q", err, out)
	}
	if _, err := os.Stat(file + remote.IndexSuffix); err != nil {
		t.Fatal(err)
	}
}
