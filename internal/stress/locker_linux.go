package stress

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/mem"
)

// LockerMain makes this process the locker of a stress run when Run
// started it as one: it then runs the locker and exits. Otherwise it
// returns at once. Programs that call Run with Config.Exe left empty must
// call LockerMain at the start of main (or TestMain), before anything else
// that matters.
func LockerMain() {
	if os.Getenv(lockerEnv) == "" {
		return
	}
	if err := runLocker(); err != nil {
		fmt.Fprintln(os.Stderr, "uffd stress locker:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// locker is the locker process's state.
type locker struct {
	h      hello
	u      *uffd.UFFD
	area   [2]*mem.Mapping
	image  []byte
	verify []uint64 // count_verify: per page, what its counter must hold
	size   int

	dst  *mem.Mapping
	req  request // the bounce
	stop atomic.Bool
	wg   sync.WaitGroup
	incs atomic.Uint64

	errMu sync.Mutex
	err   error
}

func runLocker() error {
	f := os.NewFile(3, "socket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return err
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	in := bufio.NewReader(conn)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return err
	}
	l := &locker{}
	if err := json.Unmarshal(line, &l.h); err != nil {
		return err
	}
	if err := l.setup(conn); err != nil {
		// The monitor waits for a handoff: an unexpected line tells it.
		conn.Write([]byte(lockerErrorPrefix + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"))
		return err
	}
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return nil // the monitor is done
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			return err
		}
		var ans answer
		if err := l.do(&req, &ans); err != nil {
			ans.Err = err.Error()
		}
		b, _ := json.Marshal(ans)
		if _, err := conn.Write(append(b, '\n')); err != nil {
			return err
		}
	}
}

// setup maps the areas and the source, opens the userfaultfd and hands it
// over.
func (l *locker) setup(conn *net.UnixConn) error {
	kind, err := mem.ParseKind(l.h.Kind)
	if err != nil {
		return err
	}
	l.size = l.h.Pages * l.h.PageSize
	for i := range l.area {
		if l.area[i], err = mem.Map(kind, l.size); err != nil {
			return err
		}
	}
	if l.image, err = unix.Mmap(4, 0, l.size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return fmt.Errorf("map the source: %w", err)
	}
	unix.Close(4)
	// count_verify lives outside the Go heap: the lock words that guard
	// it are atomics on mapped memory, which the race detector does not
	// see as synchronization.
	vb, err := unix.Mmap(-1, 0, 8*l.h.Pages, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return err
	}
	l.verify = unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(vb))), l.h.Pages)
	for n := range l.verify {
		_, l.verify[n], _, _ = pageRecord(l.image[n*l.h.PageSize:])
	}
	if l.u, err = uffd.Open(uffd.Config{Features: l.h.Features}); err != nil {
		return err
	}
	var a areas
	for i, m := range l.area {
		a.Dst[i] = m.Addr()
		if kind.Shared() {
			a.Alias[i] = uintptr(unsafe.Pointer(unsafe.SliceData(m.Alias)))
		}
	}
	b, _ := json.Marshal(a)
	return handoff.Send(conn, l.u, b)
}

func (l *locker) mode() uffd.Mode {
	if l.h.WP {
		return uffd.ModeMissing | uffd.ModeWriteProtect
	}
	return uffd.ModeMissing
}

func (l *locker) do(req *request, ans *answer) error {
	switch req.Op {
	case "bounce":
		return l.bounce(req)
	case "go":
		return l.start()
	case "finish":
		l.stop.Store(true)
		l.wg.Wait()
		ans.Increments = l.incs.Swap(0)
		l.errMu.Lock()
		defer l.errMu.Unlock()
		err := l.err
		l.err = nil
		return err
	case "end":
		return l.end(req)
	case "check":
		for n := 0; n < l.h.Pages; n++ {
			if bad := checkRecord(l.image[n*l.h.PageSize:], n, l.verify[n]); bad != "" {
				return errors.New("source after the last bounce: " + bad)
			}
		}
		return nil
	}
	return fmt.Errorf("unknown request %q", req.Op)
}

