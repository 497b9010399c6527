package bitnames

import "testing"

func TestFormat(t *testing.T) {
	names := []string{"A", "", "C"}
	for _, tc := range []struct {
		v    uint64
		want string
	}{
		{0, "0"},
		{1, "A"},
		{5, "A|C"},
		{2, "0x2"},
		{1 | 2 | 8, "A|0xa"},
		{1 << 63, "0x8000000000000000"},
	} {
		if got := Format(tc.v, names); got != tc.want {
			t.Errorf("Format(%#x) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
