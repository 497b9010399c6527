package uffd

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/mem"
)

// featureTable is every feature with its Go name, kernel name and first
// release, from include/uapi/linux/userfaultfd.h and the kernel history.
var featureTable = []struct {
	f            Feature
	name, kernel string
	since        string
}{
	{FeatureWPFaults, "WPFaults", "UFFD_FEATURE_PAGEFAULT_FLAG_WP", "5.7"},
	{FeatureEventFork, "EventFork", "UFFD_FEATURE_EVENT_FORK", "4.11"},
	{FeatureEventRemap, "EventRemap", "UFFD_FEATURE_EVENT_REMAP", "4.11"},
	{FeatureEventRemove, "EventRemove", "UFFD_FEATURE_EVENT_REMOVE", "4.11"},
	{FeatureMissingHugetlbfs, "MissingHugetlbfs", "UFFD_FEATURE_MISSING_HUGETLBFS", "4.11"},
	{FeatureMissingShmem, "MissingShmem", "UFFD_FEATURE_MISSING_SHMEM", "4.11"},
	{FeatureEventUnmap, "EventUnmap", "UFFD_FEATURE_EVENT_UNMAP", "4.11"},
	{FeatureSigbus, "Sigbus", "UFFD_FEATURE_SIGBUS", "4.14"},
	{FeatureThreadID, "ThreadID", "UFFD_FEATURE_THREAD_ID", "4.14"},
	{FeatureMinorHugetlbfs, "MinorHugetlbfs", "UFFD_FEATURE_MINOR_HUGETLBFS", "5.13"},
	{FeatureMinorShmem, "MinorShmem", "UFFD_FEATURE_MINOR_SHMEM", "5.14"},
	{FeatureExactAddress, "ExactAddress", "UFFD_FEATURE_EXACT_ADDRESS", "5.18"},
	{FeatureWPHugetlbfsShmem, "WPHugetlbfsShmem", "UFFD_FEATURE_WP_HUGETLBFS_SHMEM", "5.19"},
	{FeatureWPUnpopulated, "WPUnpopulated", "UFFD_FEATURE_WP_UNPOPULATED", "6.4"},
	{FeaturePoison, "Poison", "UFFD_FEATURE_POISON", "6.6"},
	{FeatureWPAsync, "WPAsync", "UFFD_FEATURE_WP_ASYNC", "6.7"},
	{FeatureMove, "Move", "UFFD_FEATURE_MOVE", "6.8"},
}

func TestFeatureNames(t *testing.T) {
	if len(featureTable) != 17 || len(Features()) != 17 {
		t.Fatalf("%d features in the table, Features() lists %d; want 17", len(featureTable), len(Features()))
	}
	var all Feature
	for i, ft := range featureTable {
		if ft.f != 1<<i {
			t.Errorf("%s is bit %#x, want bit %d", ft.name, uint64(ft.f), i)
		}
		if Features()[i] != ft.f {
			t.Errorf("Features()[%d] = %v, want %v", i, Features()[i], ft.name)
		}
		if got := ft.f.String(); got != ft.name {
			t.Errorf("String of bit %d: %q, want %q", i, got, ft.name)
		}
		if got := ft.f.KernelName(); got != ft.kernel {
			t.Errorf("%s.KernelName() = %q, want %q", ft.name, got, ft.kernel)
		}
		if got := ft.f.Since(); got != ft.since {
			t.Errorf("%s.Since() = %q, want %q", ft.name, got, ft.since)
		}
		all |= ft.f
	}
	if all != AllFeatures {
		t.Errorf("AllFeatures = %#x, want %#x", uint64(AllFeatures), uint64(all))
	}
	for _, tc := range []struct {
		f    Feature
		want string
	}{
		{0, "0"},
		{FeatureSigbus | FeatureMove, "Sigbus|Move"},
		{1 << 17, "0x20000"},
		{1 << 40, "0x10000000000"},
		{FeatureWPFaults | 1<<20 | 1<<63, "WPFaults|0x8000000000100000"},
		{AllFeatures, "WPFaults|EventFork|EventRemap|EventRemove|MissingHugetlbfs|MissingShmem|EventUnmap|Sigbus|ThreadID|MinorHugetlbfs|MinorShmem|ExactAddress|WPHugetlbfsShmem|WPUnpopulated|Poison|WPAsync|Move"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("Feature(%#x).String() = %q, want %q", uint64(tc.f), got, tc.want)
		}
	}
	// Sets and unknown bits have no kernel name or release.
	for _, f := range []Feature{0, FeatureSigbus | FeatureMove, 1 << 17, 1 << 63} {
		if f.KernelName() != "" || f.Since() != "" {
			t.Errorf("Feature(%#x): KernelName %q, Since %q; want both empty", uint64(f), f.KernelName(), f.Since())
		}
	}
	if !(FeatureSigbus | FeatureMove).Has(FeatureMove) || FeatureSigbus.Has(FeatureSigbus|FeatureMove) {
		t.Error("Feature.Has is wrong")
	}
}

