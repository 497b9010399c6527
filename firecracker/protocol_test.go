//go:build linux

package firecracker_test

import (
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker"
)

// TestWireFormat pins the bytes Firecracker's serde_json::to_string sends
// for a Vec<GuestRegionUffdMapping>: compact, fields in declaration order,
// page_size_kib holding bytes.
func TestWireFormat(t *testing.T) {
	ms := []firecracker.Mapping{
		{BaseHostVirtAddr: 0x7f0000000000, Size: 0x8000000, Offset: 0, PageSize: 4096, PageSizeKiB: 4096},
		{BaseHostVirtAddr: 0x7f1000000000, Size: 0x200000, Offset: 0x8000000, PageSize: 2097152, PageSizeKiB: 2097152},
	}
	a, b := socketPair(t)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := firecracker.SendHandshake(a, ms, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := b.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	const want = `[{"base_host_virt_addr":139637976727552,"size":134217728,"offset":0,"page_size":4096,"page_size_kib":4096},` +
		`{"base_host_virt_addr":139706696204288,"size":2097152,"offset":134217728,"page_size":2097152,"page_size_kib":2097152}]`
	if got := string(buf[:n]); got != want {
		t.Errorf("sent\n%s\nwant\n%s", got, want)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages: %v, %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("descriptors with the first read: %v, %v", fds, err)
	}
	unix.Close(fds[0])
}

func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func TestParseMappings(t *testing.T) {
	base := uint64(os.Getpagesize())
	for _, tc := range []struct {
		name   string
		in     string
		want   []firecracker.Mapping
		reason string
	}{
		{"current", `[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4096}]`,
			[]firecracker.Mapping{{4096, 8192, 0, 4096, 4096}}, ""},
		{"v1.7 page_size_kib only, bytes", `[{"base_host_virt_addr":2097152,"size":2097152,"offset":0,"page_size_kib":2097152}]`,
			[]firecracker.Mapping{{2097152, 2097152, 0, 2097152, 2097152}}, ""},
		{"before 1.7, no page size", `[{"base_host_virt_addr":4096,"size":4096,"offset":4096}]`,
			[]firecracker.Mapping{{4096, 4096, 4096, base, base}}, ""},
		{"unknown fields ignored, white space", " [ {\"size\":4096, \"x\":[1,{}], \"offset\":0,\"base_host_virt_addr\":8192} ] \n",
			[]firecracker.Mapping{{8192, 4096, 0, base, base}}, ""},
		{"not JSON", `hello`, nil, firecracker.ReasonJSON},
		{"object", `{"base_host_virt_addr":1}`, nil, firecracker.ReasonJSON},
		{"null", `null`, nil, firecracker.ReasonJSON},
		{"empty", `[]`, nil, firecracker.ReasonRegion},
		{"missing offset", `[{"base_host_virt_addr":4096,"size":4096}]`, nil, firecracker.ReasonJSON},
		{"negative", `[{"base_host_virt_addr":4096,"size":-4096,"offset":0}]`, nil, firecracker.ReasonJSON},
		{"float", `[{"base_host_virt_addr":4096.5,"size":4096,"offset":0}]`, nil, firecracker.ReasonJSON},
		{"string", `[{"base_host_virt_addr":"4096","size":4096,"offset":0}]`, nil, firecracker.ReasonJSON},
		{"too big", `[{"base_host_virt_addr":18446744073709551616,"size":4096,"offset":0}]`, nil, firecracker.ReasonJSON},
		{"sizes disagree", `[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size_kib":4}]`, nil, firecracker.ReasonPageSize},
		{"truncated", `[{"base_host_virt_addr":4096,"size":40`, nil, firecracker.ReasonTruncated},
		{"trailing", `[{"base_host_virt_addr":4096,"size":4096,"offset":0}] x`, nil, firecracker.ReasonTrailing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := firecracker.ParseMappings([]byte(tc.in))
			if tc.reason != "" {
				var he *firecracker.HandshakeError
				if !errors.As(err, &he) || he.Reason != tc.reason || !errors.Is(err, firecracker.ErrHandshake) {
					t.Fatalf("firecracker.ParseMappings = %v, %v; want a %q rejection", got, err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("region %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	const huge = 2 << 20
	sizes := []int{huge}
	m := func(addr, size, off, ps uint64) firecracker.Mapping {
		return firecracker.Mapping{addr, size, off, ps, ps}
	}
	for _, tc := range []struct {
		name   string
		ms     []firecracker.Mapping
		reason string
	}{
		{"ok", []firecracker.Mapping{m(0x10000, 0x10000, 0, 4096), m(0x400000, huge, 0x10000, huge)}, ""},
		{"file ranges may be shared", []firecracker.Mapping{m(0x10000, 0x1000, 0, 4096), m(0x20000, 0x1000, 0, 4096)}, ""},
		{"unknown page size", []firecracker.Mapping{m(0x10000, 0x10000, 0, 8192)}, firecracker.ReasonPageSize},
		{"zero page size", []firecracker.Mapping{m(0x10000, 0x10000, 0, 0)}, firecracker.ReasonPageSize},
		{"empty region", []firecracker.Mapping{m(0x10000, 0, 0, 4096)}, firecracker.ReasonRegion},
		{"misaligned address", []firecracker.Mapping{m(0x10800, 0x1000, 0, 4096)}, firecracker.ReasonRegion},
		{"misaligned size", []firecracker.Mapping{m(0x10000, 0x1800, 0, 4096)}, firecracker.ReasonRegion},
		{"huge region on base-page alignment", []firecracker.Mapping{m(0x401000, huge, 0, huge)}, firecracker.ReasonRegion},
		{"misaligned offset", []firecracker.Mapping{m(0x10000, 0x1000, 0x10, 4096)}, firecracker.ReasonRegion},
		{"outside the file", []firecracker.Mapping{m(0x10000, 0x1000, 1<<30, 4096)}, firecracker.ReasonRegion},
		{"ends past the file", []firecracker.Mapping{m(0x10000, 8<<20, 0, 4096)}, firecracker.ReasonRegion},
		{"offset wraps", []firecracker.Mapping{m(0x10000, 0x2000, ^uint64(0)-0xfff, 4096)}, firecracker.ReasonRegion},
		{"address wraps", []firecracker.Mapping{m(^uint64(0)-0xfff, 0x2000, 0, 4096)}, firecracker.ReasonRegion},
		{"overlap", []firecracker.Mapping{m(0x10000, 0x10000, 0, 4096), m(0x1f000, 0x2000, 0, 4096)}, firecracker.ReasonRegion},
		{"overlap, out of order", []firecracker.Mapping{m(0x20000, 0x1000, 0, 4096), m(0x10000, 0x20000, 0, 4096)}, firecracker.ReasonRegion},
		{"duplicate", []firecracker.Mapping{m(0x10000, 0x1000, 0, 4096), m(0x10000, 0x1000, 0, 4096)}, firecracker.ReasonRegion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := firecracker.Validate(tc.ms, 4<<20, sizes)
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var he *firecracker.HandshakeError
			if !errors.As(err, &he) || he.Reason != tc.reason {
				t.Fatalf("firecracker.Validate = %v; want a %q rejection", err, tc.reason)
			}
		})
	}
}

// TestReadHandshakeLarge sends a handshake of about 70 KiB (600 regions):
// it arrives in several reads, and only the first carries the descriptor.
func TestReadHandshakeLarge(t *testing.T) {
	a, b := socketPair(t)
	var ms []firecracker.Mapping
	for i := range 600 {
		ms = append(ms, firecracker.Mapping{BaseHostVirtAddr: uint64(0x7f0000000000 + i*0x100000), Size: 0x100000, Offset: uint64(i * 0x100000), PageSize: 4096, PageSizeKiB: 4096})
	}
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventRemove})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fd := dupUFFD(t, u)
	defer unix.Close(fd)
	errc := make(chan error, 1)
	go func() { errc <- firecracker.SendHandshake(a, ms, fd) }()
	hs, err := firecracker.ReadHandshake(b, 0, time.Now().Add(5*time.Second))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hs.FD)
	if len(hs.Mappings) != len(ms) || hs.Mappings[599] != ms[599] {
		t.Fatalf("got %d mappings (last %+v), want %d", len(hs.Mappings), hs.Mappings[len(hs.Mappings)-1], len(ms))
	}
	if hs.Bytes <= 64<<10 {
		t.Fatalf("message of %d bytes; the test wants one that needs several reads", hs.Bytes)
	}
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(hs.FD))
	if err != nil || link != "anon_inode:[userfaultfd]" {
		t.Fatalf("received descriptor is %q (%v)", link, err)
	}
}

// dupUFFD returns a duplicate of u's descriptor, owned by the caller.
func dupUFFD(t testing.TB, u *uffd.UFFD) int {
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

func TestSmapsCheck(t *testing.T) {
	const smaps = `00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
Size:                328 kB
KernelPageSize:        4 kB
VmFlags: rd ex mr mw me dw
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
KernelPageSize:        4 kB
VmFlags: rd wr mr mw me ac um
7f0000200000-7f0000400000 rw-p 00000000 00:00 0
KernelPageSize:        4 kB
VmFlags: rd wr mr mw me ac um
7f1000000000-7f1000400000 rw-p 00000000 00:0f 1234      /anon_hugepage (deleted)
KernelPageSize:     2048 kB
VmFlags: rd wr mr mw me ac ht um
7f2000000000-7f2000001000 rw-p 00000000 00:00 0
KernelPageSize:        4 kB
VmFlags: rd wr mr mw me ac
`
	vmas, err := firecracker.ParseMemoryMap([]byte(smaps))
	if err != nil || len(vmas) != 5 {
		t.Fatalf("parsed %d mappings (%v)", len(vmas), err)
	}
	m := func(addr, size, ps uint64) firecracker.Mapping { return firecracker.Mapping{addr, size, 0, ps, ps} }
	// Spanning two mappings.
	if unreg, err := vmas.Check([]firecracker.Mapping{m(0x7f0000000000, 0x400000, 4096), m(0x7f1000000000, 0x400000, 2<<20)}); err != nil || len(unreg) != 0 {
		t.Errorf("good regions: %v, %v", unreg, err)
	}
	if _, err := vmas.Check([]firecracker.Mapping{m(0x7f0000000000, 0x600000, 4096)}); err == nil {
		t.Error("a region running past its mapping was accepted")
	}
	if _, err := vmas.Check([]firecracker.Mapping{m(0x7f1000000000, 0x200000, 4096)}); err == nil {
		t.Error("a hugetlb mapping claimed as 4 KiB pages was accepted")
	}
	if _, err := vmas.Check([]firecracker.Mapping{m(0x7f3000000000, 0x1000, 4096)}); err == nil {
		t.Error("an unmapped region was accepted")
	}
	if unreg, err := vmas.Check([]firecracker.Mapping{m(0x7f2000000000, 0x1000, 4096)}); err != nil || len(unreg) != 1 {
		t.Errorf("unregistered region: %v, %v; want it reported", unreg, err)
	}
}

// FuzzParseMappings: no input panics, and what parses re-encodes to
// something that parses to the same mappings.
func FuzzParseMappings(f *testing.F) {
	f.Add([]byte(`[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096,"page_size_kib":4096}]`))
	f.Add([]byte(`[{"base_host_virt_addr":2097152,"size":2097152,"offset":0,"page_size_kib":2097152}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"size":1e3}]`))
	f.Add([]byte("[{\"base_host_virt_addr\":1,\"size\":1,\"offset\":1}]\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := firecracker.ParseMappings(b)
		if err != nil {
			if !errors.Is(err, firecracker.ErrHandshake) {
				t.Fatalf("error %v does not match firecracker.ErrHandshake", err)
			}
			return
		}
		a, c := socketPair(t)
		done := make(chan error, 1)
		go func() { done <- firecracker.SendHandshake(a, ms, 0) }()
		hs, err := firecracker.ReadHandshake(c, 0, time.Now().Add(5*time.Second))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("re-encoded %v does not parse: %v", ms, err)
		}
		unix.Close(hs.FD)
		for i := range ms {
			if hs.Mappings[i] != ms[i] {
				t.Fatalf("round trip changed region %d: %+v -> %+v", i, ms[i], hs.Mappings[i])
			}
		}
	})
}
