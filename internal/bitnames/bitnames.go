// Package bitnames formats bit sets as the names of their bits, for the
// String methods of the project's flag types.
package bitnames

import (
	"strconv"
	"strings"
)

// Format returns the names of v's set bits, lowest first, joined with "|";
// "0" when no bit is set. names[i] names bit i; bits without a name (past
// the end of names, or "") are shown together as one hex number at the end.
func Format(v uint64, names []string) string {
	if v == 0 {
		return "0"
	}
	var sb strings.Builder
	var unknown uint64
	for i := 0; i < 64; i++ {
		bit := uint64(1) << i
		if v&bit == 0 {
			continue
		}
		if i >= len(names) || names[i] == "" {
			unknown |= bit
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('|')
		}
		sb.WriteString(names[i])
	}
	if unknown != 0 {
		if sb.Len() > 0 {
			sb.WriteByte('|')
		}
		sb.WriteString("0x")
		sb.WriteString(strconv.FormatUint(unknown, 16))
	}
	return sb.String()
}