func TestIoctlNames(t *testing.T) {
	for _, tc := range []struct {
		i            Ioctl
		name, kernel string
		bit          int
	}{
		{IoctlRegister, "Register", "UFFDIO_REGISTER", 0},
		{IoctlUnregister, "Unregister", "UFFDIO_UNREGISTER", 1},
		{IoctlWake, "Wake", "UFFDIO_WAKE", 2},
		{IoctlCopy, "Copy", "UFFDIO_COPY", 3},
		{IoctlZeroPage, "ZeroPage", "UFFDIO_ZEROPAGE", 4},
		{IoctlMove, "Move", "UFFDIO_MOVE", 5},
		{IoctlWriteProtect, "WriteProtect", "UFFDIO_WRITEPROTECT", 6},
		{IoctlContinue, "Continue", "UFFDIO_CONTINUE", 7},
		{IoctlPoison, "Poison", "UFFDIO_POISON", 8},
		{IoctlAPI, "API", "UFFDIO_API", 63},
	} {
		if tc.i != 1<<tc.bit {
			t.Errorf("%s is %#x, want bit %d", tc.name, uint64(tc.i), tc.bit)
		}
		if got := tc.i.String(); got != tc.name {
			t.Errorf("Ioctl bit %d: String %q, want %q", tc.bit, got, tc.name)
		}
		if got := tc.i.KernelName(); got != tc.kernel {
			t.Errorf("%s.KernelName() = %q, want %q", tc.name, got, tc.kernel)
		}
		if tc.i.Since() == "" {
			t.Errorf("%s.Since() is empty", tc.name)
		}
	}
	if len(Ioctls()) != 10 {
		t.Errorf("Ioctls() lists %d, want 10", len(Ioctls()))
	}
	for _, tc := range []struct {
		i    Ioctl
		want string
	}{
		{0, "0"},
		{IoctlCopy | IoctlWake, "Wake|Copy"},
		{1 << 10, "0x400"},
		{IoctlAPI | IoctlRegister | 1<<9, "Register|API|0x200"},
	} {
		if got := tc.i.String(); got != tc.want {
			t.Errorf("Ioctl(%#x).String() = %q, want %q", uint64(tc.i), got, tc.want)
		}
	}
}

func TestModeEventFlagNames(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{ModeMissing.String(), "Missing"},
		{ModeWriteProtect.String(), "WriteProtect"},
		{ModeMinor.String(), "Minor"},
		{(ModeMissing | ModeWriteProtect).String(), "Missing|WriteProtect"},
		{Mode(0).String(), "0"},
		{Mode(1 << 5).String(), "0x20"},
		{(ModeMinor | 1<<3).String(), "Minor|0x8"},

		{EventPagefault.String(), "Pagefault"},
		{EventFork.String(), "Fork"},
		{EventRemap.String(), "Remap"},
		{EventRemove.String(), "Remove"},
		{EventUnmap.String(), "Unmap"},
		{Event(0).String(), "Event(0)"},
		{Event(0x99).String(), "Event(153)"},

		{FaultWrite.String(), "Write"},
		{FaultWriteProtect.String(), "WriteProtect"},
		{FaultMinor.String(), "Minor"},
		{(FaultWrite | FaultWriteProtect).String(), "Write|WriteProtect"},
		{FaultFlags(0).String(), "0"},
		{FaultFlags(1 << 8).String(), "0x100"},

		{DontWake.String(), "DontWake"},
		{WriteProtected.String(), "WriteProtected"},
		{AllowSrcHoles.String(), "AllowSrcHoles"},
		{(DontWake | AllowSrcHoles).String(), "DontWake|AllowSrcHoles"},
		{Flags(0).String(), "0"},
		{Flags(1 << 7).String(), "0x80"},
	} {
		if tc.got != tc.want {
			t.Errorf("String() = %q, want %q", tc.got, tc.want)
		}
	}
	for e, want := range map[Event]uint8{EventPagefault: 0x12, EventFork: 0x13, EventRemap: 0x14, EventRemove: 0x15, EventUnmap: 0x16} {
		if uint8(e) != want {
			t.Errorf("%v = %#x, want %#x", e, uint8(e), want)
		}
	}
}

