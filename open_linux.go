package uffd

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/internal/abi"
)

// Open creates a userfaultfd and performs the UFFDIO_API handshake,
// enabling exactly cfg.Features. The zero Config asks for no optional
// feature, on the first creation path that works.
//
// The descriptor is always non-blocking and handed to the Go runtime's
// poller. When neither creation path works, the error says why and what to
// change (the vm.unprivileged_userfaultfd sysctl, CAP_SYS_PTRACE, the
// device's permissions).
func Open(cfg Config) (*UFFD, error) {
	if unknown := cfg.Features &^ AllFeatures; unknown != 0 {
		return nil, &OpError{Op: "UFFDIO_API", Err: missingFeatures(unknown)}
	}
	// A cached probe lets us name missing features before creating anything.
	probeCache.Lock()
	sup, known := probeCache.sup, probeCache.ok
	probeCache.Unlock()
	if known {
		if missing := cfg.Features &^ sup.Features; missing != 0 {
			return nil, &OpError{Op: "UFFDIO_API", Err: missingFeatures(missing)}
		}
	}
	fd, userModeOnly, path, err := create(&cfg)
	if err != nil {
		return nil, err
	}
	api := abi.UffdioAPI{API: abi.API, Features: uint64(cfg.Features)}
	if errno := abi.Ioctl(fd, abi.UFFDIO_API, unsafe.Pointer(&api)); errno != 0 {
		unix.Close(fd)
		return nil, handshakeError(cfg.Features, errno)
	}
	enabled := cfg.Features
	if enabled.Has(FeatureWPAsync) {
		enabled |= FeatureWPUnpopulated // the kernel implies it
	}
	return newUFFD(fd, enabled, Feature(api.Features), Ioctl(api.Ioctls), userModeOnly, path)
}

// handshakeError explains a failed UFFDIO_API.
func handshakeError(want Feature, errno syscall.Errno) error {
	opErr := &OpError{Op: "UFFDIO_API", Err: errno}
	switch errno {
	case unix.EPERM:
		if want.Has(FeatureEventFork) {
			opErr.Err = fmt.Errorf("%w: FeatureEventFork needs CAP_SYS_PTRACE", errno)
		}
	case unix.EINVAL:
		// Name the missing features, if that is what it was.
		if sup, err := Probe(); err == nil {
			if missing := want &^ sup.Features; missing != 0 {
				opErr.Err = missingFeatures(missing)
			} else {
				opErr.Err = fmt.Errorf("%w: the kernel refused features %v", errno, want)
			}
		}
	}
	return opErr
}

// setNonblock puts fd in non-blocking mode, as the poller needs.
func setNonblock(fd int) { unix.SetNonblock(fd, true) }

