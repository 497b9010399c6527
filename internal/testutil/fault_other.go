//go:build !linux

package testutil

import (
	"fmt"
	"runtime"
)

var errNotLinux = fmt.Errorf("testutil: faults inside system calls on registered memory: Linux-only (this is %s)", runtime.GOOS)

// KernelRead fails outside Linux, where nothing is registered.
func KernelRead(dst, src []byte) (int, error) { return 0, errNotLinux }

// KernelLoad fails outside Linux.
func KernelLoad(p []byte, i int) (byte, error) { return 0, errNotLinux }

// KernelStore fails outside Linux.
func KernelStore(p []byte, i int, v byte) error { return errNotLinux }

// KernelCopyOut fails outside Linux.
func KernelCopyOut(p []byte) ([]byte, error) { return nil, errNotLinux }