func TestNotSupportedError(t *testing.T) {
	err := missingFeatures(AllFeatures | 1<<40)
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("%v does not match ErrNotSupported", err)
	}
	if err.Features != AllFeatures|1<<40 {
		t.Errorf("Features = %v", err.Features)
	}
	msg := err.Error()
	for _, ft := range featureTable {
		for _, part := range []string{ft.name, ft.kernel, "Linux " + ft.since} {
			if !strings.Contains(msg, part) {
				t.Errorf("message %q does not name %q", msg, part)
			}
		}
	}
	if !strings.Contains(msg, "0x10000000000") {
		t.Errorf("message %q does not name the unknown bit", msg)
	}
	one := missingFeatures(FeatureMove).Error()
	if !strings.Contains(one, "UFFD_FEATURE_MOVE") || !strings.Contains(one, "6.8") || strings.Contains(one, "Sigbus") {
		t.Errorf("message for Move alone: %q", one)
	}
	if errors.Is(errors.New("x"), ErrNotSupported) {
		t.Error("an unrelated error matches ErrNotSupported")
	}

	// Open names unknown bits the same way, before creating anything.
	u, oerr := Open(Config{Features: FeatureSigbus | 1<<40})
	if oerr == nil {
		u.Close()
		t.Fatal("Open with an unknown feature bit succeeded")
	}
	var nse *NotSupportedError
	if !errors.As(oerr, &nse) || !errors.Is(oerr, ErrNotSupported) {
		t.Fatalf("Open with an unknown feature: %v, want a *NotSupportedError", oerr)
	}
	if nse.Features != 1<<40 || !strings.Contains(oerr.Error(), "0x10000000000") || !strings.Contains(oerr.Error(), "UFFDIO_API") {
		t.Errorf("Open with an unknown feature: %v (features %v)", oerr, nse.Features)
	}
}

func TestOpErrorSentinels(t *testing.T) {
	for _, tc := range []struct {
		errno    syscall.Errno
		done     int
		sentinel error
	}{
		{syscall.EEXIST, 0, ErrPageExists},
		{syscall.ESRCH, 0, ErrProcessGone},
		{syscall.ENOENT, 0, ErrNoMapping},
		{syscall.EAGAIN, 0, ErrMmapChanging},
		{syscall.EAGAIN, 4096, ErrPartial},
		{syscall.EBADF, 0, ErrClosed},
	} {
		err := opErr("UFFDIO_COPY", 0x10000, 0x2000, tc.done, tc.errno)
		if !errors.Is(err, tc.sentinel) {
			t.Errorf("%v: does not match %v", err, tc.sentinel)
		}
		if tc.sentinel != ErrClosed && !errors.Is(err, tc.errno) {
			t.Errorf("%v: does not match errno %v", err, tc.errno)
		}
		msg := err.Error()
		if !strings.Contains(msg, "UFFDIO_COPY") || !strings.Contains(msg, "0x10000") || !strings.Contains(msg, "0x2000") {
			t.Errorf("message %q does not name the op and range", msg)
		}
		if tc.done > 0 && !strings.Contains(msg, "4096 bytes") {
			t.Errorf("message %q does not say how much was done", msg)
		}
		var oe *OpError
		if !errors.As(err, &oe) || oe.Done != tc.done || oe.Op != "UFFDIO_COPY" {
			t.Errorf("%v: OpError %+v", err, oe)
		}
	}
	if errors.Is(opErr("UFFDIO_COPY", 0, 4096, 4096, syscall.EAGAIN), ErrMmapChanging) {
		t.Error("a partial copy matches ErrMmapChanging")
	}
	if errors.Is(opErr("UFFDIO_COPY", 0, 4096, 0, syscall.EAGAIN), ErrPartial) {
		t.Error("an EAGAIN with nothing done matches ErrPartial")
	}
	// Other errnos stay as they are.
	if err := opErr("UFFDIO_WAKE", 0, 4096, 0, syscall.ENOMEM); !errors.Is(err, unix.ENOMEM) {
		t.Errorf("%v does not match ENOMEM", err)
	}
	// The sentinels match their errnos directly, too.
	for sentinel, errno := range map[error]syscall.Errno{ErrPageExists: unix.EEXIST, ErrProcessGone: unix.ESRCH, ErrNoMapping: unix.ENOENT, ErrMmapChanging: unix.EAGAIN, ErrPartial: unix.EAGAIN} {
		if !errors.Is(sentinel, errno) {
			t.Errorf("%v does not match %v", sentinel, errno)
		}
	}
	if ErrClosed != os.ErrClosed {
		t.Error("ErrClosed is not os.ErrClosed")
	}
}

