//go:build linux

// Package fctest is a stand-in for Firecracker in tests: a process that
// restores a "VM" whose guest memory is served by a page-fault handler,
// speaking Firecracker's handshake byte for byte.
//
// It creates its userfaultfd as Firecracker does (close-on-exec,
// non-blocking, UFFD_FEATURE_EVENT_REMOVE, kernel faults included), with
// package uffd's public API, maps each guest region as Firecracker does
// (private anonymous memory with MAP_NORESERVE, plus MAP_HUGETLB|
// MAP_HUGE_2MB for 2 MiB pages), registers every region in missing mode,
// connects to the handler's socket and sends the regions as compact JSON
// with the userfaultfd attached, in one sendmsg(2). Then, like a guest, it
// touches its memory (in address order or in a random order), checks every
// byte against the memory file, balloons a range (MADV_DONTNEED) and
// checks it reads back as zeroes, and exits.
//
// Memory hotplug (virtio-mem) is played as Firecracker does it: a region
// with Unplugged bytes is registered and sent whole, its unplugged part
// mapped PROT_NONE (mprotect(2), which raises no userfaultfd event) until
// the VM plugs it (mprotect read-write again), then touches and checks it.
//
// It must run in a process of its own (Run from TestMain when Child
// reports true), so that its faults come from another address space than
// the handler's, as Firecracker's do.
package fctest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker"
)

// EnvConfig is the environment variable that carries a child's Config as
// JSON.
const EnvConfig = "UFFD_FCTEST_VM"

// Region is one guest memory region.
type Region struct {
	Size   uint64 `json:"size"`
	Huge   bool   `json:"huge,omitempty"` // 2 MiB hugetlbfs pages
	Offset uint64 `json:"offset"`         // where its contents start in the memory file
	// Unplugged is how many bytes at the region's end are hotplug memory
	// not plugged yet: mapped PROT_NONE until the VM plugs them (after
	// its passes; see Config.PlugFile). A multiple of the page size.
	Unplugged uint64 `json:"unplugged,omitempty"`
}

// Config says what the VM does.
type Config struct {
	Socket  string   `json:"socket"`
	MemFile string   `json:"mem_file"`
	Regions []Region `json:"regions"`
	// Touch lists the passes over the guest memory, in order: "seq" and
	// "random" read one byte of every base page, in address order or in a
	// random order (ref_handler's permutation); "seq-write" and
	// "random-write" write it instead (the byte the memory file holds
	// there, so that the contents stay the snapshot's).
	Touch []string `json:"touch"`
	// PaceEvery and PaceSleep slow the passes down: a pause of PaceSleep
	// after every PaceEvery pages.
	PaceEvery int           `json:"pace_every,omitempty"`
	PaceSleep time.Duration `json:"pace_sleep,omitempty"`
	// Latency times every touch of the passes (Pass.P50Ns, P99Ns,
	// MaxNs); the first touch of each pass is timed in any case.
	Latency bool `json:"latency,omitempty"`
	// Verify compares every byte of the guest with the memory file after
	// the passes.
	Verify bool `json:"verify"`
	// Balloon drops a range of the first region with MADV_DONTNEED after
	// the passes, as Firecracker's balloon device does, and checks that it
	// reads back as zeroes while the rest still holds the snapshot.
	Balloon bool `json:"balloon"`
	// CheckBalloonLate checks the ballooned range only after HoldFile
	// appeared (the range is dropped before): its first touch comes then.
	CheckBalloonLate bool `json:"check_balloon_late,omitempty"`
	// StartFile, when set, makes the VM wait after its handshake until
	// this file exists before it touches anything.
	StartFile string `json:"start_file,omitempty"`
	// PlugFile, when set, makes the VM wait after its passes until this
	// file exists before it plugs its unplugged memory (Region.Unplugged).
	PlugFile string `json:"plug_file,omitempty"`
	// HoldFile, when set, keeps the VM alive after its work until this
	// file exists.
	HoldFile string `json:"hold_file,omitempty"`
}

// Pass reports one touch pass.
type Pass struct {
	Order string `json:"order"`
	Pages int    `json:"pages"`
	Ns    int64  `json:"ns"`
	// FirstNs is the time the pass's first touch took: with the guest's
	// memory untouched, from its first fault to its page installed.
	FirstNs int64 `json:"first_ns"`
	// P50Ns, P99Ns and MaxNs are the touches' latencies (Config.Latency).
	P50Ns int64 `json:"p50_ns,omitempty"`
	P99Ns int64 `json:"p99_ns,omitempty"`
	MaxNs int64 `json:"max_ns,omitempty"`
}

