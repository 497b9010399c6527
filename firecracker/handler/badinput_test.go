//go:build linux

package handler_test

import (
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker"
	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// peerConn connects to the daemon as a misbehaving Firecracker would.
func peerConn(t *testing.T, d *daemon) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: d.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByDaemon checks that the daemon closes c: a read ends with EOF
// (or a reset) within the deadline.
func closedByDaemon(t *testing.T, c *net.UnixConn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	var b [16]byte
	n, err := c.Read(b[:])
	if err == nil || n > 0 || os.IsTimeout(err) {
		t.Fatalf("the daemon did not close the connection: read %d bytes, %v", n, err)
	}
}

func sendRaw(t *testing.T, c *net.UnixConn, b []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		t.Fatal(err)
	}
}

// TestBadInput sends every kind of bad handshake: each is refused with a
// log line naming the reason, its connection is closed, the daemon goes on
// and serves a good VM afterwards, and nothing leaks.
func TestBadInput(t *testing.T) {
	d := startDaemon(t, 8<<20, handler.Config{HandshakeTimeout: 300 * time.Millisecond, MaxMessage: 64 << 10})
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventRemove})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ufd := dupFD(t, u)
	defer unix.Close(ufd)
	// Real memory of this process, registered, for the cases that get past
	// the syntax: nothing ever faults there.
	m, err := mem.Map(mem.Anonymous, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	good := func(mut func(*firecracker.Mapping)) []byte {
		ms := []firecracker.Mapping{{BaseHostVirtAddr: uint64(m.Addr()), Size: uint64(m.Len()), Offset: 0, PageSize: 4096, PageSizeKiB: 4096}}
		if mut != nil {
			mut(&ms[0])
		}
		b, _ := json.Marshal(ms)
		return b
	}
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])

	for _, tc := range []struct {
		name   string
		reason string
		send   func(c *net.UnixConn)
	}{
		{"not JSON", firecracker.ReasonJSON, func(c *net.UnixConn) { sendRaw(t, c, []byte("GET / HTTP/1.0\r\n\r\n"), ufd) }},
		{"JSON object", firecracker.ReasonJSON, func(c *net.UnixConn) { sendRaw(t, c, []byte(`{"regions":[]}`), ufd) }},
		{"no regions", firecracker.ReasonRegion, func(c *net.UnixConn) { sendRaw(t, c, []byte(`[]`), ufd) }},
		{"missing field", firecracker.ReasonJSON, func(c *net.UnixConn) { sendRaw(t, c, []byte(`[{"size":4096,"offset":0}]`), ufd) }},
		{"missing fd", firecracker.ReasonFD, func(c *net.UnixConn) { sendRaw(t, c, good(nil)) }},
		{"two fds", firecracker.ReasonFD, func(c *net.UnixConn) { sendRaw(t, c, good(nil), ufd, pipe[0]) }},
		{"more descriptors than a message may carry", firecracker.ReasonFD, func(c *net.UnixConn) {
			fds := make([]int, handoff.MaxFDs+1)
			for i := range fds {
				fds[i] = ufd
			}
			sendRaw(t, c, good(nil), fds...)
		}},
		{"fd not a userfaultfd", firecracker.ReasonFD, func(c *net.UnixConn) { sendRaw(t, c, good(nil), pipe[0]) }},
		{"outside the memory file", firecracker.ReasonRegion, func(c *net.UnixConn) {
			sendRaw(t, c, good(func(m *firecracker.Mapping) { m.Offset = 8 << 20 }), ufd)
		}},
		{"past the end of the memory file", firecracker.ReasonRegion, func(c *net.UnixConn) {
			sendRaw(t, c, good(func(m *firecracker.Mapping) { m.Offset = 7<<20 + 4096 }), ufd)
		}},
		{"misaligned", firecracker.ReasonRegion, func(c *net.UnixConn) {
			sendRaw(t, c, good(func(m *firecracker.Mapping) { m.BaseHostVirtAddr += 512 }), ufd)
		}},
		{"misaligned for its huge pages", firecracker.ReasonRegion, func(c *net.UnixConn) {
			sendRaw(t, c, good(func(m *firecracker.Mapping) { m.PageSize, m.PageSizeKiB = 2<<20, 2<<20; m.BaseHostVirtAddr |= 4096 }), ufd)
		}},
		{"overlapping", firecracker.ReasonRegion, func(c *net.UnixConn) {
			ms := []firecracker.Mapping{
				{BaseHostVirtAddr: uint64(m.Addr()), Size: 0x80000, Offset: 0, PageSize: 4096, PageSizeKiB: 4096},
				{BaseHostVirtAddr: uint64(m.Addr()) + 0x7f000, Size: 0x2000, Offset: 0x80000, PageSize: 4096, PageSizeKiB: 4096},
			}
			b, _ := json.Marshal(ms)
			sendRaw(t, c, b, ufd)
		}},
		{"unknown page size", firecracker.ReasonPageSize, func(c *net.UnixConn) {
			sendRaw(t, c, good(func(m *firecracker.Mapping) { m.PageSize, m.PageSizeKiB = 16384, 16384 }), ufd)
		}},
		{"page sizes disagree", firecracker.ReasonPageSize, func(c *net.UnixConn) {
			sendRaw(t, c, good(func(m *firecracker.Mapping) { m.PageSizeKiB = 4 }), ufd)
		}},
		{"not mapped in the peer", firecracker.ReasonMapping, func(c *net.UnixConn) {
			sendRaw(t, c, good(func(m *firecracker.Mapping) { m.BaseHostVirtAddr = 0x10000 }), ufd)
		}},
		{"wrong page size for the peer's mapping", firecracker.ReasonMapping, func(c *net.UnixConn) {
			if len(mustHugeSizes(t)) == 0 {
				testutil.Skipf(t, "no huge page sizes (CONFIG_HUGETLBFS)")
			}
			// m has 4 KiB pages: a 2 MiB region over it does not match.
			sendRaw(t, c, good(func(mm *firecracker.Mapping) {
				mm.BaseHostVirtAddr = uint64(m.Addr()) &^ (2<<20 - 1)
				mm.Size, mm.PageSize, mm.PageSizeKiB = 2<<20, 2<<20, 2<<20
			}), ufd)
		}},
		{"trailing bytes", firecracker.ReasonTrailing, func(c *net.UnixConn) { sendRaw(t, c, append(good(nil), "{}"...), ufd) }},
		{"disconnect mid-message", firecracker.ReasonTruncated, func(c *net.UnixConn) {
			b := good(nil)
			sendRaw(t, c, b[:len(b)/2], ufd)
			c.CloseWrite()
		}},
		{"nothing sent", firecracker.ReasonTimeout, func(c *net.UnixConn) {}},
		{"half a message, then silence", firecracker.ReasonTimeout, func(c *net.UnixConn) {
			b := good(nil)
			sendRaw(t, c, b[:10], ufd)
		}},
		{"too large", firecracker.ReasonTooLarge, func(c *net.UnixConn) {
			b := []byte("[" + strings.Repeat(" ", 70<<10))
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			c.WriteMsgUnix(b, unix.UnixRights(ufd), nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := d.s.Rejections()[tc.reason]
			c := peerConn(t, d)
			tc.send(c)
			closedByDaemon(t, c, 3*time.Second)
			waitFor(t, "the rejection to be counted", func() bool { return d.s.Rejections()[tc.reason] == before+1 })
			if len(d.s.VMs()) != 0 {
				t.Errorf("a VM is being served after a bad handshake: %+v", d.s.VMs())
			}
		})
	}
	for reason, n := range d.s.Rejections() {
		if n > 0 && len(d.logLines("connection rejected", "reason="+reason)) == 0 {
			t.Errorf("no log line for rejections of reason %s", reason)
		}
	}
	// The daemon still serves.
	res := d.startVM(fctest.Config{Regions: []fctest.Region{{Size: 4 << 20}}, Touch: []string{"random"}, Verify: true}).wait(t)
	if res.Verified != basePages(4<<20) {
		t.Errorf("verified %d pages after the bad inputs", res.Verified)
	}
}

