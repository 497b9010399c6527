//go:build !linux

package mem

import (
	"fmt"
	"runtime"
)

// Map fails outside Linux: the memory kinds here are Linux's (memfd_create,
// hugetlbfs), and so is userfaultfd.
func Map(kind Kind, size int) (*Mapping, error) {
	return nil, fmt.Errorf("mem: %s mapping of %d bytes: not supported on %s (Linux-only)", kind, size, runtime.GOOS)
}

// Drop fails outside Linux.
func (m *Mapping) Drop(off, n int) error {
	return fmt.Errorf("mem: Drop: not supported on %s (Linux-only)", runtime.GOOS)
}

// Close does nothing outside Linux, where no Mapping can be made.
func (m *Mapping) Close() error { return nil }
