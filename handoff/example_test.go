package handoff_test

import (
	"fmt"
	"log"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/handoff"
)

// A process hands its userfaultfd to a monitor over a UNIX socket, with a
// description of the memory it registered; the monitor learns who sent it.
// Here both ends are in one process.
func ExampleSend() {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		log.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			log.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	process, monitor := conn(fds[0]), conn(fds[1])
	defer process.Close()
	defer monitor.Close()

	// The process: open, register its memory (not shown), send.
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventRemove | uffd.FeatureEventUnmap})
	if err != nil {
		log.Fatal(err)
	}
	defer u.Close()
	if err := handoff.Send(process, u, []byte(`{"regions":[]}`)); err != nil {
		log.Fatal(err)
	}

	// The monitor: receive, then serve the process's faults with it.
	got, payload, cred, err := handoff.Receive(monitor, uffd.FeatureEventRemove)
	if err != nil {
		log.Fatal(err)
	}
	defer got.Close()
	fmt.Println(string(payload))
	fmt.Println(got.Features())
	fmt.Println(cred.PID == os.Getpid())
	// Output:
	// {"regions":[]}
	// EventRemove|EventUnmap
	// true
}

// A monitor takes the userfaultfd of a running process, whose descriptor
// number it knows (from /proc/<pid>/fd, or the process told it).
func ExampleFromPid() {
	const pid, fd = 1234, 5
	u, err := handoff.FromPid(pid, fd, uffd.FeatureEventRemove)
	if err != nil {
		// A *handoff.PermissionError says what this process lacks.
		log.Fatal(err)
	}
	defer u.Close()
}
