//go:build !linux

package pager

import (
	"errors"
	"os"
)

func mapFile(f *os.File, size int) ([]byte, error) {
	return nil, errors.New("pager: mapping files is implemented on Linux only")
}

func unmapFile(b []byte) error { return nil }