// Result is what a VM reports on its standard output.
type Result struct {
	PID      int    `json:"pid"`
	Passes   []Pass `json:"passes"`
	Verified int    `json:"verified_pages"`
	// Ballooned is the number of bytes checked as zeroes after the
	// balloon.
	Ballooned int `json:"ballooned_bytes"`
	// UnpluggedResident is how many pages of the unplugged memory were
	// populated when the VM plugged it (mincore(2)): the handler should
	// have left them alone.
	UnpluggedResident int `json:"unplugged_resident_pages"`
	// Plugged is how many base pages the VM plugged, touched and checked.
	Plugged int    `json:"plugged_pages"`
	Error   string `json:"error,omitempty"`
}

// Child reports whether this process was started as a VM (EnvConfig set).
func Child() bool { return os.Getenv(EnvConfig) != "" }

// Main runs the VM described by EnvConfig, prints its Result as JSON on
// standard output and returns the exit status.
func Main() int {
	var cfg Config
	if err := json.Unmarshal([]byte(os.Getenv(EnvConfig)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "fctest: bad %s: %v\n", EnvConfig, err)
		return 2
	}
	res, err := Run(cfg)
	if err != nil {
		res.Error = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if err != nil {
		return 1
	}
	return 0
}

// Command returns a command that runs cfg in a new process: exe (a test
// binary whose TestMain calls Main when Child reports true) with args.
func Command(exe string, cfg Config, args ...string) (*exec.Cmd, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), EnvConfig+"="+string(b))
	return cmd, nil
}

// Wait waits for a VM started with Command and decodes its Result, whose
// standard output must have been captured in out.
func Wait(cmd *exec.Cmd, out *bytes.Buffer) (Result, error) {
	werr := cmd.Wait()
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return res, fmt.Errorf("fctest: no result (%v): exit %v; output %q", err, werr, out.String())
	}
	if res.Error != "" {
		return res, errors.New("fctest: " + res.Error)
	}
	return res, werr
}

const hugeSize = 2 << 20

// guest is the VM's memory.
type guest struct {
	regions []Region
	maps    [][]byte
	plugged []int // the accessible bytes at the start of each region
	file    []byte
}