// openForErrors opens a userfaultfd and maps anonymous memory for the error
// tests, both released when the test ends.
func openForErrors(t *testing.T, features Feature, pages int) (*UFFD, *mem.Mapping) {
	t.Helper()
	u, err := Open(Config{Features: features})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	m, err := mem.Map(mem.Anonymous, pages*mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return u, m
}

func TestOpErrorsFromKernel(t *testing.T) {
	u, m := openForErrors(t, 0, 2)
	ps := uintptr(m.PageSize)
	page := make([]byte, ps)

	// Nothing registered: ENOENT.
	_, err := u.Copy(m.Addr(), page, 0)
	if !errors.Is(err, ErrNoMapping) || !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "UFFDIO_COPY") {
		t.Errorf("Copy to unregistered memory: %v, want ErrNoMapping (ENOENT) naming UFFDIO_COPY", err)
	}
	if _, err := u.Register(m.Addr(), m.Len(), ModeMissing); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Copy(m.Addr(), page, 0); err != nil {
		t.Fatal(err)
	}
	// The page exists now: EEXIST.
	n, err := u.Copy(m.Addr(), page, 0)
	if !errors.Is(err, ErrPageExists) || !errors.Is(err, unix.EEXIST) || n != 0 {
		t.Errorf("Copy over a present page: %d, %v; want 0, ErrPageExists (EEXIST)", n, err)
	}
	var oe *OpError
	if !errors.As(err, &oe) || oe.Op != "UFFDIO_COPY" || oe.Addr != m.Addr() || oe.Len != ps {
		t.Errorf("OpError %+v does not describe the copy", oe)
	}
	_, err = u.ZeroPage(m.Addr(), ps, 0)
	if !errors.Is(err, ErrPageExists) || !strings.Contains(err.Error(), "UFFDIO_ZEROPAGE") {
		t.Errorf("ZeroPage over a present page: %v", err)
	}
	// Copying two pages of which only the second exists stops after the
	// first: a partial copy, EAGAIN with the bytes done.
	if _, err := u.Copy(m.Addr()+ps, page, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Madvise(m.Data[:ps], unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	n, err = u.Copy(m.Addr(), make([]byte, 2*ps), 0)
	if !errors.Is(err, ErrPartial) || !errors.Is(err, unix.EAGAIN) || errors.Is(err, ErrMmapChanging) || n != int(ps) {
		t.Errorf("Copy of a missing and a present page: %d, %v; want %d, ErrPartial (EAGAIN)", n, err, ps)
	}
	if errors.As(err, &oe) && oe.Done != int(ps) {
		t.Errorf("OpError.Done = %d, want %d", oe.Done, ps)
	}
	// Register in modes the memory does not support: EINVAL, explained.
	_, err = u.Register(m.Addr(), m.Len(), ModeMinor)
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "UFFDIO_REGISTER") || !strings.Contains(err.Error(), "Minor") {
		t.Errorf("Register(Minor) of anonymous memory: %v, want EINVAL naming the op and mode", err)
	}
}

// TestOpErrorMmapChanging gets a real EAGAIN: a resolve while a remove
// event is pending fails with ErrMmapChanging, and succeeds once it is read.
func TestOpErrorMmapChanging(t *testing.T) {
	u, m := openForErrors(t, FeatureEventRemove, 1)
	if _, err := u.Register(m.Addr(), m.Len(), ModeMissing); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- unix.Madvise(m.Data, unix.MADV_DONTNEED) }()
	rc, err := u.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Wait (in poll(2), bounded) until the remove event is queued.
	var perr error
	var n int
	if err := rc.Control(func(fd uintptr) {
		for {
			n, perr = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 30000)
			if perr != unix.EINTR {
				return
			}
		}
	}); err != nil || perr != nil || n != 1 {
		t.Fatalf("waiting for the remove event: %d, %v, %v", n, err, perr)
	}
	page := make([]byte, m.PageSize)
	_, err = u.Copy(m.Addr(), page, 0)
	if !errors.Is(err, ErrMmapChanging) || !errors.Is(err, unix.EAGAIN) || errors.Is(err, ErrPartial) {
		t.Errorf("Copy with a remove event pending: %v, want ErrMmapChanging (EAGAIN)", err)
	}
	msgs := make([]Message, 2)
	got, err := u.ReadMessages(t.Context(), msgs)
	if err != nil || got != 1 || msgs[0].Event != EventRemove || msgs[0].Start != m.Addr() || msgs[0].End != m.Addr()+m.Len() {
		t.Fatalf("read %v, %v; want the remove event", msgs[:got], err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := u.Copy(m.Addr(), page, 0); err != nil {
		t.Errorf("Copy after the event was read: %v", err)
	}
}

// TestRejectedFlags checks that flags an operation does not take, and
// misaligned ranges, fail with EINVAL before the system call: on a closed
// UFFD, whose system calls would report ErrClosed.
func TestRejectedFlags(t *testing.T) {
	u, m := openForErrors(t, 0, 2)
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	addr, ps := m.Addr(), uintptr(m.PageSize)
	page := make([]byte, ps)
	for _, tc := range []struct {
		name, op string
		call     func() error
	}{
		{"Copy+AllowSrcHoles", "UFFDIO_COPY", func() error { _, err := u.Copy(addr, page, AllowSrcHoles); return err }},
		{"Copy+unknown", "UFFDIO_COPY", func() error { _, err := u.Copy(addr, page, 1<<6); return err }},
		{"ZeroPage+WriteProtected", "UFFDIO_ZEROPAGE", func() error { _, err := u.ZeroPage(addr, ps, WriteProtected); return err }},
		{"ZeroPage+AllowSrcHoles", "UFFDIO_ZEROPAGE", func() error { _, err := u.ZeroPage(addr, ps, AllowSrcHoles); return err }},
		{"WriteProtect+WriteProtected", "UFFDIO_WRITEPROTECT", func() error { return u.WriteProtect(addr, ps, true, WriteProtected) }},
		{"WriteProtect+AllowSrcHoles", "UFFDIO_WRITEPROTECT", func() error { return u.WriteProtect(addr, ps, false, AllowSrcHoles) }},
		{"Continue+AllowSrcHoles", "UFFDIO_CONTINUE", func() error { _, err := u.Continue(addr, ps, AllowSrcHoles); return err }},
		{"Poison+WriteProtected", "UFFDIO_POISON", func() error { _, err := u.Poison(addr, ps, WriteProtected); return err }},
		{"Move+WriteProtected", "UFFDIO_MOVE", func() error { _, err := u.Move(addr, addr+ps, ps, WriteProtected); return err }},
		{"Copy misaligned", "UFFDIO_COPY", func() error { _, err := u.Copy(addr+1, page, 0); return err }},
		{"Copy odd length", "UFFDIO_COPY", func() error { _, err := u.Copy(addr, page[:100], 0); return err }},
		{"Copy empty", "UFFDIO_COPY", func() error { _, err := u.Copy(addr, nil, 0); return err }},
		{"Wake wrapping", "UFFDIO_WAKE", func() error { return u.Wake(^uintptr(0)&^(ps-1), 2*ps) }},
		{"Register no mode", "UFFDIO_REGISTER", func() error { _, err := u.Register(addr, ps, 0); return err }},
		{"Register unknown mode", "UFFDIO_REGISTER", func() error { _, err := u.Register(addr, ps, ModeMissing|1<<4); return err }},
		{"Unregister misaligned", "UFFDIO_UNREGISTER", func() error { return u.Unregister(addr, ps+1) }},
	} {
		err := tc.call()
		if !errors.Is(err, unix.EINVAL) || errors.Is(err, ErrClosed) {
			t.Errorf("%s: %v, want EINVAL from the argument check", tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.op) || !strings.Contains(err.Error(), "invalid argument") {
			t.Errorf("%s: message %q does not name %s", tc.name, err, tc.op)
		}
	}
}
