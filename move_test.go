package uffd_test

// The move and move-pmd tests of uffd-unit-tests.c (anonymous memory only):
// UFFDIO_MOVE of base pages and of a whole 2 MiB THP-aligned range into a
// registered destination, directly and to resolve faults; plus the errors
// of holes (ErrNoMapping, or nothing with AllowSrcHoles), of a populated
// destination, of a partial move, and of a non-anonymous destination.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
)

// selftAnonHugeKB returns the AnonHugePages of the mapping (VMA) starting
// at start, from /proc/self/smaps.
func selftAnonHugeKB(t *testing.T, start uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prefix := fmt.Sprintf("%x-", start)
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			in = true
			continue
		}
		if in {
			if v, ok := strings.CutPrefix(line, "AnonHugePages:"); ok {
				fields := strings.Fields(v)
				n, err := strconv.Atoi(fields[0])
				if err != nil {
					t.Fatalf("smaps: %q: %v", line, err)
				}
				return n
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no mapping starting at %#x in /proc/self/smaps", start)
	return 0
}

func TestSelftestMove(t *testing.T) {
	u := openUFFD(t, uffd.FeatureMove)
	const pages = 12
	dst := mapKind(t, mem.Anonymous, pages)
	src := mapKind(t, mem.Anonymous, pages)
	ps := uintptr(dst.PageSize)
	// As the selftest: keep the source in base pages.
	if err := unix.Madvise(src.Data, unix.MADV_NOHUGEPAGE); err != nil && !errors.Is(err, unix.EINVAL) {
		t.Fatalf("madvise(MADV_NOHUGEPAGE): %v", err)
	}
	ioc, err := u.Register(dst.Addr(), dst.Len(), uffd.ModeMissing)
	if err != nil {
		t.Fatal(err)
	}
	if !ioc.Has(uffd.IoctlMove) {
		t.Fatalf("Register offers %v, no Move", ioc)
	}
	// Source pages 0-5, 8 and 9 hold their pattern; 6, 7, 10, 11 are holes.
	for _, i := range []int{0, 1, 2, 3, 4, 5, 8, 9} {
		fillPattern(src.Page(i), i)
	}
	const op = "UFFDIO_MOVE"

	// A direct move of one page.
	n, err := u.Move(dst.PageAddr(0), src.PageAddr(0), ps, 0)
	if err != nil || n != int(ps) {
		t.Fatalf("Move of page 0: %d, %v; want %d, nil", n, err, ps)
	}
	if bad := selftReadPage(t, "read moved page 0", dst.Page(0), 0); bad != -1 {
		t.Errorf("destination page 0 byte %d is not the pattern", bad)
	}
	if bad := selftNonZero(src.Page(0)); bad != -1 {
		t.Errorf("source page 0 byte %d is not zero after the move", bad)
	}

	// Faults on pages 1-5 resolved by moving the source page.
	s := serve(t, u, once(u, int(ps), func(msg uffd.Message) error {
		if msg.Event != uffd.EventPagefault {
			return fmt.Errorf("unexpected %v", msg)
		}
		if msg.Flags&(uffd.FaultWrite|uffd.FaultWriteProtect|uffd.FaultMinor) != 0 {
			return fmt.Errorf("unexpected fault flags in %v", msg)
		}
		addr := msg.Address &^ (ps - 1)
		_, err := u.Move(addr, src.Addr()+(addr-dst.Addr()), ps, 0)
		return err
	}))
	for i := 1; i <= 5; i++ {
		if bad := selftReadPage(t, fmt.Sprintf("fault on page %d", i), dst.Page(i), i); bad != -1 {
			t.Errorf("destination page %d byte %d is not the pattern", i, bad)
		}
		if bad := selftNonZero(src.Page(i)); bad != -1 {
			t.Errorf("source page %d byte %d is not zero after the move", i, bad)
		}
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if got := len(distinct(s.messages(), int(ps))); got != 5 {
		t.Errorf("%d faults served, want 5 (one per page)", got)
	}

	// A hole in the source.
	n, err = u.Move(dst.PageAddr(6), src.PageAddr(6), ps, 0)
	selftExpectErr(t, "Move of a hole", n, err, op, uffd.ErrNoMapping, 0)
	selftExpectErr(t, "Move of a hole", n, err, op, unix.ENOENT, 0)
	n, err = u.Move(dst.PageAddr(6), src.PageAddr(6), 2*ps, uffd.AllowSrcHoles)
	if err != nil || n != int(2*ps) {
		t.Errorf("Move of holes with AllowSrcHoles: %d, %v; want %d, nil", n, err, 2*ps)
	}
	// The holes moved nothing: the destination pages are still missing.
	if n, err := u.Copy(dst.PageAddr(6), selftPattern(int(ps), 2, 6), 0); err != nil || n != int(2*ps) {
		t.Errorf("Copy into the pages a hole was moved to: %d, %v; want them still missing", n, err)
	}

	// A populated destination.
	n, err = u.Move(dst.PageAddr(0), src.PageAddr(8), ps, 0)
	selftExpectErr(t, "Move onto a populated page", n, err, op, uffd.ErrPageExists, 0)
	if bad := selftMismatch(src.Page(8), 8); bad != -1 {
		t.Errorf("source page 8 byte %d changed by a refused move", bad)
	}

	// A partial move: page 9 of the destination is populated.
	if _, err := u.ZeroPage(dst.PageAddr(9), ps, 0); err != nil {
		t.Fatal(err)
	}
	n, err = u.Move(dst.PageAddr(8), src.PageAddr(8), 2*ps, 0)
	selftExpectErr(t, "partial Move", n, err, op, uffd.ErrPartial, int(ps))
	selftExpectErr(t, "partial Move", n, err, op, unix.EAGAIN, int(ps))
	if errors.Is(err, uffd.ErrMmapChanging) {
		t.Errorf("partial Move: %v matches ErrMmapChanging", err)
	}
	if bad := selftReadPage(t, "read moved page 8", dst.Page(8), 8); bad != -1 {
		t.Errorf("destination page 8 byte %d is not the pattern", bad)
	}
	if bad := selftNonZero(src.Page(8)); bad != -1 {
		t.Errorf("source page 8 byte %d is not zero after the move", bad)
	}
	if bad := selftMismatch(src.Page(9), 9); bad != -1 {
		t.Errorf("source page 9 byte %d changed, though it was not moved", bad)
	}
}

// TestSelftestMoveNotAnon moves into registered shmem, which Register
// reports Move for (the ioctl set is per hugetlbfs or not) but which the
// kernel refuses: UFFDIO_MOVE takes anonymous private memory only.
func TestSelftestMoveNotAnon(t *testing.T) {
	u := openUFFD(t, uffd.FeatureMove|uffd.FeatureMissingShmem)
	dst := mapKind(t, mem.Shmem, 1)
	src := mapKind(t, mem.Anonymous, 1)
	if _, err := u.Register(dst.Addr(), dst.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	fillPattern(src.Page(0), 0)
	n, err := u.Move(dst.Addr(), src.Addr(), dst.Len(), 0)
	selftExpectErr(t, "Move into shmem", n, err, "UFFDIO_MOVE", unix.EINVAL, 0)
	if bad := selftMismatch(src.Page(0), 0); bad != -1 {
		t.Errorf("source byte %d changed by a refused move", bad)
	}
}

// TestSelftestMovePMD moves whole 2 MiB THP-aligned ranges: directly, and to
// resolve a fault (one fault for the whole range). When the source was
// backed by a transparent huge page, the destination is too afterwards.
func TestSelftestMovePMD(t *testing.T) {
	u := openUFFD(t, uffd.FeatureMove)
	const chunk = 2 << 20
	base := mem.PageSize()
	per := chunk / base
	// Four chunks of room hold at least three aligned ones.
	src := mapKind(t, mem.Anonymous, 4*per)
	dst := mapKind(t, mem.Anonymous, 4*per)
	align := func(a uintptr) uintptr { return (a + chunk - 1) &^ (chunk - 1) }
	srcA, dstA := align(src.Addr()), align(dst.Addr())
	srcOff, dstOff := int(srcA-src.Addr()), int(dstA-dst.Addr())
	srcR := src.Data[srcOff : srcOff+2*chunk]
	dstR := dst.Data[dstOff : dstOff+2*chunk]
	for _, r := range [][]byte{srcR, dstR} {
		if err := unix.Madvise(r, unix.MADV_HUGEPAGE); err != nil {
			if errors.Is(err, unix.EINVAL) {
				testutil.Skipf(t, "madvise(MADV_HUGEPAGE): %v (kernel without CONFIG_TRANSPARENT_HUGEPAGE)", err)
			}
			t.Fatal(err)
		}
	}
	if _, err := u.Register(dst.Addr(), dst.Len(), uffd.ModeMissing); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2*per; i++ {
		fillPattern(srcR[i*base:(i+1)*base], i)
	}
	srcBefore, dstBefore := selftAnonHugeKB(t, srcA), selftAnonHugeKB(t, dstA)

	checkChunk := func(c int) {
		t.Helper()
		d := dstR[c*chunk : (c+1)*chunk]
		s := srcR[c*chunk : (c+1)*chunk]
		bad, badPage := -1, -1
		var got []byte
		var err error
		inGoroutine(t, fmt.Sprintf("read destination chunk %d", c), func() { got, err = testutil.KernelCopyOut(d) })
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < per && bad == -1; i++ {
			if b := selftMismatch(got[i*base:(i+1)*base], c*per+i); b != -1 {
				bad, badPage = b, c*per+i
			}
		}
		if bad != -1 {
			t.Fatalf("destination page %d byte %d is not the pattern", badPage, bad)
		}
		if b := selftNonZero(s); b != -1 {
			t.Errorf("source chunk %d byte %d is not zero after the move", c, b)
		}
	}

	n, err := u.Move(dstA, srcA, chunk, 0)
	if err != nil || n != chunk {
		t.Fatalf("Move of 2 MiB: %d, %v; want %d, nil", n, err, chunk)
	}
	srcAfter, dstAfter := selftAnonHugeKB(t, srcA), selftAnonHugeKB(t, dstA)
	t.Logf("AnonHugePages: source %d -> %d kB, destination %d -> %d kB", srcBefore, srcAfter, dstBefore, dstAfter)
	checkChunk(0)
	// A THP that left the source must arrive whole (the PMD is moved, not
	// split).
	if lost := srcBefore - srcAfter; lost >= chunk>>10 {
		if gained := dstAfter - dstBefore; gained < chunk>>10 {
			t.Errorf("a %d kB THP left the source, but the destination gained only %d kB of THP", lost, gained)
		}
	} else {
		t.Logf("the source chunk was not a THP; the move went page by page")
	}

	s := serve(t, u, once(u, chunk, func(msg uffd.Message) error {
		if msg.Event != uffd.EventPagefault {
			return fmt.Errorf("unexpected %v", msg)
		}
		addr := msg.Address &^ (chunk - 1)
		_, err := u.Move(addr, srcA+(addr-dstA), chunk, 0)
		return err
	}))
	checkChunk(1)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if got := len(distinct(s.messages(), chunk)); got != 1 {
		t.Errorf("%d faults for a 2 MiB chunk moved at once, want 1", got)
	}
}