// dupFd duplicates fd, close-on-exec.
func dupFd(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

func closeFd(fd int) { unix.Close(fd) }

// probe opens a throwaway descriptor and asks for no features: the kernel
// answers with everything it offers.
func probe(cfg *Config) (Support, error) {
	fd, _, path, err := create(cfg)
	if err != nil {
		return Support{}, err
	}
	defer unix.Close(fd)
	api := abi.UffdioAPI{API: abi.API}
	if errno := abi.Ioctl(fd, abi.UFFDIO_API, unsafe.Pointer(&api)); errno != 0 {
		return Support{}, &OpError{Op: "UFFDIO_API", Err: errno}
	}
	return Support{API: api.API, Features: Feature(api.Features), Ioctls: Ioctl(api.Ioctls), Path: path}, nil
}

// create makes a descriptor along cfg's path, falling back from the system
// call to the device on EPERM under PathAuto, and retrying without
// UFFD_USER_MODE_ONLY where the kernel rejects it.
func create(cfg *Config) (fd int, userModeOnly bool, path Path, err error) {
	flags := unix.O_NONBLOCK
	if !cfg.KeepOnExec {
		flags |= unix.O_CLOEXEC
	}
	try := func(p Path, umo bool) (int, error) {
		f := flags
		if umo {
			f |= abi.UserModeOnly
		}
		if p == PathSyscall {
			return abi.Userfaultfd(f)
		}
		dev, err := unix.Open(cfg.device(), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		defer unix.Close(dev)
		return abi.DevNew(dev, f)
	}
	// tryUMO tries with the user-mode-only flag when asked, and without it
	// when the kernel does not know the flag (EINVAL before 5.11).
	tryUMO := func(p Path) (int, bool, error) {
		if cfg.UserModeOnly {
			fd, err := try(p, true)
			if err != unix.EINVAL {
				return fd, err == nil, err
			}
		}
		fd, err := try(p, false)
		return fd, false, err
	}

	switch cfg.Path {
	case PathSyscall, PathDevice:
		fd, umo, err := tryUMO(cfg.Path)
		if err != nil {
			return -1, false, cfg.Path, openError(cfg, cfg.Path, err, nil)
		}
		return fd, umo, cfg.Path, nil
	case PathAuto:
		fd, umo, sysErr := tryUMO(PathSyscall)
		if sysErr == nil {
			return fd, umo, PathSyscall, nil
		}
		if sysErr != unix.EPERM {
			return -1, false, PathSyscall, openError(cfg, PathSyscall, sysErr, nil)
		}
		fd, umo, devErr := tryUMO(PathDevice)
		if devErr == nil {
			return fd, umo, PathDevice, nil
		}
		return -1, false, PathAuto, openError(cfg, PathAuto, sysErr, devErr)
	}
	return -1, false, cfg.Path, &OpError{Op: "open", Err: argError(fmt.Sprintf("unknown path %d", cfg.Path))}
}

// OpenError explains why no userfaultfd could be created.
type OpenError struct {
	Path       Path  // the path(s) tried
	SyscallErr error // userfaultfd(2)'s error, if tried
	DeviceErr  error // /dev/userfaultfd's error, if tried
	Hint       string
}

func (e *OpenError) Error() string {
	msg := "uffd: cannot create a userfaultfd:"
	if e.SyscallErr != nil {
		msg += " userfaultfd(2): " + e.SyscallErr.Error() + ";"
	}
	if e.DeviceErr != nil {
		msg += " " + e.DeviceErr.Error() + ";"
	}
	return msg + " " + e.Hint
}

// Unwrap returns the underlying errors, so errors.Is(err, unix.EPERM) works.
func (e *OpenError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.SyscallErr, e.DeviceErr} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func openError(cfg *Config, p Path, sysErr, devErr error) error {
	if p == PathDevice {
		sysErr, devErr = nil, sysErr
	}
	e := &OpenError{Path: p, SyscallErr: sysErr}
	if devErr != nil {
		e.DeviceErr = &os.PathError{Op: "open", Path: cfg.device(), Err: devErr}
	}
	var hints []string
	if errors.Is(sysErr, unix.EPERM) {
		hints = append(hints, "vm.unprivileged_userfaultfd is 0 and this process lacks CAP_SYS_PTRACE: run 'sysctl vm.unprivileged_userfaultfd=1', grant CAP_SYS_PTRACE, or set Config.UserModeOnly (then faults from inside system calls fail with EFAULT)")
	}
	if errors.Is(sysErr, unix.ENOSYS) {
		hints = append(hints, "this kernel has no userfaultfd(2) (CONFIG_USERFAULTFD is off, or a seccomp filter blocks it)")
	}
	switch {
	case devErr == nil:
	case errors.Is(devErr, unix.ENOENT):
		hints = append(hints, cfg.device()+" does not exist (Linux 6.1 or later with CONFIG_USERFAULTFD; or create it: mknod "+cfg.device()+" c 10 $(awk '$2==\"userfaultfd\"{print $1}' /proc/misc))")
	case errors.Is(devErr, unix.EACCES), errors.Is(devErr, unix.EPERM):
		hints = append(hints, "give this user read/write access to "+cfg.device()+" (for example a udev rule: KERNEL==\"userfaultfd\", MODE=\"0660\", GROUP=\"kvm\")")
	case errors.Is(devErr, unix.ENOTTY), errors.Is(devErr, unix.EINVAL):
		hints = append(hints, cfg.device()+" does not answer USERFAULTFD_IOC_NEW (needs Linux 6.1)")
	}
	if len(hints) == 0 {
		hints = append(hints, "see userfaultfd(2)")
	}
	for i, h := range hints {
		if i > 0 {
			e.Hint += "; "
		}
		e.Hint += h
	}
	return e
}
