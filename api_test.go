package uffd_test

// The UFFDIO_API preamble of the kernel's uffd-unit-tests.c (test_uffd_api),
// plus what the library builds on it: Probe and Open's feature negotiation.

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/abi"
	"github.com/gouffd/uffd/internal/testutil"
)

// selftRawFD creates a userfaultfd without the library's handshake, through
// the system call or the device, closed when the test ends.
func selftRawFD(t *testing.T, dev bool) int {
	t.Helper()
	flags := unix.O_CLOEXEC | unix.O_NONBLOCK
	var fd int
	var err error
	if dev {
		d, derr := unix.Open(uffd.DefaultDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(derr, unix.ENOENT) {
			testutil.Skipf(t, "no %s (needs Linux 6.1 with CONFIG_USERFAULTFD): %v", uffd.DefaultDevice, derr)
		}
		if derr != nil {
			t.Fatalf("open %s: %v", uffd.DefaultDevice, derr)
		}
		fd, err = abi.DevNew(d, flags)
		unix.Close(d)
	} else {
		fd, err = abi.Userfaultfd(flags)
	}
	if errors.Is(err, unix.EPERM) {
		testutil.Skipf(t, "creating a userfaultfd needs privilege here: %v", err)
	}
	if err != nil {
		t.Fatalf("create userfaultfd (dev=%v): %v", dev, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func selftAPI(fd int, api *abi.UffdioAPI) unix.Errno {
	return abi.Ioctl(fd, abi.UFFDIO_API, unsafe.Pointer(api))
}

// TestSelftestAPIRaw follows test_uffd_api on both creation paths: a wrong
// API version and an unknown feature bit are refused without initializing
// the descriptor, the proper handshake then works and reports the
// descriptor's ioctls, and a second handshake is refused.
func TestSelftestAPIRaw(t *testing.T) {
	for _, dev := range []bool{false, true} {
		name := "syscall"
		if dev {
			name = "device"
		}
		t.Run(name, func(t *testing.T) {
			fd := selftRawFD(t, dev)

			// Wrong API version. On failure the kernel zeroes the answer.
			api := abi.UffdioAPI{API: 0xAB, Features: 0, Ioctls: 0xdead}
			if errno := selftAPI(fd, &api); errno != unix.EINVAL {
				t.Fatalf("UFFDIO_API with api 0xAB: errno %v, want EINVAL", errno)
			}
			if api != (abi.UffdioAPI{}) {
				t.Errorf("UFFDIO_API with a bad api left %+v, want it zeroed", api)
			}

			// Unknown feature bit.
			api = abi.UffdioAPI{API: abi.API, Features: 1 << 63}
			if errno := selftAPI(fd, &api); errno != unix.EINVAL {
				t.Fatalf("UFFDIO_API with feature bit 63: errno %v, want EINVAL", errno)
			}

			// The failures above did not initialize it: a good handshake works.
			api = abi.UffdioAPI{API: abi.API}
			if errno := selftAPI(fd, &api); errno != 0 {
				t.Fatalf("UFFDIO_API after refused ones: %v", errno)
			}
			if api.API != abi.API {
				t.Errorf("api = %#x, want %#x", api.API, abi.API)
			}
			want := uint64(uffd.IoctlRegister | uffd.IoctlUnregister | uffd.IoctlAPI)
			if api.Ioctls&want != want {
				t.Errorf("ioctls = %v, want at least %v", uffd.Ioctl(api.Ioctls), uffd.Ioctl(want))
			}
			if api.Features&uint64(uffd.AllFeatures) == 0 {
				t.Errorf("features = %#x, want the kernel's feature list", api.Features)
			}

			// A second handshake on an initialized descriptor.
			api = abi.UffdioAPI{API: abi.API, Features: uint64(uffd.FeatureWPFaults)}
			if errno := selftAPI(fd, &api); errno != unix.EINVAL {
				t.Fatalf("second UFFDIO_API: errno %v, want EINVAL", errno)
			}
		})
	}
}

// TestSelftestAPIUnknownFeature asks Open for bits the package does not
// know: refused as not supported, naming the handshake.
func TestSelftestAPIUnknownFeature(t *testing.T) {
	for _, f := range []uffd.Feature{1 << 40, 1 << 63, uffd.AllFeatures + 1} {
		u, err := uffd.Open(uffd.Config{Features: f})
		if err == nil {
			u.Close()
			t.Errorf("Open with features %v succeeded", f)
			continue
		}
		if !errors.Is(err, uffd.ErrNotSupported) {
			t.Errorf("Open with features %v: %v, want ErrNotSupported", f, err)
		}
		var op *uffd.OpError
		if !errors.As(err, &op) || op.Op != "UFFDIO_API" {
			t.Errorf("Open with features %v: %v, want an *OpError of UFFDIO_API", f, err)
		}
		var ns *uffd.NotSupportedError
		if !errors.As(err, &ns) || ns.Features&f == 0 {
			t.Errorf("Open with features %v: %v, want a NotSupportedError naming the bits", f, err)
		}
	}
}

// TestSelftestAPISecondHandshake sends UFFDIO_API again on a descriptor Open
// already initialized: EINVAL.
func TestSelftestAPISecondHandshake(t *testing.T) {
	u := openUFFD(t, 0)
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, features := range []uffd.Feature{0, uffd.FeatureWPFaults} {
		var errno unix.Errno
		api := abi.UffdioAPI{API: abi.API, Features: uint64(features)}
		if err := rc.Control(func(fd uintptr) { errno = selftAPI(int(fd), &api) }); err != nil {
			t.Fatal(err)
		}
		if errno != unix.EINVAL {
			t.Errorf("second UFFDIO_API (features %v): errno %v, want EINVAL", features, errno)
		}
	}
}

// selftKernelAtLeast reports whether the running kernel is at least
// version v ("6.8").
func selftKernelAtLeast(t *testing.T, v string) bool {
	t.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	have := selftParseVersion(t, unix.ByteSliceToString(uts.Release[:]))
	want := selftParseVersion(t, v)
	if have[0] != want[0] {
		return have[0] > want[0]
	}
	return have[1] >= want[1]
}

func selftParseVersion(t *testing.T, s string) [2]int {
	t.Helper()
	var out [2]int
	parts := strings.SplitN(s, ".", 3)
	for i := 0; i < 2 && i < len(parts); i++ {
		digits := parts[i]
		if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			digits = digits[:j]
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			t.Fatalf("parse kernel version %q: %v", s, err)
		}
		out[i] = n
	}
	return out
}

// TestSelftestProbeFeatures checks that Probe (and each creation path)
// reports every feature the running kernel's version has.
func TestSelftestProbeFeatures(t *testing.T) {
	sup, err := uffd.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if sup.API != abi.API {
		t.Errorf("API = %#x, want %#x", sup.API, abi.API)
	}
	if want := uffd.IoctlRegister | uffd.IoctlUnregister | uffd.IoctlAPI; !sup.Ioctls.Has(want) {
		t.Errorf("Ioctls = %v, want at least %v", sup.Ioctls, want)
	}
	for i, f := range uffd.Features() {
		if f != 1<<i {
			t.Fatalf("Features()[%d] = %v, want bit %d", i, f, i)
		}
		if !selftKernelAtLeast(t, f.Since()) {
			t.Logf("%v (%s) is newer than this kernel (Linux %s)", f, f.KernelName(), f.Since())
			continue
		}
		if !sup.Features.Has(f) {
			t.Errorf("Probe lacks feature bit %d %v (%s, Linux %s) on a kernel that has it", i, f, f.KernelName(), f.Since())
		}
	}
	if len(uffd.Features()) != 17 {
		t.Errorf("package knows %d features, want 17 (bits 0..16)", len(uffd.Features()))
	}
	for _, p := range []uffd.Path{uffd.PathSyscall, uffd.PathDevice} {
		ps, err := uffd.ProbePath(p)
		if err != nil {
			t.Errorf("ProbePath(%v): %v", p, err)
			continue
		}
		if ps.Features != sup.Features || ps.Path != p {
			t.Errorf("ProbePath(%v) = features %v path %v, want %v on %v", p, ps.Features, ps.Path, sup.Features, p)
		}
	}
}

// TestSelftestOpenFeatures opens with each single feature, none and all,
// and checks that exactly those are enabled (WPAsync brings WPUnpopulated,
// as the kernel does) while Available reports the kernel's list.
func TestSelftestOpenFeatures(t *testing.T) {
	sup, err := uffd.Probe()
	if err != nil {
		t.Fatal(err)
	}
	sets := []uffd.Feature{0, sup.Features}
	for _, f := range uffd.Features() {
		if sup.Features.Has(f) {
			sets = append(sets, f)
		}
	}
	sets = append(sets, uffd.FeatureMissingShmem|uffd.FeatureMissingHugetlbfs|uffd.FeatureWPFaults)
	for _, want := range sets {
		u, err := uffd.Open(uffd.Config{Features: want})
		if err != nil {
			t.Errorf("Open(%v): %v", want, err)
			continue
		}
		expect := want
		if want.Has(uffd.FeatureWPAsync) {
			expect |= uffd.FeatureWPUnpopulated
		}
		if got := u.Features(); got != expect {
			t.Errorf("Open(%v).Features() = %v, want %v", want, got, expect)
		}
		if got := u.Available(); got != sup.Features {
			t.Errorf("Open(%v).Available() = %v, want %v", want, got, sup.Features)
		}
		if !u.Ioctls().Has(uffd.IoctlRegister | uffd.IoctlUnregister | uffd.IoctlAPI) {
			t.Errorf("Open(%v).Ioctls() = %v", want, u.Ioctls())
		}
		if err := u.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}
