//go:build linux

package noncoop

// The helper process: a second program whose memory is registered. It
// opens a userfaultfd, maps and registers memory, sends the userfaultfd to
// the test process (the monitor) and then follows commands, one JSON line
// each on the same socket, answering each with a JSON line.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/mem"
)

// roleEnv, set to "helper", makes the test binary a helper (see TestMain);
// descriptor 3 is its socket to the test.
const roleEnv = "NONCOOP_ROLE"

// command is one instruction to the helper.
type command struct {
	Op string

	// setup
	Kind     string
	Pages    int
	Features uffd.Feature
	Mode     uffd.Mode

	// fork
	Prog     int
	Lo, Hi   int
	Advice   int
	WB       bool
	UnmapTop bool
	Flags    uintptr

	// touch, touchasync, copy: pages of the area (or of the target when
	// Target is set)
	List   []int
	Check  bool
	Write  bool
	Target bool
	WP     bool
	Quiet  bool // touchasync: the touching thread takes no signals

	// madvise, munmap, mapat: the range [Off, Off+Len) of the area, in
	// bytes
	Off, Len int

	// latency
	Rounds int
	Which  string // "remove", "remap" or both
}

// reply is the helper's answer.
type reply struct {
	Err string

	Pid    int
	Status int // exit status of the child, -1 if killed
	Signal int // the signal that killed the child
	Errno  int // clone's errno
	Res    gresult

	Vals  []uint64 // word 0 of each page touched
	Bad   string   // first pattern mismatch of a checked touch
	Fault []bool   // the touch raised SIGSEGV or SIGBUS

	Remove, Remap []int64 // latency: nanoseconds each call waited
}

// layout is the payload sent with the userfaultfd.
type layout struct {
	Area     uintptr // the registered range
	Len      int
	PageSize int
	Target   uintptr // a reserved range of the same size, aligned, for mremap
	Pid      int
}

// gresult is encoded with its fields exported.
func (r gresult) MarshalJSON() ([]byte, error) {
	return json.Marshal([7]uint64{r.phase, r.page, r.word, r.got, r.want, r.errno, r.progress})
}

func (r *gresult) UnmarshalJSON(b []byte) error {
	var a [7]uint64
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	r.phase, r.page, r.word, r.got, r.want, r.errno, r.progress = a[0], a[1], a[2], a[3], a[4], a[5], a[6]
	return nil
}

func (r gresult) String() string {
	if r.phase == 0 {
		return fmt.Sprintf("ok (%d page checks)", r.progress)
	}
	name := "?"
	if int(r.phase) < len(phaseNames) {
		name = phaseNames[r.phase]
	}
	return fmt.Sprintf("%s: page %d word %d: got %#x, want %#x (errno %v; %d page checks done)",
		name, r.page, r.word, r.got, r.want, syscall.Errno(r.errno), r.progress)
}

// helper is the helper process's state.
type helper struct {
	conn   *net.UnixConn
	u      *uffd.UFFD
	m      *mem.Mapping
	resv   []byte         // reservation holding the mremap target
	target unsafe.Pointer // aligned start of the target
	shared []byte         // one MAP_SHARED page for the child's gresult
	path   []byte
	buf    *[8]byte

	wg      sync.WaitGroup // async touches
	asyncMu sync.Mutex
	async   reply
}

// runHelper serves commands until the socket closes.
func runHelper() int {
	f := os.NewFile(3, "socket")
	c, err := net.FileConn(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	h := &helper{conn: c.(*net.UnixConn), path: []byte("/proc/self/pagemap\x00"), buf: new([8]byte)}
	if h.shared, err = unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	in := bufio.NewReader(h.conn)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return 0
		}
		var cmd command
		if err := json.Unmarshal(line, &cmd); err != nil {
			fmt.Fprintln(os.Stderr, "helper: bad command:", err)
			return 1
		}
		if cmd.Op == "exit" {
			return 0
		}
		var rep reply
		sent, err := h.do(&cmd, &rep)
		if err != nil {
			rep.Err = err.Error()
		}
		if sent && err == nil {
			continue // the answer was the handoff
		}
		b, _ := json.Marshal(rep)
		if _, err := h.conn.Write(append(b, '\n')); err != nil {
			return 1
		}
	}
}

