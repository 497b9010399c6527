package pagemap_test

import (
	"errors"
	"io/fs"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pagemap"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// hangTimeout bounds a wait that only ends if the kernel resolves
// write-protect faults by itself; it detects a hang, it measures nothing.
const hangTimeout = 30 * time.Second

func openSelf(t *testing.T) *pagemap.Pagemap {
	t.Helper()
	pm, err := pagemap.OpenSelf()
	if errors.Is(err, uffd.ErrNotSupported) {
		testutil.Skipf(t, "kernel lacks PAGEMAP_SCAN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pm.Close() })
	return pm
}

func mapAnon(t *testing.T, pages int) *mem.Mapping {
	t.Helper()
	m, err := mem.Map(mem.Anonymous, pages*mem.PageSize())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// tracked maps pages of anonymous memory and write-protects them through
// a userfaultfd in asynchronous mode: writes then go through, and only
// clear the pages' write-protection for PAGEMAP_SCAN to see.
func tracked(t *testing.T, features uffd.Feature, pages int) (*uffd.UFFD, *mem.Mapping) {
	t.Helper()
	u, err := uffd.Open(uffd.Config{Features: features})
	if errors.Is(err, uffd.ErrNotSupported) {
		testutil.Skipf(t, "kernel lacks asynchronous write-protection: %v", err)
	}
	if err != nil {
		testutil.Skipf(t, "cannot create a userfaultfd: %v", err)
	}
	m := mapAnon(t, pages)
	t.Cleanup(func() { u.Close() }) // before m.Close: cleanups run last first
	if _, err := u.Register(m.Addr(), m.Len(), uffd.ModeWriteProtect); err != nil {
		t.Fatal(err)
	}
	if err := u.WriteProtect(m.Addr(), m.Len(), true, 0); err != nil {
		t.Fatal(err)
	}
	return u, m
}

// write stores one byte into each page listed, in another goroutine: if
// the kernel did not resolve the write-protect faults itself the stores
// would block, and closing the userfaultfd releases them.
func write(t *testing.T, u *uffd.UFFD, m *mem.Mapping, pages ...int) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, i := range pages {
			m.Page(i)[0] = byte(i + 1)
		}
	}()
	select {
	case <-done:
	case <-time.After(hangTimeout):
		u.Close()
		<-done
		t.Fatalf("writes to pages %v blocked: the kernel did not resolve write-protect faults asynchronously", pages)
	}
}

// span is a run of pages [from, to) of a mapping.
type span struct{ from, to int }

func spans(t *testing.T, m *mem.Mapping, regions []pagemap.Region) []span {
	t.Helper()
	var out []span
	for _, r := range regions {
		from := int(r.Start-m.Addr()) / m.PageSize
		to := int(r.End-m.Addr()) / m.PageSize
		if r.Start < m.Addr() || r.End > m.Addr()+m.Len() || r.Len()%uintptr(m.PageSize) != 0 {
			t.Fatalf("region %v is not whole pages of the mapping [%#x, %#x)", r, m.Addr(), m.Addr()+m.Len())
		}
		out = append(out, span{from, to})
	}
	return out
}

var written = &pagemap.ScanOptions{Mask: pagemap.Written, Return: pagemap.Written}

// expectWritten scans the mapping for written pages and compares.
func expectWritten(t *testing.T, pm *pagemap.Pagemap, m *mem.Mapping, opts *pagemap.ScanOptions, want []span) {
	t.Helper()
	regions, next, err := pm.Scan(m.Addr(), m.Addr()+m.Len(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if next != m.Addr()+m.Len() {
		t.Errorf("scan stopped at %#x, want the end %#x", next, m.Addr()+m.Len())
	}
	for _, r := range regions {
		if r.Categories != pagemap.Written {
			t.Errorf("region %v: categories %v, want %v", r, r.Categories, pagemap.Written)
		}
	}
	if got := spans(t, m, regions); !slices.Equal(got, want) {
		t.Errorf("written pages %v, want %v", got, want)
	}
}

// bothPaths runs fn with the kernel writing into the caller's []Region and
// through the bounce buffer that 32-bit architectures use.
func bothPaths(t *testing.T, fn func(t *testing.T)) {
	t.Run("direct", fn)
	t.Run("bounce", func(t *testing.T) {
		defer pagemap.SetCopyRegions(true)()
		fn(t)
	})
}

func TestDirtyTracking(t *testing.T) {
	for _, features := range []uffd.Feature{
		uffd.FeatureWPAsync, // enough: it implies FeatureWPUnpopulated
		uffd.FeatureWPAsync | uffd.FeatureWPFaults,
	} {
		t.Run(features.String(), func(t *testing.T) {
			bothPaths(t, func(t *testing.T) {
				pm := openSelf(t)
				u, m := tracked(t, features, 8)

				// Every page is write-protected: none written, all WPAllowed.
				expectWritten(t, pm, m, written, nil)
				all, _, err := pm.Scan(m.Addr(), m.Addr()+m.Len(), nil)
				if err != nil {
					t.Fatal(err)
				}
				if got := spans(t, m, all); !slices.Equal(got, []span{{0, 8}}) {
					t.Errorf("unfiltered scan covers %v, want the whole mapping", got)
				}
				for _, r := range all {
					if !r.Categories.Has(pagemap.WPAllowed) || r.Categories.Has(pagemap.Written) {
						t.Errorf("region %v: want WPAllowed and not Written", r)
					}
				}

				write(t, u, m, 1, 3, 4)
				expectWritten(t, pm, m, written, []span{{1, 2}, {3, 5}})
				// Reading does not reset the state.
				expectWritten(t, pm, m, written, []span{{1, 2}, {3, 5}})

				// WPMatching reports, then write-protects again.
				reset := *written
				reset.WPMatching = true
				expectWritten(t, pm, m, &reset, []span{{1, 2}, {3, 5}})
				expectWritten(t, pm, m, written, nil)

				write(t, u, m, 0, 7)
				expectWritten(t, pm, m, written, []span{{0, 1}, {7, 8}})

				// Inverted selects the pages not written.
				clean := &pagemap.ScanOptions{Mask: pagemap.Written, Inverted: pagemap.Written, Return: pagemap.Written}
				regions, _, err := pm.Scan(m.Addr(), m.Addr()+m.Len(), clean)
				if err != nil {
					t.Fatal(err)
				}
				if got := spans(t, m, regions); !slices.Equal(got, []span{{1, 7}}) {
					t.Errorf("pages not written: %v, want [1, 7)", got)
				}

				// An empty slice walks without reporting: a pure reset.
				if n, next, err := pm.ScanInto(nil, m.Addr(), m.Addr()+m.Len(), &reset); err != nil || n != 0 || next != m.Addr()+m.Len() {
					t.Fatalf("ScanInto(nil) = %d, %#x, %v; want 0, %#x, nil", n, next, err, m.Addr()+m.Len())
				}
				expectWritten(t, pm, m, written, nil)

				for i, want := range []byte{1, 2, 0, 4, 5, 0, 0, 8} {
					if got := m.Page(i)[0]; got != want {
						t.Errorf("page %d holds %d, want %d", i, got, want)
					}
				}
			})
		})
	}
}

func TestScanIntoResumes(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		pm := openSelf(t)
		u, m := tracked(t, uffd.FeatureWPAsync, 8)
		write(t, u, m, 0, 2, 4, 6)

		// A one-region buffer: the kernel stops at each next written page.
		buf := make([]pagemap.Region, 1)
		start, end := m.Addr(), m.Addr()+m.Len()
		var got []span
		var stops []uintptr
		for start < end {
			n, next, err := pm.ScanInto(buf, start, end, written)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, spans(t, m, buf[:n])...)
			stops = append(stops, next)
			start = next
		}
		if want := []span{{0, 1}, {2, 3}, {4, 5}, {6, 7}}; !slices.Equal(got, want) {
			t.Errorf("regions %v, want %v", got, want)
		}
		if want := []uintptr{m.PageAddr(2), m.PageAddr(4), m.PageAddr(6), end}; !slices.Equal(stops, want) {
			t.Errorf("stopped at %#x, want %#x", stops, want)
		}
	})
}

func TestMaxPages(t *testing.T) {
	bothPaths(t, func(t *testing.T) {
		pm := openSelf(t)
		u, m := tracked(t, uffd.FeatureWPAsync, 8)
		write(t, u, m, 0, 1, 2, 3, 4, 5, 6, 7)

		opts := *written
		opts.MaxPages = 3
		opts.WPMatching = true
		regions, next, err := pm.Scan(m.Addr(), m.Addr()+m.Len(), &opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := spans(t, m, regions); !slices.Equal(got, []span{{0, 3}}) {
			t.Errorf("regions %v, want [0, 3)", got)
		}
		if next != m.PageAddr(3) {
			t.Errorf("stopped at %#x, want %#x", next, m.PageAddr(3))
		}
		// Only the pages reported were write-protected again.
		expectWritten(t, pm, m, written, []span{{3, 8}})
	})
}

func TestScanIntoAllocs(t *testing.T) {
	pm := openSelf(t)
	u, m := tracked(t, uffd.FeatureWPAsync, 8)
	write(t, u, m, 1, 5)
	buf := make([]pagemap.Region, 4)
	opts := *written
	allocs := testing.AllocsPerRun(100, func() {
		if n, _, err := pm.ScanInto(buf, m.Addr(), m.Addr()+m.Len(), &opts); err != nil || n != 2 {
			t.Fatalf("ScanInto = %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("ScanInto allocates %v times per call", allocs)
	}
}

// The kernel gets the buffer's address as an integer, which the runtime
// does not adjust when it moves a goroutine's stack: a caller's array must
// be moved to the heap by the compiler, never left on the stack.
func TestScanIntoBufferOnHeap(t *testing.T) {
	pm := openSelf(t)
	m := mapAnon(t, 1)
	allocs := testing.AllocsPerRun(10, func() {
		var arr [4]pagemap.Region
		if _, _, err := pm.ScanInto(arr[:], m.Addr(), m.Addr()+m.Len(), nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs < 1 {
		t.Errorf("a caller's [4]Region stayed on its stack (%v allocations)", allocs)
	}
}

func TestNotRegistered(t *testing.T) {
	pm := openSelf(t)
	m := mapAnon(t, 4)
	for i := range m.Pages() {
		m.Page(i)[0] = 1
	}
	start, end := m.Addr(), m.Addr()+m.Len()

	// Without asynchronous write-protection there is nothing to reset:
	// WPMatching skips the range, CheckWPAsync refuses it.
	regions, _, err := pm.Scan(start, end, &pagemap.ScanOptions{WPMatching: true})
	if err != nil || len(regions) != 0 {
		t.Errorf("WPMatching on unregistered memory: %v, %v; want nothing", regions, err)
	}
	_, _, err = pm.Scan(start, end, &pagemap.ScanOptions{CheckWPAsync: true})
	if !errors.Is(err, syscall.EPERM) {
		t.Errorf("CheckWPAsync on unregistered memory: %v, want EPERM", err)
	}
	var opErr *uffd.OpError
	if !errors.As(err, &opErr) || opErr.Op != "PAGEMAP_SCAN" || opErr.Addr != start {
		t.Errorf("error %v does not name PAGEMAP_SCAN and the range", err)
	}

	// Plain scans still work: present, written, not WPAllowed.
	regions, _, err = pm.Scan(start, end, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := spans(t, m, regions); !slices.Equal(got, []span{{0, 4}}) {
		t.Fatalf("regions %v, want the whole mapping", got)
	}
	if c := regions[0].Categories; !c.Has(pagemap.Present|pagemap.Written) || c.Has(pagemap.WPAllowed) {
		t.Errorf("categories %v, want Present and Written, not WPAllowed", c)
	}
}

func TestInvalid(t *testing.T) {
	pm := openSelf(t)
	m := mapAnon(t, 2)
	for _, tt := range []struct {
		name       string
		start, end uintptr
		opts       *pagemap.ScanOptions
	}{
		{"unaligned start", m.Addr() + 1, m.Addr() + m.Len(), nil},
		{"end below start", m.Addr() + m.Len(), m.Addr(), nil},
		{"unknown category", m.Addr(), m.Addr() + m.Len(), &pagemap.ScanOptions{Mask: 1 << 40}},
	} {
		_, _, err := pm.Scan(tt.start, tt.end, tt.opts)
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", tt.name, err)
		}
	}
	// An unaligned end is rounded up to the page.
	regions, next, err := pm.Scan(m.Addr(), m.Addr()+1, nil)
	if err != nil || next != m.Addr()+uintptr(m.PageSize) || len(regions) != 1 || regions[0].End != next {
		t.Errorf("scan of one byte: %v, %#x, %v; want one page", regions, next, err)
	}
}

func TestOpen(t *testing.T) {
	pm, err := pagemap.Open(os.Getpid())
	if errors.Is(err, uffd.ErrNotSupported) {
		testutil.Skipf(t, "kernel lacks PAGEMAP_SCAN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	m := mapAnon(t, 1)
	m.Page(0)[0] = 1
	regions, _, err := pm.Scan(m.Addr(), m.Addr()+m.Len(), &pagemap.ScanOptions{Mask: pagemap.Present})
	if err != nil || len(regions) != 1 {
		t.Errorf("scan through /proc/PID/pagemap: %v, %v", regions, err)
	}

	if err := pm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pm.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := pm.Scan(m.Addr(), m.Addr()+m.Len(), nil); !errors.Is(err, pagemap.ErrClosed) {
		t.Errorf("scan after Close: %v, want ErrClosed", err)
	}

	if _, err := pagemap.Open(1 << 30); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a process that does not exist: %v, want ErrNotExist", err)
	}
}

func TestCategoryString(t *testing.T) {
	for _, tt := range []struct {
		c    pagemap.Category
		want string
	}{
		{0, "0"},
		{pagemap.Written, "Written"},
		{pagemap.Present | pagemap.Written | pagemap.WPAllowed, "WPAllowed|Written|Present"},
		{pagemap.AllCategories, "WPAllowed|Written|File|Present|Swapped|PFNZero|Huge|SoftDirty|Guard"},
		{pagemap.Guard | 1<<12, "Guard|0x1000"},
	} {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("Category(%#x).String() = %q, want %q", uint64(tt.c), got, tt.want)
		}
	}
}
