package uffd

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// ErrClosed is returned by every operation on a closed UFFD, including a
// read that was blocked when Close was called.
var ErrClosed = os.ErrClosed

// ErrNotSupported is matched (errors.Is) by every error that reports a
// feature, ioctl or operating system that the running kernel lacks. The
// concrete error is a *NotSupportedError naming what is missing.
var ErrNotSupported = errors.New("not supported")

// NotSupportedError names what the kernel (or the operating system) lacks.
type NotSupportedError struct {
	// What is missing, in words ("features Move (UFFD_FEATURE_MOVE, Linux 6.8)").
	What string
	// Features lists the missing features, when features are what is missing.
	Features Feature
	// OS is set (to runtime.GOOS) when the operating system is not Linux:
	// then nothing of What exists at all.
	OS string
}

func (e *NotSupportedError) Error() string {
	if e.OS != "" {
		return "uffd: " + e.What + " is Linux-only (this is " + e.OS + ")"
	}
	return "uffd: " + e.What + " not supported by this kernel"
}

// Is makes errors.Is(err, ErrNotSupported) true.
func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }

func missingFeatures(missing Feature) *NotSupportedError {
	var parts []string
	for _, f := range Features() {
		if missing.Has(f) {
			parts = append(parts, fmt.Sprintf("%s (%s, Linux %s)", f, f.KernelName(), f.Since()))
		}
	}
	if unknown := missing &^ AllFeatures; unknown != 0 {
		parts = append(parts, fmt.Sprintf("unknown bits %#x", uint64(unknown)))
	}
	return &NotSupportedError{What: "features " + strings.Join(parts, ", "), Features: missing}
}

// errnoError is a sentinel that explains an errno in userfaultfd's terms and
// still matches the errno with errors.Is.
type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.msg }
func (e *errnoError) Unwrap() error { return e.errno }

// Errors of the resolving ioctls. Each matches its errno too:
// errors.Is(err, ErrPageExists) and errors.Is(err, unix.EEXIST) are both
// true for a page that another resolver filled first.
var (
	// ErrPageExists (EEXIST): the page is already populated, usually
	// because another resolver won a race for it. The faulting thread may
	// still be waiting: Wake the range and carry on.
	ErrPageExists error = &errnoError{"page already populated (EEXIST)", syscall.EEXIST}
	// ErrProcessGone (ESRCH): the process whose memory is registered has
	// exited; nothing more can be resolved on this userfaultfd.
	ErrProcessGone error = &errnoError{"the registered process has exited (ESRCH)", syscall.ESRCH}
	// ErrNoMapping (ENOENT): no registered mapping covers the destination
	// (it was unmapped or unregistered), or, for Move, a source page is
	// missing and AllowSrcHoles was not given.
	ErrNoMapping error = &errnoError{"no registered mapping or no source page there (ENOENT)", syscall.ENOENT}
	// ErrMmapChanging (EAGAIN, nothing done): a non-cooperative event
	// (fork, mremap, madvise, munmap) is pending. Read the events first,
	// then retry; the process that changes its layout waits until then.
	ErrMmapChanging error = &errnoError{"memory layout is changing; read pending events, then retry (EAGAIN)", syscall.EAGAIN}
	// ErrPartial (EAGAIN, some bytes done): only part of the range was
	// resolved; the count returned says how much. Retry the rest.
	ErrPartial error = &errnoError{"only part of the range was resolved (EAGAIN)", syscall.EAGAIN}
)

// OpError is the error of one userfaultfd operation. It names the operation
// and the range, and unwraps to a sentinel above or to the raw errno.
type OpError struct {
	Op   string  // kernel name of the operation, e.g. "UFFDIO_COPY"
	Addr uintptr // start of the range (destination for copies and moves)
	Len  uintptr // length of the range
	Done int     // bytes resolved before the error
	Err  error
}

func (e *OpError) Error() string {
	var sb strings.Builder
	sb.WriteString("uffd: ")
	sb.WriteString(e.Op)
	if e.Len != 0 {
		fmt.Fprintf(&sb, " [%#x, +%#x)", e.Addr, e.Len)
	}
	if e.Done > 0 {
		fmt.Fprintf(&sb, " after %d bytes", e.Done)
	}
	sb.WriteString(": ")
	sb.WriteString(e.Err.Error())
	return sb.String()
}

func (e *OpError) Unwrap() error { return e.Err }

// argError is an argument rejected before the system call. It matches
// EINVAL, the errno the kernel would have returned.
type argError string

func (e argError) Error() string { return "invalid argument: " + string(e) }
func (e argError) Is(target error) bool {
	return target == syscall.EINVAL
}

// opErr decodes the errno of a resolving ioctl into an *OpError. done is the
// kernel's result field, already clamped to be non-negative.
func opErr(op string, addr, length uintptr, done int, errno syscall.Errno) error {
	var err error = errno
	switch errno {
	case syscall.EBADF:
		// UFFD.ioctl's answer once Close was called: the descriptor is
		// otherwise open for as long as the ioctl runs.
		err = ErrClosed
	case syscall.EEXIST:
		err = ErrPageExists
	case syscall.ESRCH:
		err = ErrProcessGone
	case syscall.ENOENT:
		err = ErrNoMapping
	case syscall.EAGAIN:
		if done > 0 {
			err = ErrPartial
		} else {
			err = ErrMmapChanging
		}
	}
	return &OpError{Op: op, Addr: addr, Len: length, Done: done, Err: err}
}