func mustHugeSizes(t *testing.T) []int {
	s, _ := mem.HugePageSizes()
	return s
}

func dupFD(t *testing.T, u *uffd.UFFD) int {
	t.Helper()
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(f uintptr) { fd, err = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestFlood opens many connections that send nothing: the daemon refuses
// those beyond its handshake limit at once, times the others out, logs
// the refusals at a bounded rate, and serves a VM that comes afterwards.
func TestFlood(t *testing.T) {
	const limit, flood = 4, 200
	d := startDaemon(t, 8<<20, handler.Config{MaxHandshakes: limit, HandshakeTimeout: 500 * time.Millisecond})
	var conns []*net.UnixConn
	for range flood {
		conns = append(conns, peerConn(t, d))
	}
	for _, c := range conns {
		closedByDaemon(t, c, 3*time.Second)
	}
	rej := d.s.Rejections()
	if rej[handler.ReasonOverloaded] < flood-2*limit || rej[firecracker.ReasonTimeout] > 2*limit || rej[handler.ReasonOverloaded]+rej[firecracker.ReasonTimeout] != flood {
		t.Errorf("rejections %v: want most of %d overloaded, at most %d timed out", rej, flood, 2*limit)
	}
	if n := len(d.logLines("reason=" + handler.ReasonOverloaded)); n > 10 {
		t.Errorf("%d log lines for the flood: the log was flooded too", n)
	}
	res := d.startVM(fctest.Config{Regions: []fctest.Region{{Size: 4 << 20}}, Touch: []string{"seq"}, Verify: true}).wait(t)
	if res.Verified != basePages(4<<20) {
		t.Errorf("verified %d pages after the flood", res.Verified)
	}
}
