package handoff

import (
	"encoding/binary"
	"strings"
	"testing"
)

// headerCases are the header decoder's edge cases, fuzzer finds among
// them (each named for what it found).
var headerCases = []struct {
	name string
	in   []byte
	size int    // when want is ""
	want string // part of the error
}{
	{"empty payload", []byte("UFD1\x00\x00\x00\x00"), 0, ""},
	{"little-endian length", []byte("UFD1\x01\x02\x00\x00"), 0x201, ""},
	{"MaxPayload", binary.LittleEndian.AppendUint32([]byte("UFD1"), MaxPayload), MaxPayload, ""},
	{"bytes after the header are not its business", []byte("UFD1\x05\x00\x00\x00hello"), 5, ""},
	{"over MaxPayload", binary.LittleEndian.AppendUint32([]byte("UFD1"), MaxPayload+1), 0, "more than MaxPayload"},
	{"largest length", []byte("UFD1\xff\xff\xff\xff"), 0, "more than MaxPayload"},
	{"bad magic", []byte("UFD2\x00\x00\x00\x00"), 0, "not a handoff message"},
	{"the old handover framing (big-endian length)", []byte("\x00\x00\x00\x10{\"op\":\""), 0, "not a handoff message"},
	// Found by FuzzParseHeader: fewer than 8 bytes indexed past the end.
	{"fuzz: short input", []byte("UFD"), 0, "shorter than the 8-byte header"},
	{"fuzz: empty input", nil, 0, "shorter than the 8-byte header"},
}

func TestParseHeader(t *testing.T) {
	for _, tc := range headerCases {
		t.Run(tc.name, func(t *testing.T) {
			size, err := parseHeader(tc.in)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("parseHeader(%q) = %d, %v; want an error saying %q", tc.in, size, err, tc.want)
				}
				return
			}
			if err != nil || size != tc.size {
				t.Fatalf("parseHeader(%q) = %d, %v; want %d", tc.in, size, err, tc.size)
			}
		})
	}
}

// FuzzParseHeader: no input panics; a header that parses announces at
// most MaxPayload bytes and encodes back to the bytes it came from.
func FuzzParseHeader(f *testing.F) {
	for _, tc := range headerCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := parseHeader(b)
		if err != nil {
			return
		}
		if size < 0 || size > MaxPayload {
			t.Fatalf("parseHeader(%q) = %d, outside [0, MaxPayload]", b, size)
		}
		var h [headerSize]byte
		putHeader(h[:], size)
		if string(h[:]) != string(b[:headerSize]) {
			t.Fatalf("header %q re-encodes as %q", b[:headerSize], h)
		}
	})
}
