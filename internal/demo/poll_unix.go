//go:build unix

package demo

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// pollNow calls poll(2) on fd for input with a zero timeout.
func pollNow(fd uintptr) (pollResult, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Poll(fds, 0)
	}
	if err != nil {
		return pollResult{}, os.NewSyscallError("poll", err)
	}
	return pollResult{nready: n, in: fds[0].Revents&unix.POLLIN != 0, err: fds[0].Revents&unix.POLLERR != 0}, nil
}