// do runs one command. It reports whether it answered with a handoff
// message instead of a reply.
func (h *helper) do(cmd *command, rep *reply) (bool, error) {
	switch cmd.Op {
	case "setup":
		return true, h.setup(cmd)
	case "touch":
		h.touch(cmd, rep)
	case "touchasync":
		h.wg.Add(1)
		if cmd.Quiet {
			// No garbage collection may stop the world meanwhile: it
			// would wait for the quiet thread.
			debug.SetGCPercent(-1)
		}
		go func() {
			defer h.wg.Done()
			if cmd.Quiet {
				// A fault interrupted by a signal is taken again: the
				// runtime's preemption signal would make this thread
				// retry its access every few milliseconds. Block it on
				// this thread, which dies with the goroutine.
				runtime.LockOSThread()
				set := unix.Sigset_t{}
				set.Val[0] = 1 << (uint(unix.SIGURG) - 1)
				if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil); err != nil {
					panic(err)
				}
			}
			var r reply
			h.touch(cmd, &r)
			h.asyncMu.Lock()
			h.async = r
			h.asyncMu.Unlock()
		}()
	case "wait":
		h.wg.Wait()
		debug.SetGCPercent(100)
		h.asyncMu.Lock()
		*rep = h.async
		h.asyncMu.Unlock()
	case "copy":
		page := make([]byte, h.m.PageSize)
		var flags uffd.Flags
		if cmd.WP {
			flags = uffd.WriteProtected
		}
		for _, i := range cmd.List {
			fill(page, i)
			if _, err := h.u.Copy(h.m.PageAddr(i), page, flags); err != nil {
				return false, err
			}
		}
	case "fork":
		return false, h.fork(cmd, rep)
	case "dropprivs":
		// Lose every capability: clone(CLONE_NEWUTS) then fails with
		// EPERM, but only after the memory was copied and the fork event
		// delivered.
		if err := syscall.Setresgid(65534, 65534, 65534); err != nil {
			return false, err
		}
		return false, syscall.Setresuid(65534, 65534, 65534)
	case "madvise":
		err := unix.Madvise(h.m.Data[cmd.Off:cmd.Off+cmd.Len], cmd.Advice)
		if cmd.Advice == unix.MADV_PAGEOUT {
			// Best effort, as in uffd-unit-tests.c: private hugetlbfs
			// memory cannot be paged out.
			err = nil
		}
		return false, err
	case "mremap":
		// Move the area to the target (or back, with Target set).
		from, to := unsafe.Pointer(unsafe.SliceData(h.m.Data)), h.target
		if cmd.Target {
			from, to = to, from
		}
		_, err := unix.MremapPtr(from, uintptr(len(h.m.Data)), to, uintptr(len(h.m.Data)), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED)
		return false, err
	case "aliasremove":
		// Punch a hole through the second mapping of a memfd: the
		// registered mapping loses the pages, and no event says so.
		return false, unix.Madvise(h.m.Alias[cmd.Off:cmd.Off+cmd.Len], unix.MADV_REMOVE)
	case "munmap":
		return false, unix.MunmapPtr(unsafe.Add(unsafe.Pointer(unsafe.SliceData(h.m.Data)), cmd.Off), uintptr(cmd.Len))
	case "mapat":
		// Map fresh anonymous memory over [Off, Off+Len) of the area's
		// (now free) addresses and register it with the same userfaultfd.
		addr := unsafe.Add(unsafe.Pointer(unsafe.SliceData(h.m.Data)), cmd.Off)
		if _, err := unix.MmapPtr(-1, 0, addr, uintptr(cmd.Len), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE); err != nil {
			return false, err
		}
		_, err := h.u.Register(uintptr(addr), uintptr(cmd.Len), uffd.ModeMissing)
		return false, err
	case "latency":
		return false, h.latency(cmd, rep)
	default:
		return false, fmt.Errorf("unknown command %q", cmd.Op)
	}
	return false, nil
}

