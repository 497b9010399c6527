//go:build !linux

package pager

import "github.com/gouffd/uffd"

// AllowedCPUs returns the CPUs the process may run on, as the default
// engine uses them.
func AllowedCPUs() ([]int, error) { return nil, uffd.ErrNotSupported }
