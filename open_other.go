//go:build !linux

package uffd

import "runtime"

// errNotLinux is what every way of creating a userfaultfd returns outside
// Linux. It matches ErrNotSupported.
var errNotLinux = &NotSupportedError{What: "userfaultfd", OS: runtime.GOOS}

// Open fails outside Linux with an error matching ErrNotSupported.
func Open(cfg Config) (*UFFD, error) { return nil, errNotLinux }

func probe(cfg *Config) (Support, error) { return Support{}, errNotLinux }

func setNonblock(fd int) {}

func dupFd(fd int) (int, error) { return -1, errNotLinux }

func closeFd(fd int) {}

// FromFD fails outside Linux with an error matching ErrNotSupported.
func FromFD(fd int, features Feature) (*UFFD, error) { return nil, errNotLinux }
