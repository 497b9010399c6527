package uffd

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/internal/abi"
)

// featureInitialized is the kernel's internal mark of a finished handshake
// in ctx->features, as /proc/self/fdinfo shows it (Linux 6.1+).
const featureInitialized = 1 << 31

// FromFD adopts fd, a userfaultfd created elsewhere: received over a UNIX
// socket (Firecracker sends its own this way), inherited, or taken from
// another process with pidfd_getfd(2). It takes ownership of fd and closes
// it on error.
//
// FromFD checks that fd is a userfaultfd and reads its state from
// /proc/self/fdinfo. When the other side already did the UFFDIO_API
// handshake (the kernel allows only one), the features it enabled are
// adopted and features must be a subset of them; otherwise FromFD does the
// handshake itself, enabling features. The descriptor is switched to
// non-blocking mode, which the owner of the same open file sees too.
func FromFD(fd int, features Feature) (*UFFD, error) {
	u, err := fromFD(fd, features)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return u, nil
}

func fromFD(fd int, features Feature) (*UFFD, error) {
	const op = "adopt"
	if fd < 0 {
		return nil, &OpError{Op: op, Err: argError(fmt.Sprintf("bad descriptor %d", fd))}
	}
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return nil, &OpError{Op: op, Err: fmt.Errorf("descriptor %d: %w", fd, err)}
	}
	if target != "anon_inode:[userfaultfd]" {
		return nil, &OpError{Op: op, Err: argError(fmt.Sprintf("descriptor %d is %s, not a userfaultfd", fd, target))}
	}
	state, ioctls, err := readFdinfo(fd)
	if err != nil {
		return nil, &OpError{Op: op, Err: err}
	}
	available := features
	if sup, err := Probe(); err == nil {
		available = sup.Features
	}
	if state&featureInitialized == 0 {
		api := abi.UffdioAPI{API: abi.API, Features: uint64(features)}
		if errno := abi.Ioctl(fd, abi.UFFDIO_API, unsafe.Pointer(&api)); errno != 0 {
			return nil, handshakeError(features, errno)
		}
		enabled := features
		if enabled.Has(FeatureWPAsync) {
			enabled |= FeatureWPUnpopulated
		}
		return newUFFD(fd, enabled, Feature(api.Features), Ioctl(api.Ioctls), false, PathAdopted)
	}
	enabled := Feature(state &^ featureInitialized)
	if missing := features &^ enabled; missing != 0 {
		return nil, &OpError{Op: op, Err: fmt.Errorf("the descriptor's handshake did not enable %w", missingFeatures(missing))}
	}
	if available&enabled != enabled {
		available |= enabled
	}
	return newUFFD(fd, enabled, available, Ioctl(ioctls), false, PathAdopted)
}

// readFdinfo returns the ctx->features word and the ioctls the kernel
// shows for a userfaultfd in /proc/self/fdinfo
// ("API:\t<api>:<features>:<ioctls>").
func readFdinfo(fd int) (features, ioctls uint64, err error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "API:")
		if !ok {
			continue
		}
		parts := strings.Split(strings.TrimSpace(rest), ":")
		if len(parts) != 3 {
			break
		}
		f, err1 := strconv.ParseUint(parts[1], 16, 64)
		i, err2 := strconv.ParseUint(parts[2], 16, 64)
		if err1 != nil || err2 != nil {
			break
		}
		return f, i, nil
	}
	return 0, 0, fmt.Errorf("descriptor %d: no userfaultfd API line in /proc/self/fdinfo", fd)
}
