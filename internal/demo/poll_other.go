//go:build !unix

package demo

import (
	"errors"
	"os"
)

// pollNow fails where there is no poll(2) (nor a userfaultfd to poll).
func pollNow(fd uintptr) (pollResult, error) {
	return pollResult{}, os.NewSyscallError("poll", errors.ErrUnsupported)
}