// setup opens a userfaultfd, maps and registers the area, reserves the
// target and sends the userfaultfd with the layout.
func (h *helper) setup(cmd *command) error {
	if h.u != nil {
		h.u.Close()
		h.m.Close()
		unix.Munmap(h.resv)
	}
	kind, err := mem.ParseKind(cmd.Kind)
	if err != nil {
		return err
	}
	ps := mem.PageSize()
	if kind.Huge() {
		if ps, err = mem.HugePageSize(); err != nil {
			return err
		}
	}
	size := cmd.Pages * ps
	if h.m, err = mem.Map(kind, size); err != nil {
		return err
	}
	if h.resv, err = unix.Mmap(-1, 0, size+ps, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE); err != nil {
		return err
	}
	base := unsafe.Pointer(unsafe.SliceData(h.resv))
	h.target = unsafe.Add(base, (ps-int(uintptr(base)%uintptr(ps)))%ps)
	if h.u, err = uffd.Open(uffd.Config{Features: cmd.Features}); err != nil {
		return err
	}
	if cmd.Mode != 0 { // else a baseline: nothing registered
		if _, err := h.u.Register(h.m.Addr(), h.m.Len(), cmd.Mode); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(layout{Area: h.m.Addr(), Len: size, PageSize: ps, Target: uintptr(h.target), Pid: os.Getpid()})
	return handoff.Send(h.conn, h.u, b)
}

// touch reads (or writes) word 0 of the pages listed, with plain loads:
// the monitor serves the faults. Check compares whole pages with the
// pattern. A fault that raises SIGSEGV or SIGBUS is reported, not fatal.
func (h *helper) touch(cmd *command, rep *reply) {
	base := unsafe.Pointer(unsafe.SliceData(h.m.Data))
	if cmd.Target {
		base = h.target
	}
	ps := uintptr(h.m.PageSize)
	for _, i := range cmd.List {
		p := (*uint64)(unsafe.Add(base, uintptr(i)*ps))
		var v uint64
		faulted := raises(func() {
			if cmd.Write {
				*p = uint64(i) + 1
			}
			v = *p
			if cmd.Check && rep.Bad == "" {
				for w := uintptr(0); w < ps/8; w++ {
					got := *(*uint64)(unsafe.Add(unsafe.Pointer(p), w*8))
					if want := pattern(uintptr(i), w); got != want {
						rep.Bad = fmt.Sprintf("page %d word %d: %#x, want %#x", i, w, got, want)
						break
					}
				}
			}
		})
		rep.Vals = append(rep.Vals, v)
		rep.Fault = append(rep.Fault, faulted)
	}
}

// raises runs fn and reports whether a memory fault (SIGSEGV, SIGBUS)
// interrupted it.
func raises(fn func()) (fault bool) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			fault = true
		}
	}()
	fn()
	return false
}

// fork clones the helper; the child runs cmd.Prog. It waits for the child
// and reports how it ended and what it wrote.
func (h *helper) fork(cmd *command, rep *reply) error {
	res := (*gresult)(unsafe.Pointer(unsafe.SliceData(h.shared)))
	*res = gresult{}
	j := &gjob{
		prog:     cmd.Prog,
		area:     unsafe.Pointer(unsafe.SliceData(h.m.Data)),
		target:   h.target,
		res:      res,
		pages:    uintptr(len(h.m.Data) / h.m.PageSize),
		psize:    uintptr(h.m.PageSize),
		lo:       uintptr(cmd.Lo),
		hi:       uintptr(cmd.Hi),
		advice:   uintptr(cmd.Advice),
		wb:       cmd.WB,
		unmapTop: cmd.UnmapTop,
		path:     &h.path[0],
		buf:      h.buf,
		basePS:   uintptr(os.Getpagesize()),
	}
	type forked struct {
		pid   int
		errno syscall.Errno
	}
	ch := make(chan forked, 1)
	go func() {
		// The child starts on this thread, as its only thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		pid, errno := forkChild(j, cmd.Flags)
		ch <- forked{pid, errno}
	}()
	f := <-ch
	runtime.KeepAlive(j)
	if f.errno != 0 {
		rep.Errno = int(f.errno)
		return nil
	}
	rep.Pid = f.pid
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(f.pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait4: %w", err)
		}
		break
	}
	rep.Status, rep.Signal = ws.ExitStatus(), 0
	if ws.Signaled() {
		rep.Signal = int(ws.Signal())
	}
	rep.Res = *res
	return nil
}

// latency times madvise(MADV_DONTNEED) of one page (a REMOVE event) and
// mremap of the area there and back (two REMAP events, each followed by
// the UNMAP of the old range), Rounds times each. Between rounds it
// touches the page again so that the next madvise has work to do.
func (h *helper) latency(cmd *command, rep *reply) error {
	ps := h.m.PageSize
	remove, remap := cmd.Which != "remap", cmd.Which != "remove"
	for r := 0; remove && r < cmd.Rounds; r++ {
		_ = *(*uint64)(unsafe.Pointer(unsafe.SliceData(h.m.Data))) // fault the page in
		t0 := time.Now()
		if err := unix.Madvise(h.m.Data[:ps], unix.MADV_DONTNEED); err != nil {
			return err
		}
		rep.Remove = append(rep.Remove, time.Since(t0).Nanoseconds())
	}
	for r := 0; remap && r < cmd.Rounds; r++ {
		from, to := unsafe.Pointer(unsafe.SliceData(h.m.Data)), h.target
		if r%2 == 1 {
			from, to = to, from
		}
		t0 := time.Now()
		if _, err := unix.MremapPtr(from, uintptr(len(h.m.Data)), to, uintptr(len(h.m.Data)), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
			return err
		}
		rep.Remap = append(rep.Remap, time.Since(t0).Nanoseconds())
	}
	if remap && cmd.Rounds%2 == 1 { // move it home
		if _, err := unix.MremapPtr(h.target, uintptr(len(h.m.Data)), unsafe.Pointer(unsafe.SliceData(h.m.Data)), uintptr(len(h.m.Data)), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
			return err
		}
	}
	return nil
}
