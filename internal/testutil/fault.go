//go:build linux

package testutil

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Faults the way production takes them: a VM's vCPU or another process
// faults without Go code on the faulting side, and a Go program that
// reads a file into registered memory faults inside read(2). A goroutine
// that faults on registered memory in Go code, served by another goroutine
// of the same process, can hang the whole process in a garbage collection
// (the stop-the-world waits for the faulting goroutine, which waits for
// the stopped server). A goroutine blocked in a system call does not hold
// up a stop-the-world, so these helpers touch registered memory only from
// inside write(2) and read(2) on a pipe: the kernel takes the fault, the
// goroutine is in a system call meanwhile.
//
// They need the fault to reach the handler from kernel mode: a userfaultfd
// opened with UserModeOnly makes them fail with EFAULT (tests of that mode
// fault from Go code on purpose).

// pipeChunk is what one write(2) moves through the pipe: its default
// capacity, so that a write never waits for a reader.
const pipeChunk = 64 << 10

// KernelRead copies src into dst (up to the shorter length) through a
// pipe: the kernel reads src inside write(2), taking its read faults, and
// writes dst inside read(2), taking its write faults. Either may be
// registered memory. It returns the bytes copied.
func KernelRead(dst, src []byte) (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("testutil: pipe2: %w", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	n := min(len(dst), len(src))
	done := 0
	for done < n {
		chunk := min(n-done, pipeChunk)
		w, err := retry(func() (int, error) { return unix.Write(p[1], src[done:done+chunk]) })
		if err != nil {
			return done, fmt.Errorf("testutil: write(2) of %d bytes at %p into a pipe: %w", chunk, &src[done], err)
		}
		for got := 0; got < w; {
			r, err := retry(func() (int, error) { return unix.Read(p[0], dst[done+got:done+w]) })
			if err != nil {
				return done + got, fmt.Errorf("testutil: read(2) of %d bytes from a pipe into %p: %w", w-got, &dst[done+got], err)
			}
			if r == 0 {
				return done + got, errors.New("testutil: read(2) from a pipe: end of file")
			}
			got += r
		}
		done += w
	}
	return done, nil
}

// KernelLoad returns p[i], read by the kernel inside write(2): a read
// fault on p's page is taken in kernel mode.
func KernelLoad(p []byte, i int) (byte, error) {
	var b [1]byte
	_, err := KernelRead(b[:], p[i:i+1])
	return b[0], err
}

// KernelStore stores v in p[i] from inside read(2): a write fault (or a
// write-protect fault) on p's page is taken in kernel mode.
func KernelStore(p []byte, i int, v byte) error {
	b := [1]byte{v}
	_, err := KernelRead(p[i:i+1], b[:])
	return err
}

// KernelCopyOut returns a copy of p read by the kernel (KernelRead into a
// buffer of the Go heap): every read fault on p is taken in kernel mode.
func KernelCopyOut(p []byte) ([]byte, error) {
	out := make([]byte, len(p))
	n, err := KernelRead(out, p)
	return out[:n], err
}

// retry repeats a system call interrupted by a signal.
func retry(call func() (int, error)) (int, error) {
	for {
		n, err := call()
		if err != unix.EINTR {
			return n, err
		}
	}
}
