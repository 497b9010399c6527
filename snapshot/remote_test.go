//go:build linux && cgo

package snapshot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/snapshot"
)

const remoteEnv = "UFFD_SNAPSHOT_REMOTE" // kind,bytes,writers,limit: be the child

type remoteRegion struct {
	Addr, Len uintptr
	PageSize  int
}

// logBytes is the shared log's size: per writer, a count and its entries.
func logBytes(n, limit int) int { return n * (8 + 4*limit) }

// TestRemoteWriters: the writers are goroutines of another process (a
// child), which hands its userfaultfd over; the Snapshotter registers the
// child's memory in write-protect mode through it, reads the child's pages
// with process_vm_readv, and the image is one cut of the child's writes,
// which the child logs into memory shared with the test.
func TestRemoteWriters(t *testing.T) {
	if os.Getenv(remoteEnv) != "" {
		os.Exit(remoteChild())
	}
	forKinds(t, func(t *testing.T, kind mem.Kind) {
		size := sizeFor(t, kind, 4096, 8)
		const nw, limit = 2, 1 << 20
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		mine, theirs := os.NewFile(uintptr(fds[0]), "socket"), os.NewFile(uintptr(fds[1]), "socket")
		c, err := net.FileConn(mine)
		mine.Close()
		if err != nil {
			t.Fatal(err)
		}
		conn := c.(*net.UnixConn)
		lfd, err := unix.MemfdCreate("writer-logs", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		logs := os.NewFile(uintptr(lfd), "writer-logs")
		defer logs.Close()
		if err := logs.Truncate(int64(logBytes(nw, limit))); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestRemoteWriters$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d,%d", remoteEnv, kind, size, nw, limit))
		cmd.ExtraFiles = []*os.File{theirs, logs}
		out := &syncBuf{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		theirs.Close()
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		defer func() {
			conn.Close() // the child exits
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Errorf("the child did not exit\n%s", out)
			}
		}()

		u, payload, cred, err := handoff.Receive(conn, snapshot.Features(kind.FileBacked()))
		if err != nil {
			t.Fatalf("receive: %v\n%s", err, out)
		}
		defer u.Close()
		var reg remoteRegion
		if err := json.Unmarshal(payload, &reg); err != nil {
			t.Fatal(err)
		}
		s, err := snapshot.New(u, snapshot.Config{Pid: int(cred.PID), Regions: []snapshot.Region{{Start: reg.Addr, Len: reg.Len, PageSize: reg.PageSize}}, Buffer: 16 << 20, ArmChunk: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		shared, err := unix.Mmap(lfd, 0, logBytes(nw, limit), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(shared)
		count := func() (n uint64) {
			for w := range nw {
				n += atomic.LoadUint64((*uint64)(unsafe.Pointer(&shared[w*(8+4*limit)])))
			}
			return n
		}
		if _, err := conn.Write([]byte{'g'}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); count() < 1000; {
			if time.Now().After(deadline) {
				t.Fatalf("the child's writers do not write\n%s", out)
			}
		}
		path := filepath.Join(t.TempDir(), "img")
		res, err := s.TakeFile(context.Background(), path)
		during := count()
		if _, err := conn.Write([]byte{'s'}); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			t.Fatalf("the child did not stop: %v\n%s", err, out)
		}
		if err != nil {
			t.Fatal(err)
		}
		ws := &writers{run: 1, n: nw, logs: make([][]uint32, nw)}
		for w := range nw {
			base := w * (8 + 4*limit)
			n := int(atomic.LoadUint64((*uint64)(unsafe.Pointer(&shared[base]))))
			ws.logs[w] = unsafe.Slice((*uint32)(unsafe.Pointer(&shared[base+8])), n)
		}
		cuts := checkCut(t, readData(t, path, size), ws, nil)
		t.Logf("cut at %v; %d writes when the save ended; pause %v, save %v; %+v", cuts, during, res.Pause, res.Save, res.Stats)
	})
}

// remoteChild maps the memory, hands its userfaultfd over, then runs the
// writers between 'g' and 's', logging each write into the shared log.
func remoteChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "child:", err); return 1 }
	f := strings.Split(os.Getenv(remoteEnv), ",")
	kind, err := mem.ParseKind(f[0])
	if err != nil {
		return fail(err)
	}
	size, _ := strconv.Atoi(f[1])
	nw, _ := strconv.Atoi(f[2])
	limit, _ := strconv.Atoi(f[3])
	m, err := mem.Map(kind, size)
	if err != nil {
		return fail(err)
	}
	fill(m.Data)
	shared, err := unix.Mmap(4, 0, logBytes(nw, limit), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	c, err := net.FileConn(os.NewFile(3, "socket"))
	if err != nil {
		return fail(err)
	}
	conn := c.(*net.UnixConn)
	u, err := uffd.Open(uffd.Config{Features: snapshot.Features(kind.FileBacked())})
	if err != nil {
		return fail(err)
	}
	payload, _ := json.Marshal(remoteRegion{Addr: m.Addr(), Len: m.Len(), PageSize: m.PageSize})
	if err := handoff.Send(conn, u, payload); err != nil {
		return fail(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fail(err)
	}
	p := words(m.Data)
	per := len(p) / nw
	var stop atomic.Bool
	done := make(chan struct{}, nw)
	for w := range nw {
		go func() {
			base := w * (8 + 4*limit)
			cnt := (*uint64)(unsafe.Pointer(&shared[base]))
			log := unsafe.Slice((*uint32)(unsafe.Pointer(&shared[base+8])), limit)
			x := uint64(w)*0x9e3779b97f4a7c15 + 1
			for seq := 0; seq < limit && !stop.Load(); seq++ {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				k := int(x%uint64(per))*nw + w
				atomic.StoreUint64(&p[k], tag(1, w, seq))
				log[seq] = uint32(k)
				atomic.StoreUint64(cnt, uint64(seq+1))
			}
			done <- struct{}{}
		}()
	}
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fail(err)
	}
	stop.Store(true)
	for range nw {
		<-done
	}
	conn.Write([]byte{'d'})
	io.Copy(io.Discard, conn) // until the test closes it
	return 0
}

type syncBuf struct {
	mu  sync.Mutex
	buf []byte
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	return len(p), nil
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.buf)
}
