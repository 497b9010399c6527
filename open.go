package uffd

import "sync"

// Path says how a userfaultfd is (or was) created.
type Path int

const (
	// PathAuto tries the userfaultfd(2) system call and, when that is
	// refused with EPERM, the /dev/userfaultfd device.
	PathAuto Path = iota
	// PathSyscall uses the userfaultfd(2) system call only.
	PathSyscall
	// PathDevice uses the /dev/userfaultfd device (USERFAULTFD_IOC_NEW,
	// Linux 6.1) only.
	PathDevice
	// PathFork marks a descriptor received with a fork event.
	PathFork
	// PathAdopted marks a descriptor created elsewhere and adopted with
	// FromFD (received over a UNIX socket, inherited, or taken from another
	// process with pidfd_getfd).
	PathAdopted
)

func (p Path) String() string {
	switch p {
	case PathAuto:
		return "auto"
	case PathSyscall:
		return "syscall"
	case PathDevice:
		return "device"
	case PathFork:
		return "fork"
	case PathAdopted:
		return "adopted"
	}
	return "Path(?)"
}

// DefaultDevice is where the userfaultfd device lives.
const DefaultDevice = "/dev/userfaultfd"

// Config holds the options of Open. The zero value asks for no optional
// features, close-on-exec, kernel-mode faults handled, and PathAuto.
type Config struct {
	// Features to enable. Open fails with an error matching ErrNotSupported,
	// naming each missing feature, when the kernel lacks any of them.
	Features Feature
	// UserModeOnly creates the descriptor with UFFD_USER_MODE_ONLY: faults
	// taken in kernel mode (a read(2) into a registered buffer) then fail
	// with EFAULT instead of reaching the handler. Unprivileged processes
	// may use userfaultfd(2) this way even when vm.unprivileged_userfaultfd
	// is 0. On kernels before 5.11, which reject the flag, Open retries
	// without it; UFFD.UserModeOnly reports the outcome.
	UserModeOnly bool
	// KeepOnExec leaves close-on-exec off, so that the descriptor survives
	// execve(2). Off by default.
	KeepOnExec bool
	// Path chooses how the descriptor is created; PathAuto by default.
	Path Path
	// Device is the userfaultfd device; DefaultDevice when empty.
	Device string
}

func (c *Config) device() string {
	if c.Device == "" {
		return DefaultDevice
	}
	return c.Device
}

// Support is what the kernel offers, as a probe found it.
type Support struct {
	// API is the API version (always 0xAA).
	API uint64
	// Features lists every feature the kernel offers.
	Features Feature
	// Ioctls lists the ioctls of a userfaultfd descriptor. The resolving
	// ioctls depend on the registered range; see Register.
	Ioctls Ioctl
	// Path is how the probe's descriptor was created.
	Path Path
}

var probeCache struct {
	sync.Mutex
	ok  bool
	sup Support
}

// Probe reports what the kernel offers. It performs the first step of the
// two-step handshake on a throwaway descriptor (a second UFFDIO_API on one
// descriptor is refused: ioctl_userfaultfd(2), BUGS) and closes it. A
// successful answer is cached for the life of the process; a failure is
// not, so a later call may succeed once permissions change.
func Probe() (Support, error) {
	probeCache.Lock()
	defer probeCache.Unlock()
	if probeCache.ok {
		return probeCache.sup, nil
	}
	sup, err := probe(&Config{})
	if err != nil {
		return Support{}, err
	}
	probeCache.ok, probeCache.sup = true, sup
	return sup, nil
}

// ProbePath is Probe on one creation path, uncached: it tells whether that
// path works for this process, and why not.
func ProbePath(p Path) (Support, error) {
	return ProbeConfig(Config{Path: p})
}

// ProbeConfig is Probe with the creation options of cfg (Path, Device,
// UserModeOnly; Features are ignored), uncached: it tells whether Open with
// those options would work for this process, and why not.
func ProbeConfig(cfg Config) (Support, error) {
	cfg.Features = 0
	return probe(&cfg)
}
