package uffd_test

import (
	"errors"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// rawUFFD creates a userfaultfd the way another program (Firecracker) does:
// the system call, then, if features is not nil, the handshake.
func rawUFFD(t *testing.T, features *uffd.Feature) int {
	t.Helper()
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		t.Fatalf("userfaultfd: %v", errno)
	}
	if features != nil {
		// struct uffdio_api { __u64 api, features, ioctls; }
		api := [3]uint64{0xAA, uint64(*features), 0}
		const uffdioAPI = 0xc018aa3f
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPI, uintptr(unsafe.Pointer(&api))); errno != 0 {
			unix.Close(int(fd))
			t.Fatalf("UFFDIO_API: %v", errno)
		}
	}
	return int(fd)
}

func TestFromFDInitialized(t *testing.T) {
	want := uffd.FeatureEventRemove | uffd.FeatureThreadID
	u, err := uffd.FromFD(rawUFFD(t, &want), uffd.FeatureEventRemove)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Features() != want {
		t.Errorf("Features() = %v, want %v (read from fdinfo)", u.Features(), want)
	}
	if u.Path() != uffd.PathAdopted {
		t.Errorf("Path() = %v", u.Path())
	}
	// The adopted descriptor serves faults.
	m, err := mem.Map(mem.Anonymous, 2*mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	s := serve(t, u, copyPattern(u, m))
	if got := kernelLoad(t, "read a page registered with the adopted descriptor", m.Data, 1); got == 0 {
		t.Errorf("byte 1 = %d after the fault was served", got)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestFromFDHandshake(t *testing.T) {
	u, err := uffd.FromFD(rawUFFD(t, nil), uffd.FeatureEventUnmap)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if u.Features() != uffd.FeatureEventUnmap {
		t.Errorf("Features() = %v, want EventUnmap", u.Features())
	}
}

func TestFromFDRejects(t *testing.T) {
	t.Run("missing feature", func(t *testing.T) {
		none := uffd.Feature(0)
		_, err := uffd.FromFD(rawUFFD(t, &none), uffd.FeatureEventRemove)
		if !errors.Is(err, uffd.ErrNotSupported) {
			t.Fatalf("err = %v, want ErrNotSupported", err)
		}
	})
	t.Run("not a userfaultfd", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		fd, err := unix.Dup(int(r.Fd()))
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, err = uffd.FromFD(fd, 0)
		if !errors.Is(err, unix.EINVAL) {
			t.Fatalf("err = %v, want EINVAL", err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("the rejected descriptor was not closed: %v", err)
		}
	})
	t.Run("bad descriptor", func(t *testing.T) {
		if _, err := uffd.FromFD(-1, 0); err == nil {
			t.Fatal("FromFD(-1) succeeded")
		}
	})
}