// Run runs a VM in this process.
func Run(cfg Config) (Result, error) {
	res := Result{PID: os.Getpid()}
	if len(cfg.Regions) == 0 {
		return res, errors.New("no regions")
	}
	fd, err := os.Open(cfg.MemFile)
	if err != nil {
		return res, err
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return res, err
	}
	file, err := unix.Mmap(int(fd.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	fd.Close()
	if err != nil {
		return res, fmt.Errorf("map the memory file: %w", err)
	}
	defer unix.Munmap(file)

	// The userfaultfd, as Firecracker's UffdBuilder makes it:
	// userfaultfd(O_CLOEXEC|O_NONBLOCK) (/dev/userfaultfd when the system
	// call is refused), UFFDIO_API with UFFD_FEATURE_EVENT_REMOVE.
	u, err := uffd.Open(uffd.Config{Features: uffd.FeatureEventRemove})
	if err != nil {
		return res, err
	}
	defer func() {
		if u != nil {
			u.Close()
		}
	}()

	g := &guest{regions: cfg.Regions, file: file}
	var ms []firecracker.Mapping
	base := os.Getpagesize()
	for _, r := range cfg.Regions {
		flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_NORESERVE
		ps := base
		if r.Huge {
			flags |= unix.MAP_HUGETLB | 21<<unix.MAP_HUGE_SHIFT
			ps = hugeSize
		}
		if r.Unplugged > r.Size || r.Unplugged%uint64(ps) != 0 {
			return res, fmt.Errorf("unplugged %d bytes of a %d-byte region of %d-byte pages", r.Unplugged, r.Size, ps)
		}
		b, err := unix.Mmap(-1, 0, int(r.Size), unix.PROT_READ|unix.PROT_WRITE, flags)
		if err != nil {
			return res, fmt.Errorf("map guest memory (%d bytes, huge %v): %w", r.Size, r.Huge, err)
		}
		defer unix.Munmap(b)
		g.maps = append(g.maps, b)
		g.plugged = append(g.plugged, int(r.Size-r.Unplugged))
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if _, err := u.Register(addr, uintptr(len(b)), uffd.ModeMissing); err != nil {
			return res, err
		}
		if r.Unplugged > 0 {
			if err := unix.Mprotect(b[r.Size-r.Unplugged:], unix.PROT_NONE); err != nil {
				return res, fmt.Errorf("mprotect(PROT_NONE) the unplugged memory: %w", err)
			}
		}
		ms = append(ms, firecracker.Mapping{
			BaseHostVirtAddr: uint64(addr), Size: r.Size, Offset: r.Offset,
			PageSize: uint64(ps), PageSizeKiB: uint64(ps),
		})
	}
	// Like Firecracker, the VM never polls its userfaultfd: a duplicate
	// outside the Go runtime's poller is what it keeps and sends (closing
	// u takes the descriptor out of the poller, which would otherwise
	// wake an idle thread of this process on every fault).
	ufd, err := dupFD(u)
	if err != nil {
		return res, err
	}
	defer unix.Close(ufd)
	u.Close()
	u = nil

	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
	if err != nil {
		return res, err
	}
	defer conn.Close()
	if err := firecracker.SendHandshake(conn, ms, ufd); err != nil {
		return res, fmt.Errorf("send the handshake: %w", err)
	}

	waitFile(cfg.StartFile)
	for _, order := range cfg.Touch {
		p, err := g.touch(order, cfg.PaceEvery, cfg.PaceSleep, cfg.Latency)
		if err != nil {
			return res, err
		}
		res.Passes = append(res.Passes, p)
	}
	if cfg.Verify {
		n, err := g.verify()
		res.Verified = n
		if err != nil {
			return res, err
		}
	}
	var lo, hi int
	if cfg.Balloon {
		if lo, hi, err = g.balloon(); err != nil {
			return res, err
		}
		if !cfg.CheckBalloonLate {
			if res.Ballooned, err = g.checkBalloon(lo, hi); err != nil {
				return res, err
			}
		}
	}
	if g.hasUnplugged() {
		waitFile(cfg.PlugFile)
		if res.UnpluggedResident, err = g.unpluggedResident(); err != nil {
			return res, err
		}
		if res.Plugged, err = g.plug(); err != nil {
			return res, err
		}
	}
	waitFile(cfg.HoldFile)
	if cfg.Balloon && cfg.CheckBalloonLate {
		if res.Ballooned, err = g.checkBalloon(lo, hi); err != nil {
			return res, err
		}
	}
	return res, nil
}

func waitFile(path string) {
	if path == "" {
		return
	}
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dupFD returns a duplicate of u's descriptor, close-on-exec.
func dupFD(u *uffd.UFFD) (int, error) {
	rc, err := u.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup the userfaultfd: %w", derr)
	}
	return fd, nil
}

// pages lists (region, offset) of every plugged base page, in address
// order.
func (g *guest) pages() [][2]int {
	var out [][2]int
	ps := os.Getpagesize()
	for i := range g.maps {
		for off := 0; off < g.plugged[i]; off += ps {
			out = append(out, [2]int{i, off})
		}
	}
	return out
}

// shuffle permutes p as ref_handler.c does for one faulter (xorshift64,
// seed 0x9e3779b97f4a7c15), so that random-order figures compare.
func shuffle(p [][2]int) {
	seed := uint64(0x9e3779b97f4a7c15)
	for i := len(p) - 1; i > 0; i-- {
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		j := int(seed % uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
}

var sink byte

// touch makes one pass over the guest, timing its first touch, and every
// touch with latency.
func (g *guest) touch(order string, paceEvery int, paceSleep time.Duration, latency bool) (Pass, error) {
	pages := g.pages()
	write := false
	switch order {
	case "seq":
	case "random":
		shuffle(pages)
	case "seq-write":
		write = true
	case "random-write":
		write = true
		shuffle(pages)
	default:
		return Pass{}, fmt.Errorf("unknown touch order %q", order)
	}
	// The bytes to write, read from the file before the clock starts.
	var want []byte
	if write {
		want = make([]byte, len(pages))
		for i, p := range pages {
			want[i] = g.file[int(g.regions[p[0]].Offset)+p[1]]
		}
	}
	var lat []int64
	if latency {
		lat = make([]int64, len(pages))
	}
	runtime.GC() // not during the pass
	var acc byte
	var first time.Duration
	t0 := time.Now()
	last := t0
	for i, p := range pages {
		b := g.maps[p[0]]
		if write {
			b[p[1]] = want[i]
		} else {
			acc += b[p[1]]
		}
		if i == 0 {
			first = time.Since(t0)
		}
		if latency {
			now := time.Now()
			lat[i] = int64(now.Sub(last))
			last = now
		}
		if paceEvery > 0 && i%paceEvery == paceEvery-1 {
			time.Sleep(paceSleep)
			if latency {
				last = time.Now()
			}
		}
	}
	ns := time.Since(t0).Nanoseconds()
	sink += acc
	pass := Pass{Order: order, Pages: len(pages), Ns: ns, FirstNs: first.Nanoseconds()}
	if len(lat) > 0 {
		slices.Sort(lat)
		pass.P50Ns, pass.P99Ns, pass.MaxNs = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	return pass, nil
}

// verify compares every page of the guest with the memory file.
func (g *guest) verify() (int, error) {
	ps := os.Getpagesize()
	n := 0
	for i, b := range g.maps {
		r := g.regions[i]
		for off := 0; off < g.plugged[i]; off += ps {
			got := b[off : off+ps]
			want := g.file[int(r.Offset)+off : int(r.Offset)+off+ps]
			if !bytes.Equal(got, want) {
				return n, fmt.Errorf("region %d offset %#x (file offset %#x): guest memory differs from the memory file (first bytes %x, want %x)", i, off, int(r.Offset)+off, got[:8], want[:8])
			}
			n++
		}
	}
	return n, nil
}

// balloon drops a range of the first region, [lo, hi), with
// MADV_DONTNEED, as Firecracker's balloon device does.
func (g *guest) balloon() (lo, hi int, err error) {
	b, r := g.maps[0][:g.plugged[0]], g.regions[0]
	unit := os.Getpagesize() * 64 // 256 KiB
	if r.Huge {
		unit = 2 * hugeSize
	}
	if len(b) < 4*unit {
		return 0, 0, fmt.Errorf("the first region (%d bytes) is too small to balloon %d bytes in", len(b), unit)
	}
	lo = (len(b) / 4) &^ (unit - 1)
	hi = lo + unit
	fileRange := g.file[int(r.Offset)+lo : int(r.Offset)+hi]
	if bytes.Count(fileRange, []byte{0}) == len(fileRange) {
		return 0, 0, errors.New("the memory file holds zeroes where the balloon goes: the check would prove nothing")
	}
	if err := unix.Madvise(b[lo:hi], unix.MADV_DONTNEED); err != nil {
		return 0, 0, fmt.Errorf("madvise(MADV_DONTNEED): %w", err)
	}
	return lo, hi, nil
}

// checkBalloon checks that [lo, hi) of the first region reads as zeroes
// and that the pages around it still hold the snapshot.
func (g *guest) checkBalloon(lo, hi int) (int, error) {
	b, r := g.maps[0], g.regions[0]
	for off := lo; off < hi; off++ {
		if b[off] != 0 {
			return off - lo, fmt.Errorf("ballooned byte at offset %#x reads %#x, want 0", off, b[off])
		}
	}
	ps := os.Getpagesize()
	for _, off := range []int{lo - ps, hi} {
		if !bytes.Equal(b[off:off+ps], g.file[int(r.Offset)+off:int(r.Offset)+off+ps]) {
			return hi - lo, fmt.Errorf("the page at offset %#x next to the balloon lost its contents", off)
		}
	}
	return hi - lo, nil
}

func (g *guest) hasUnplugged() bool {
	for i, b := range g.maps {
		if g.plugged[i] < len(b) {
			return true
		}
	}
	return false
}

// unpluggedResident counts the pages of the unplugged memory that are
// populated (mincore(2)).
func (g *guest) unpluggedResident() (int, error) {
	n := 0
	ps := os.Getpagesize()
	for i, b := range g.maps {
		un := b[g.plugged[i]:]
		if len(un) == 0 {
			continue
		}
		vec := make([]byte, (len(un)+ps-1)/ps)
		_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(un))), uintptr(len(un)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
		if errno != 0 {
			return 0, fmt.Errorf("mincore of the unplugged memory: %w", errno)
		}
		for _, v := range vec {
			n += int(v & 1)
		}
	}
	return n, nil
}

// plug makes the unplugged memory accessible, as a VMM does when the guest
// plugs it (mprotect read-write), touches each of its pages in address
// order and checks them against the memory file.
func (g *guest) plug() (int, error) {
	ps := os.Getpagesize()
	n := 0
	for i, b := range g.maps {
		lo := g.plugged[i]
		if lo == len(b) {
			continue
		}
		if err := unix.Mprotect(b[lo:], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return n, fmt.Errorf("mprotect(PROT_READ|PROT_WRITE) to plug: %w", err)
		}
		g.plugged[i] = len(b)
		r := g.regions[i]
		for off := lo; off < len(b); off += ps {
			got := b[off : off+ps]
			want := g.file[int(r.Offset)+off : int(r.Offset)+off+ps]
			if !bytes.Equal(got, want) {
				return n, fmt.Errorf("region %d offset %#x (file offset %#x), plugged: guest memory differs from the memory file (first bytes %x, want %x)", i, off, int(r.Offset)+off, got[:8], want[:8])
			}
			n++
		}
	}
	return n, nil
}
