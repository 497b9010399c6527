//go:build linux && cgo

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/snapshot"
)

// uffd image compact folds a full layer and two diffs into one layer
// holding the memory as of the last.
func TestImageCompact(t *testing.T) {
	m, err := mem.Map(mem.Anonymous, 256*mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range m.Data {
		m.Data[i] = byte(i * 13)
	}
	u, err := uffd.Open(uffd.Config{Features: snapshot.Features(false)})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	s, err := snapshot.New(u, snapshot.Config{Track: true, Regions: []snapshot.Region{{Start: m.Addr(), Len: m.Len()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dir := t.TempDir()
	var layers []string
	for i := range 3 {
		m.Data[i*40*mem.PageSize()+5] = 0xee // one page more each time
		clear(m.Data[(100+i)*mem.PageSize() : (101+i)*mem.PageSize()])
		p := filepath.Join(dir, string(rune('a'+i)))
		if _, err := s.TakeFile(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		layers = append(layers, p)
	}
	out := filepath.Join(dir, "one")
	stdout, stderr, err := runCmd(context.Background(), append([]string{"image", "compact", "-o", out}, layers...)...)
	if err != nil {
		t.Fatalf("compact: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "from 3 layers") {
		t.Errorf("compact printed %q", stdout)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(m.Data)], m.Data) {
		t.Error("the compacted layer differs from the memory")
	}
	if _, _, err := runCmd(context.Background(), "image", "compact", "-o", out, layers[1]); err == nil {
		t.Error("compact of a chain starting with a diff succeeded")
	}
	if _, _, err := runCmd(context.Background(), "image", "compact", layers[0]); !errors.Is(err, errUsage) {
		t.Errorf("compact without -o: %v, want a usage error", err)
	}
}

// uffd bench snapshot runs both methods on a small region.
func TestBenchSnapshot(t *testing.T) {
	stdout, stderr, err := runCmd(context.Background(), "bench", "snapshot", "--size", "32MiB", "--before", "100ms", "--dir", t.TempDir())
	if err != nil {
		t.Fatalf("bench snapshot: %v\n%s", err, stderr)
	}
	for _, want := range []string{"run 1 uffd", "run 1 fork", "incremental"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("bench snapshot printed no %q:\n%s", want, stdout)
		}
	}
	if _, _, err := runCmd(context.Background(), "bench", "snapshot", "--size", "3MiB"); !errors.Is(err, errUsage) {
		t.Errorf("--size 3MiB: %v, want a usage error", err)
	}
}
