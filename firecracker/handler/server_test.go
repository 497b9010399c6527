//go:build linux

package handler_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/pager"
)

func basePages(size uint64) int { return int(size) / os.Getpagesize() }

// TestServeVMs runs three VMs at once, each with its own regions of the
// snapshot (one with two regions), touching their memory in address and
// random order, checking every byte, ballooning a range and checking it
// reads back as zeroes. Each is released when it exits.
func TestServeVMs(t *testing.T) {
	d := startDaemon(t, testMem, handler.Config{Prefetch: pager.Adaptive()})
	cfgs := []fctest.Config{
		{Regions: []fctest.Region{{Size: 24 << 20, Offset: 0}, {Size: 8 << 20, Offset: 24 << 20}}, Touch: []string{"seq", "random"}, Verify: true, Balloon: true},
		{Regions: []fctest.Region{{Size: 16 << 20, Offset: 32 << 20}}, Touch: []string{"random-write"}, Verify: true, Balloon: true},
		// Same file range as the first VM's: VMs share the snapshot, not
		// their memory.
		{Regions: []fctest.Region{{Size: 8 << 20, Offset: 0}}, Touch: []string{"random", "seq"}, Verify: true, Balloon: true},
	}
	var procs []*vmProc
	for _, c := range cfgs {
		procs = append(procs, d.startVM(c))
	}
	for i, p := range procs {
		res := p.wait(t)
		var size uint64
		for _, r := range cfgs[i].Regions {
			size += r.Size
		}
		if res.Verified != basePages(size) {
			t.Errorf("VM %d verified %d pages, want %d", i, res.Verified, basePages(size))
		}
		if res.Ballooned == 0 {
			t.Errorf("VM %d checked no ballooned bytes", i)
		}
		if got := d.logLines("VM connected", "pid="+strconv.Itoa(res.PID)); len(got) != 1 {
			t.Errorf("VM %d (pid %d): %d 'VM connected' log lines with its pid, want 1", i, res.PID, len(got))
		}
	}
	d.waitIdle(t)
	st := d.s.Stats()
	if st.Removes < 3 || st.Zeroed == 0 {
		t.Errorf("stats %+v: want at least 3 removes and some zeroed pages", st)
	}
	if st.Faults == 0 || st.Pages == 0 {
		t.Errorf("stats %+v: no faults served", st)
	}
	if n := len(d.logLines("VM ended")); n != 3 {
		t.Errorf("%d 'VM ended' lines, want 3", n)
	}
}

// TestServeHugetlb serves a guest of 2 MiB hugetlbfs pages next to one of
// 4 KiB pages, as Firecracker's huge-page guests map it (MAP_HUGETLB).
func TestServeHugetlb(t *testing.T) {
	testutil.ReserveHugePages(t, 16)
	d := startDaemon(t, testMem, handler.Config{})
	huge := d.startVM(fctest.Config{
		Regions: []fctest.Region{{Size: 16 << 20, Huge: true, Offset: 0}, {Size: 8 << 20, Huge: true, Offset: 32 << 20}},
		Touch:   []string{"random", "seq-write"}, Verify: true, Balloon: true,
	})
	small := d.startVM(fctest.Config{Regions: []fctest.Region{{Size: 8 << 20, Offset: 16 << 20}}, Touch: []string{"random"}, Verify: true})
	res := huge.wait(t)
	if res.Verified != basePages(24<<20) || res.Ballooned != 4<<20 {
		t.Errorf("hugetlb VM: verified %d pages, ballooned %d bytes", res.Verified, res.Ballooned)
	}
	small.wait(t)
	d.waitIdle(t)
	st := d.s.Stats()
	// The huge VM faulted at most once per huge page (12 of them) plus
	// twice after its balloon; the small one at most once per 4 KiB page.
	if st.Faults > 12+2+uint64(basePages(8<<20)) {
		t.Errorf("%d faults: huge pages were not served whole", st.Faults)
	}
}

