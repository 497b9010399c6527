package pager

import (
	"os"

	"golang.org/x/sys/unix"
)

func mapFile(f *os.File, size int) ([]byte, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	// Faults read it in ascending runs: ask for readahead.
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	return data, nil
}

func unmapFile(b []byte) error { return unix.Munmap(b) }
