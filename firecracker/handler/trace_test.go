package handler_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
)

// traceBytes encodes a trace header announcing n entries, followed by
// offs.
func traceBytes(size int64, fp, n uint64, offs ...uint64) []byte {
	b := []byte("UFFDTRC1")
	b = binary.LittleEndian.AppendUint64(b, uint64(size))
	b = binary.LittleEndian.AppendUint64(b, fp)
	b = binary.LittleEndian.AppendUint64(b, n)
	for _, o := range offs {
		b = binary.LittleEndian.AppendUint64(b, o)
	}
	return b
}

// traceCases are the trace decoder's edge cases, fuzzer finds among them
// (named for what they found).
var traceCases = []struct {
	name string
	in   []byte
	want string // part of the error; "" for a good trace
}{
	{"empty trace", traceBytes(4096, 7, 0), ""},
	{"three entries", traceBytes(1<<20, 7, 3, 0, 8192, 4096), ""},
	{"nothing", nil, "short header"},
	{"half a header", traceBytes(4096, 7, 0)[:20], "short header"},
	{"bad magic", append([]byte("UFFDTRC2"), traceBytes(4096, 7, 0)[8:]...), "not a trace file"},
	{"fewer entries than announced", traceBytes(4096, 7, 3, 0, 4096), "the data ends after 2"},
	{"half an entry", traceBytes(4096, 7, 1, 0)[:36], "the data ends after 0"},
	{"more entries than announced", traceBytes(4096, 7, 1, 0, 4096), "bytes after"},
	{"a trailing byte", append(traceBytes(4096, 7, 1, 0), 0), "bytes after"},
	{"more entries than MaxTraceEntries", traceBytes(4096, 7, handler.MaxTraceEntries+1), "more than"},
	// A header announcing the most entries allowed, with none: refused
	// without allocating for them.
	{"fuzz: huge count, no data", traceBytes(4096, 7, handler.MaxTraceEntries), "the data ends after 0"},
}

func TestDecodeTrace(t *testing.T) {
	for _, tc := range traceCases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := handler.DecodeTrace(bytes.NewReader(tc.in))
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("DecodeTrace = %+v, %v; want an error saying %q", tr, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := tr.Encode(&out); err != nil || !bytes.Equal(out.Bytes(), tc.in) {
				t.Fatalf("re-encoded as %x (%v), want %x", out.Bytes(), err, tc.in)
			}
		})
	}
}

// FuzzDecodeTrace: no input panics, and a trace that decodes encodes back
// to the same bytes.
func FuzzDecodeTrace(f *testing.F) {
	for _, tc := range traceCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := handler.DecodeTrace(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := tr.Encode(&out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), b) {
			t.Fatalf("%x decodes to %+v, which encodes as %x", b, tr, out.Bytes())
		}
	})
}

// TestTraceFile writes a trace and reads it back, and checks a
// fingerprint against the memory file it was taken of.
func TestTraceFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace")
	mem := make([]byte, 1<<20)
	for i := range mem {
		mem[i] = byte(i * 7)
	}
	fp, err := handler.Fingerprint(pager.Image(mem))
	if err != nil {
		t.Fatal(err)
	}
	want := &handler.Trace{Size: int64(len(mem)), Fingerprint: fp, Offsets: []uint64{4096, 0, 8192}}
	if err := handler.WriteTrace(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := handler.ReadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Matches(int64(len(mem)), fp) != nil || len(got.Offsets) != 3 || got.Offsets[0] != 4096 {
		t.Fatalf("read back %+v", got)
	}
	mem[100]++ // in the first block, which the fingerprint reads
	fp2, _ := handler.Fingerprint(pager.Image(mem))
	if err := got.Matches(int64(len(mem)), fp2); !errors.Is(err, handler.ErrTraceMismatch) {
		t.Errorf("a changed memory file matches the trace: %v", err)
	}
	if _, err := handler.ReadTrace(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing trace: %v", err)
	}
}
