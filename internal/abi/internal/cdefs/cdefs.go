//go:build cgo && linux

// Package cdefs reports the userfaultfd and PAGEMAP_SCAN ABI as the
// installed C headers (<linux/userfaultfd.h>, <linux/fs.h>) define it, for
// internal/abi's tests, which may not use cgo themselves. It is not used
// by the library.
package cdefs

// #include "cdefs.h"
import "C"

import "unsafe"

// Available reports whether the C headers could be read (cgo is on).
const Available = true

// Def is one value from the headers.
type Def struct {
	Value uint64
	// Present is false when the headers are too old to have it.
	Present bool
}

// Defs maps names to the headers' values: constants by their C name
// ("UFFDIO_COPY", "_UFFDIO_COPY"); struct sizes as "sizeof(uffdio_copy)";
// field offsets as "offsetof(uffdio_copy, len)" or
// "offsetof(uffd_msg, arg.pagefault.address)"; field sizes as
// "sizeof(uffdio_copy.len)"; and, for integer fields, "signed(uffdio_copy.copy)"
// (1 for __s64). LINUX_VERSION_CODE is the headers' version.
var Defs = func() map[string]Def {
	table := unsafe.Slice(C.cdefs_table(), C.cdefs_len())
	m := make(map[string]Def, len(table))
	for _, d := range table {
		m[C.GoString(d.name)] = Def{Value: uint64(d.value), Present: d.present != 0}
	}
	return m
}()
