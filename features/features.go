package features

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
)

// Report is what the kernel supports, as Collect found it. See the package
// documentation for the JSON field names.
type Report struct {
	Kernel                  Kernel         `json:"kernel"`
	EUID                    int            `json:"euid"`
	CapSysPtrace            bool           `json:"cap_sys_ptrace"`
	Paths                   []Path         `json:"open_paths"`
	API                     uint64         `json:"api"`
	Features                []Feature      `json:"features"`
	FdIoctls                []string       `json:"fd_ioctls"`
	Registrations           []Registration `json:"registrations"`
	PageSize                int            `json:"page_size"`
	HugePages               []HugePagePool `json:"huge_pages"`
	UnprivilegedUserfaultfd Sysctl         `json:"unprivileged_userfaultfd"`
	Device                  Device         `json:"device"`
	PagemapScan             PagemapScan    `json:"pagemap_scan"`
}

// Kernel identifies the running kernel.
type Kernel struct {
	Release string `json:"release"` // "6.18.0"
	Machine string `json:"machine"` // "x86_64"
}

// Path says whether one way of creating a userfaultfd works.
type Path struct {
	Path   string `json:"path"` // "syscall", "device" or "user-mode-only"
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"` // why it works
	Error  string `json:"error,omitempty"`  // why not, with what to change
}

// Feature is one UFFD_FEATURE_* bit.
type Feature struct {
	Name       string `json:"name"`        // Go name: "Move"
	KernelName string `json:"kernel_name"` // "UFFD_FEATURE_MOVE"
	Since      string `json:"since"`       // first Linux release: "6.8"
	Supported  bool   `json:"supported"`
}

// Registration is the outcome of registering one page of a memory kind in
// one mode.
type Registration struct {
	Memory  string   `json:"memory"` // mem.Kind name: "anon", "shmem", ...
	Mode    string   `json:"mode"`   // uffd.Mode name: "Missing", "WriteProtect", "Minor"
	OK      bool     `json:"ok"`
	Ioctls  []string `json:"ioctls"`            // range ioctls when OK
	Errno   string   `json:"errno,omitempty"`   // "EINVAL" when refused
	Error   string   `json:"error,omitempty"`   // the full error
	Skipped string   `json:"skipped,omitempty"` // why nothing was tried
}

// HugePagePool is one huge page size and its pool.
type HugePagePool struct {
	Size  int `json:"size"` // bytes
	Total int `json:"total"`
	Free  int `json:"free"`
	// Reserved counts free pages that mappings made earlier have
	// reserved: a new mapping can have Free - Reserved.
	Reserved int  `json:"reserved"`
	Default  bool `json:"default"` // the size hugetlbfs memfds use
}

// Sysctl is the value of an integer sysctl.
type Sysctl struct {
	Value *int   `json:"value"` // nil when unreadable
	Error string `json:"error,omitempty"`
}

// Device describes /dev/userfaultfd.
type Device struct {
	Path   string `json:"path"`
	Exists bool   `json:"exists"`
	Mode   string `json:"mode,omitempty"` // "crw-------"
	Perm   string `json:"perm,omitempty"` // "0600"
	Error  string `json:"error,omitempty"`
}

// PagemapScan says whether the PAGEMAP_SCAN ioctl of /proc/PID/pagemap
// works.
type PagemapScan struct {
	Supported bool   `json:"supported"`
	Error     string `json:"error,omitempty"`
}

// Modes lists the registration modes Collect tries, each on its own.
var Modes = []uffd.Mode{uffd.ModeMissing, uffd.ModeWriteProtect, uffd.ModeMinor}

// Collect asks the kernel what it supports. It fails only when no
// userfaultfd can be created at all; the Report then holds everything that
// could be found without one (and the open paths' errors say why).
func Collect() (Report, error) {
	r := Report{EUID: os.Geteuid(), CapSysPtrace: hasCapSysPtrace(), PageSize: mem.PageSize(), Registrations: []Registration{}}
	r.Kernel = uname()
	r.HugePages = hugePagePools()
	r.UnprivilegedUserfaultfd = readSysctl("/proc/sys/vm/unprivileged_userfaultfd")
	r.Device = device(uffd.DefaultDevice)
	r.PagemapScan = pagemapScan()

	var sup uffd.Support
	var works bool
	var openWith uffd.Config // the first way that works
	for _, p := range openPaths {
		s, err := uffd.ProbeConfig(p.cfg)
		pr := Path{Path: p.name, OK: err == nil}
		if err != nil {
			pr.Error = err.Error()
		} else {
			pr.Reason = r.pathReason(p.cfg)
		}
		if err == nil && !works {
			sup, works, openWith = s, true, p.cfg
		}
		r.Paths = append(r.Paths, pr)
	}
	r.API = sup.API
	for _, f := range uffd.Features() {
		r.Features = append(r.Features, Feature{
			Name:       f.String(),
			KernelName: f.KernelName(),
			Since:      f.Since(),
			Supported:  sup.Features.Has(f),
		})
	}
	r.FdIoctls = ioctlNames(sup.Ioctls)
	if !works {
		return r, errors.New("features: this process can create no userfaultfd (see the open paths' errors)")
	}
	regs, err := registrations(sup, openWith)
	if err != nil {
		return r, err
	}
	r.Registrations = regs
	return r, nil
}

// openPaths are the ways of creating a userfaultfd that the report tries.
var openPaths = []struct {
	name string
	cfg  uffd.Config
}{
	{"syscall", uffd.Config{Path: uffd.PathSyscall}},
	{"device", uffd.Config{Path: uffd.PathDevice}},
	{"user-mode-only", uffd.Config{Path: uffd.PathSyscall, UserModeOnly: true}},
}