// TestModes runs a VM in each mode and checks each mode's own effect.
func TestModes(t *testing.T) {
	const size = 16 << 20
	vm := fctest.Config{Regions: []fctest.Region{{Size: size, Offset: 0}}, Touch: []string{"random"}, Verify: true}
	t.Run("on-demand", func(t *testing.T) {
		d := startDaemon(t, testMem, handler.Config{Mode: handler.OnDemand})
		d.startVM(vm).wait(t)
		d.waitIdle(t)
		if st := d.s.Stats(); st.Filled != 0 || st.Faults == 0 {
			t.Errorf("on demand: %d faults, %d pages filled; want faults and no fill", st.Faults, st.Filled)
		}
	})
	t.Run("prefault", func(t *testing.T) {
		d := startDaemon(t, testMem, handler.Config{Mode: handler.Prefault})
		// Hold the VM until the fill is done, then touch: no fault left.
		hold := filepath.Join(t.TempDir(), "go")
		p := d.startVM(fctest.Config{Regions: vm.Regions, Verify: true, StartFile: hold})
		waitFor(t, "the background fill", func() bool { return d.s.Stats().Filled == uint64(basePages(size)) })
		os.WriteFile(hold, nil, 0o600)
		res := p.wait(t)
		if res.Verified != basePages(size) {
			t.Errorf("verified %d pages", res.Verified)
		}
		d.waitIdle(t)
		if st := d.s.Stats(); st.Faults != 0 {
			t.Errorf("%d faults after a full prefault; want none", st.Faults)
		}
	})
	t.Run("record-replay", func(t *testing.T) {
		trace := filepath.Join(t.TempDir(), "trace")
		cfg := handler.Config{Mode: handler.RecordReplay, Trace: trace, Prefetch: pager.Adaptive()}
		d := startDaemon(t, testMem, cfg)
		// First restore: recorded, page by page.
		d.startVM(vm).wait(t)
		d.waitIdle(t)
		tr, err := handler.ReadTrace(trace)
		if err != nil {
			t.Fatal(err)
		}
		if len(tr.Offsets) != basePages(size) {
			t.Fatalf("trace of %d pages, want %d (every page, once)", len(tr.Offsets), basePages(size))
		}
		first := d.s.Stats()
		// Second restore: replayed.
		hold := filepath.Join(t.TempDir(), "go")
		p := d.startVM(fctest.Config{Regions: vm.Regions, Touch: vm.Touch, Verify: true, StartFile: hold})
		waitFor(t, "the replay", func() bool { return len(d.logLines("replay done")) == 1 })
		os.WriteFile(hold, nil, 0o600)
		p.wait(t)
		d.waitIdle(t)
		second := d.s.Stats()
		if filled := second.Filled - first.Filled; filled != uint64(basePages(size)) {
			t.Errorf("the second restore replayed %d pages, want the %d recorded", filled, basePages(size))
		}
		if faults := second.Faults - first.Faults; faults != 0 {
			t.Errorf("%d faults after the replay of every page the VM touches; want none", faults)
		}
		// A new server with the trace on disk replays from the start.
		d2 := startDaemon(t, testMem, cfg)
		if len(d2.logLines("trace loaded")) != 1 {
			t.Errorf("a server started with a trace did not load it:\n%s", d2.logs.String())
		}
	})
}

// TestReleaseOnKill kills a VM while it is served: the daemon notices
// (pidfd, connection), releases it, and serves the next one.
func TestReleaseOnKill(t *testing.T) {
	d := startDaemon(t, testMem, handler.Config{})
	hold := filepath.Join(t.TempDir(), "never")
	p := d.startVM(fctest.Config{Regions: []fctest.Region{{Size: 8 << 20}}, Touch: []string{"seq"}, HoldFile: hold})
	waitFor(t, "the VM's touches", func() bool { return d.s.Stats().Faults > 0 && len(d.s.VMs()) == 1 })
	before := testutil.FdCount()
	p.cmd.Process.Kill()
	p.cmd.Wait()
	d.waitIdle(t)
	if after := testutil.FdCount(); after >= before {
		t.Errorf("%d descriptors open after the VM's release, %d before: its uffd, connection or pidfd leaked", after, before)
	}
	if got := d.logLines("VM ended", "reason=exited"); len(got) != 1 {
		if got2 := d.logLines("VM ended", "reason=socket_closed"); len(got2) != 1 {
			t.Errorf("no 'VM ended' line with reason exited or socket_closed:\n%s", d.logs.String())
		}
	}
	res := d.startVM(fctest.Config{Regions: []fctest.Region{{Size: 4 << 20}}, Touch: []string{"random"}, Verify: true}).wait(t)
	if res.Verified != basePages(4<<20) {
		t.Errorf("next VM verified %d pages", res.Verified)
	}
}

func TestMain_usesDistinctPIDs(t *testing.T) {
	// The test VMs must be processes of their own: their faults come from
	// another address space than the handler's.
	d := startDaemon(t, 8<<20, handler.Config{})
	res := d.startVM(fctest.Config{Regions: []fctest.Region{{Size: 4 << 20}}, Touch: []string{"seq"}}).wait(t)
	if res.PID == os.Getpid() || res.PID == 0 {
		t.Fatalf("VM pid %d, test pid %d", res.PID, os.Getpid())
	}
}

// TestStopStallsVMs documents what happens to a VM when its handler stops:
// Firecracker keeps its userfaultfd, so the kernel neither unregisters the
// memory nor serves zero pages; the guest's next fault waits. The VM must
// not see zeroes where its snapshot data belongs.
func TestStopStallsVMs(t *testing.T) {
	d := startDaemon(t, 8<<20, handler.Config{})
	start := filepath.Join(t.TempDir(), "start")
	p := d.startVM(fctest.Config{Regions: []fctest.Region{{Size: 4 << 20}}, Touch: []string{"seq"}, Verify: true, StartFile: start})
	waitFor(t, "the VM", func() bool { return len(d.s.VMs()) == 1 })
	d.stop()
	if len(d.logLines("stopping with VMs still running")) != 1 {
		t.Errorf("no warning that VMs were left running:\n%s", d.logs.String())
	}
	os.WriteFile(start, nil, 0o600)
	exited := make(chan struct{})
	go func() {
		p.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
		t.Fatalf("the VM ran on without its handler: %s %s", p.out.String(), p.stderr.String())
	case <-time.After(500 * time.Millisecond):
	}
	p.cmd.Process.Kill()
	<-exited
}