// bounce registers the destination, empties it and starts the lockers.
func (l *locker) bounce(req *request) error {
	l.dst = l.area[req.Dst]
	if _, err := l.u.Register(l.dst.Addr(), l.dst.Len(), l.mode()); err != nil {
		return err
	}
	if l.dst.Kind.Shared() {
		alias := uintptr(unsafe.Pointer(unsafe.SliceData(l.dst.Alias)))
		if _, err := l.u.Register(alias, l.dst.Len(), l.mode()); err != nil {
			return err
		}
	}
	// As uffd-stress.c explains: a copy that raced the end of the last
	// bounce may have left pages here; drop them now that the range is
	// registered.
	if err := l.dst.Drop(0, l.size); err != nil {
		return fmt.Errorf("release the destination: %w", err)
	}
	l.req = *req
	return nil
}

// start starts the lockers. The monitor asks for it once it serves the
// faults: a locker faulting inside runtime code (an atomic under the race
// detector) while a garbage collection stops the world would hold up the
// whole process, answers to the monitor included, until the fault is
// served.
func (l *locker) start() error {
	req := &l.req
	l.stop.Store(false)
	perCPU := l.h.Pages / l.h.CPUs
	for cpu := 0; cpu < l.h.CPUs; cpu++ {
		var start uint64
		if req.Mode&Random == 0 {
			start = uint64(-req.Left)
			if req.Mode&Racing == 0 {
				start += uint64(cpu * perCPU)
			}
		}
		l.wg.Add(1)
		go l.lockLoop(req.Mode, start, uint64(req.Index)<<8|uint64(cpu))
	}
	return nil
}

// lockLoop is locking_thread of uffd-stress.c: take the page's lock, check
// its counter against count_verify, increment both, until stopped.
func (l *locker) lockLoop(mode Mode, pageNr, seed uint64) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	base := unsafe.Pointer(unsafe.SliceData(l.dst.Data))
	pages, ps := uint64(l.h.Pages), uintptr(l.h.PageSize)
	var incs uint64
	defer func() { l.incs.Add(incs) }()
	for !l.stop.Load() {
		if mode&Random != 0 {
			pageNr = rng.Uint64()
		} else {
			pageNr++
		}
		n := pageNr % pages
		page := unsafe.Add(base, uintptr(n)*ps)
		lock := (*uint32)(page)
		// The first touch of a missing page faults here, inside the
		// compare-and-swap.
		for spins := 0; !atomic.CompareAndSwapUint32(lock, 0, 1); spins++ {
			if spins > 16 {
				runtime.Gosched()
			}
		}
		count := (*uint64)(unsafe.Add(page, offCount))
		index := *(*uint64)(unsafe.Add(page, offIndex))
		c := *count
		if c != l.verify[n] || index != n {
			l.fail(fmt.Errorf("page %d: counter %d, want %d; record of page %d: memory corruption", n, c, l.verify[n], index))
			atomic.StoreUint32(lock, 0)
			return
		}
		c++
		*count = c
		l.verify[n] = c
		atomic.StoreUint32(lock, 0)
		incs++
	}
}

func (l *locker) fail(err error) {
	l.errMu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.errMu.Unlock()
	l.stop.Store(true)
}

// end unregisters the destination, checks it on verify bounces and makes
// it the next bounce's source.
func (l *locker) end(req *request) error {
	d := l.dst
	if l.h.WP {
		if err := l.u.WriteProtect(d.Addr(), d.Len(), false, 0); err != nil {
			return err
		}
	}
	if err := l.u.Unregister(d.Addr(), d.Len()); err != nil {
		return err
	}
	if d.Kind.Shared() {
		if err := l.u.Unregister(uintptr(unsafe.Pointer(unsafe.SliceData(d.Alias))), d.Len()); err != nil {
			return err
		}
	}
	if req.Mode&Verify != 0 {
		for n := 0; n < l.h.Pages; n++ {
			if bad := checkRecord(d.Page(n), n, l.verify[n]); bad != "" {
				return errors.New("verify: " + bad)
			}
		}
	}
	// The destination is unregistered and every page was copied in: a
	// plain copy reads it without faults.
	copy(l.image, d.Data)
	return d.Drop(0, l.size)
}