// pathReason says why a creation path that works does: what the kernel
// checks (userfaultfd(2): the sysctl or CAP_SYS_PTRACE, or nothing with
// UFFD_USER_MODE_ONLY; the device: only the permissions of the file).
func (r *Report) pathReason(cfg uffd.Config) string {
	if cfg.Path == uffd.PathDevice {
		return "read/write access to " + r.Device.Path
	}
	if cfg.UserModeOnly {
		return "open to every user; faults taken inside system calls then fail with EFAULT"
	}
	if v := r.UnprivilegedUserfaultfd.Value; v != nil && *v == 1 {
		return "vm.unprivileged_userfaultfd is 1"
	}
	if r.CapSysPtrace {
		return "the process has CAP_SYS_PTRACE"
	}
	return ""
}

// registrations registers one page of every memory kind in every mode.
func registrations(sup uffd.Support, cfg uffd.Config) ([]Registration, error) {
	// The features that allow registrations beyond anonymous missing mode
	// (recent kernels allow them regardless; older ones want them asked
	// for).
	want := uffd.FeatureMissingShmem | uffd.FeatureMissingHugetlbfs |
		uffd.FeatureMinorShmem | uffd.FeatureMinorHugetlbfs | uffd.FeatureWPHugetlbfsShmem
	cfg.Features = want & sup.Features
	u, err := uffd.Open(cfg)
	if err != nil {
		return nil, err
	}
	defer u.Close()

	var regs []Registration
	for _, kind := range mem.Kinds {
		for _, mode := range Modes {
			regs = append(regs, register(u, kind, mode))
		}
	}
	return regs, nil
}

func register(u *uffd.UFFD, kind mem.Kind, mode uffd.Mode) Registration {
	reg := Registration{Memory: kind.String(), Mode: mode.String(), Ioctls: []string{}}
	size := mem.PageSize()
	if kind.Huge() {
		hps, err := mem.HugePageSize()
		if err != nil {
			reg.Skipped = "no hugetlbfs: " + err.Error()
			return reg
		}
		need, _ := mem.HugePagesFor(kind, hps)
		if _, avail, err := hugePages(); err != nil || avail < need {
			reg.Skipped = fmt.Sprintf("needs %d free and unreserved %s huge pages, %d are (raise /proc/sys/vm/nr_hugepages)", need, sizeString(hps), avail)
			return reg
		}
		size = hps
	}
	m, err := mem.Map(kind, size)
	if err != nil {
		if kind.Huge() {
			reg.Skipped = err.Error()
		} else {
			reg.Error = err.Error()
		}
		return reg
	}
	defer m.Close()
	ioctls, err := u.Register(m.Addr(), m.Len(), mode)
	if err != nil {
		reg.Error = err.Error()
		var errno syscall.Errno
		if errors.As(err, &errno) {
			reg.Errno = errnoName(errno)
		}
		return reg
	}
	reg.OK = true
	reg.Ioctls = ioctlNames(ioctls)
	if err := u.Unregister(m.Addr(), m.Len()); err != nil {
		reg.Error = err.Error()
	}
	return reg
}

// hugePages is mem.HugePages; tests replace it to see the report without
// free huge pages, rather than emptying the system's pool under other users.
var hugePages = mem.HugePages

func ioctlNames(set uffd.Ioctl) []string {
	names := []string{}
	for _, i := range uffd.Ioctls() {
		if set.Has(i) {
			names = append(names, i.String())
		}
	}
	return names
}

const hugepagesDir = "/sys/kernel/mm/hugepages"

func hugePagePools() []HugePagePool {
	pools := []HugePagePool{}
	sizes, err := mem.HugePageSizes()
	if err != nil {
		return pools
	}
	def, _ := mem.HugePageSize()
	for _, size := range sizes {
		dir := filepath.Join(hugepagesDir, fmt.Sprintf("hugepages-%dkB", size>>10))
		p := HugePagePool{Size: size, Default: size == def}
		p.Total, _ = readInt(filepath.Join(dir, "nr_hugepages"))
		p.Free, _ = readInt(filepath.Join(dir, "free_hugepages"))
		p.Reserved, _ = readInt(filepath.Join(dir, "resv_hugepages"))
		pools = append(pools, p)
	}
	return pools
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func readSysctl(path string) Sysctl {
	v, err := readInt(path)
	if err != nil {
		return Sysctl{Error: err.Error()}
	}
	return Sysctl{Value: &v}
}

func device(path string) Device {
	d := Device{Path: path}
	fi, err := os.Stat(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.Error = err.Error()
		}
		return d
	}
	d.Exists = true
	d.Mode = lsMode(fi.Mode())
	d.Perm = fmt.Sprintf("%#o", fi.Mode().Perm())
	return d
}

// lsMode spells a mode as ls -l does: "crw-------".
func lsMode(m os.FileMode) string {
	t := byte('-')
	switch {
	case m&os.ModeCharDevice != 0:
		t = 'c'
	case m&os.ModeDevice != 0:
		t = 'b'
	case m.IsDir():
		t = 'd'
	case m&os.ModeSymlink != 0:
		t = 'l'
	}
	perm := []byte(m.Perm().String()) // "-rw-------"
	perm[0] = t
	return string(perm)
}

// sizeString prints a byte count in the largest binary unit that divides
// it: "2 MiB", "1 GiB", "4096 B".
func sizeString(n int) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}
