package firecracker

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Mapping is one guest memory region as Firecracker describes it to the
// page-fault handler (GuestRegionUffdMapping in src/vmm/src/persist.rs).
// The handshake is a JSON array of them.
//
// The field order is Firecracker's, so that encoding/json produces the same
// bytes as Firecracker's serde_json::to_string.
type Mapping struct {
	// BaseHostVirtAddr is where the region starts in Firecracker's address
	// space.
	BaseHostVirtAddr uint64 `json:"base_host_virt_addr"`
	// Size is the region's length in bytes.
	Size uint64 `json:"size"`
	// Offset is where the region's contents start in the memory file.
	Offset uint64 `json:"offset"`
	// PageSize is the page size of the region in bytes: the base page size,
	// or 2 MiB for hugetlbfs-backed guests.
	PageSize uint64 `json:"page_size"`
	// PageSizeKiB is the deprecated twin of PageSize. Despite its name it
	// holds bytes too: Firecracker sends the same value in both.
	PageSizeKiB uint64 `json:"page_size_kib"`
}

// End returns the first address after the region.
func (m Mapping) End() uint64 { return m.BaseHostVirtAddr + m.Size }

func (m Mapping) String() string {
	return fmt.Sprintf("[%#x, %#x) offset %#x page %d", m.BaseHostVirtAddr, m.End(), m.Offset, m.PageSize)
}

// ByAddress returns a copy of ms sorted by guest address.
func ByAddress(ms []Mapping) []Mapping {
	s := slices.Clone(ms)
	slices.SortFunc(s, func(a, b Mapping) int { return cmp.Compare(a.BaseHostVirtAddr, b.BaseHostVirtAddr) })
	return s
}

// Describe lists regions for a log line: the first 8, then how many more.
func Describe(ms []Mapping) string {
	var sb strings.Builder
	for i, m := range ms {
		if i > 0 {
			sb.WriteString(", ")
		}
		if i == 8 {
			fmt.Fprintf(&sb, "... (%d more)", len(ms)-i)
			break
		}
		sb.WriteString(m.String())
	}
	return sb.String()
}

// rawMapping decodes one mapping with every field optional, to tell a
// missing field from a zero.
type rawMapping struct {
	BaseHostVirtAddr *uint64 `json:"base_host_virt_addr"`
	Size             *uint64 `json:"size"`
	Offset           *uint64 `json:"offset"`
	PageSize         *uint64 `json:"page_size"`
	PageSizeKiB      *uint64 `json:"page_size_kib"`
}

// ParseMappings decodes and checks the syntax of a handshake message: a
// JSON array of at least one object, each with base_host_virt_addr, size
// and offset as non-negative integers. page_size and page_size_kib are
// optional (Firecracker before 1.7 sends neither; the base page size is
// then meant), and must agree when both are present. Unknown fields are
// ignored. Trailing bytes other than white space are an error.
//
// ParseMappings does not check the regions against each other or a memory
// file: see Validate.
func ParseMappings(b []byte) ([]Mapping, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var raw []rawMapping
	if err := dec.Decode(&raw); err != nil {
		return nil, jsonError(err)
	}
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		return nil, reject(ReasonTrailing, "%d unexpected bytes after the mappings (%q)", len(rest), abbreviate(rest))
	}
	return fromRaw(raw)
}

func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return reject(ReasonTruncated, "no message")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return reject(ReasonTruncated, "the message ends in the middle of the JSON array")
	case errors.As(err, &syn):
		return reject(ReasonJSON, "not valid JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return reject(ReasonJSON, "field %s: JSON %s is not a %v", typ.Field, typ.Value, typ.Type)
		}
		return reject(ReasonJSON, "want a JSON array of region objects, got a JSON %s", typ.Value)
	}
	return reject(ReasonJSON, "%v", err)
}

func fromRaw(raw []rawMapping) ([]Mapping, error) {
	if raw == nil {
		return nil, reject(ReasonJSON, "want a JSON array of region objects, got null")
	}
	if len(raw) == 0 {
		return nil, reject(ReasonRegion, "no regions")
	}
	out := make([]Mapping, len(raw))
	for i, r := range raw {
		var missing []string
		if r.BaseHostVirtAddr == nil {
			missing = append(missing, "base_host_virt_addr")
		}
		if r.Size == nil {
			missing = append(missing, "size")
		}
		if r.Offset == nil {
			missing = append(missing, "offset")
		}
		if len(missing) > 0 {
			return nil, reject(ReasonJSON, "region %d: missing %v", i, missing)
		}
		m := Mapping{BaseHostVirtAddr: *r.BaseHostVirtAddr, Size: *r.Size, Offset: *r.Offset}
		switch {
		case r.PageSize != nil && r.PageSizeKiB != nil && *r.PageSize != *r.PageSizeKiB:
			return nil, reject(ReasonPageSize, "region %d: page_size %d and page_size_kib %d disagree (both hold bytes)", i, *r.PageSize, *r.PageSizeKiB)
		case r.PageSize != nil:
			m.PageSize = *r.PageSize
		case r.PageSizeKiB != nil:
			m.PageSize = *r.PageSizeKiB
		default:
			m.PageSize = uint64(os.Getpagesize())
		}
		m.PageSizeKiB = m.PageSize
		out[i] = m
	}
	return out, nil
}

func abbreviate(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
