//go:build linux

package handler_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/internal/testutil"
	"github.com/gouffd/uffd/pager"
)

// TestHandover restarts the handler under running VMs: a second server
// takes over the first one's listening socket and VMs through its control
// socket while a VM keeps touching its memory. The VM's faults are served
// throughout and every byte checks; the first server's Serve returns; new
// VMs are served by the second. A VM that ballooned before the handover
// still reads its ballooned range as zeroes after it.
func TestHandover(t *testing.T) {
	dir := sockDir(t)
	path, data := memFile(t, dir, testMem)
	f, err := pager.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	a := startDaemonOn(t, dir, path, data, f, handler.Config{Prefetch: pager.Fixed(16 << 10)})
	ctlPath := filepath.Join(dir, "ctl.sock")
	ctl, err := net.ListenUnix("unix", &net.UnixAddr{Name: ctlPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- a.s.ServeControl(ctx, ctl) }()
	defer func() { cancel(); <-ctlDone; ctl.Close() }()

	// A VM that touches its memory slowly, across the handover.
	busy := a.startVM(fctest.Config{
		Regions: []fctest.Region{{Size: 16 << 20, Offset: 0}, {Size: 8 << 20, Offset: 32 << 20}},
		Touch:   []string{"random"}, PaceEvery: 16, PaceSleep: time.Millisecond, Verify: true,
	})
	// A VM that ballooned a range it has not touched since.
	hold := filepath.Join(t.TempDir(), "hold")
	balloon := a.startVM(fctest.Config{
		Regions: []fctest.Region{{Size: 8 << 20, Offset: 16 << 20}},
		Balloon: true, CheckBalloonLate: true, HoldFile: hold, Verify: true, Touch: []string{"seq"},
	})
	waitFor(t, "both VMs to run", func() bool { return len(a.s.VMs()) == 2 && a.s.Stats().Removes > 0 && a.s.Stats().Faults > 200 })
	before := a.s.Stats().Faults

	logs := &testutil.Buffer{}
	b := &daemon{t: t, sock: a.sock, memPath: path, mem: data, logs: logs, done: make(chan struct{})}
	b.s, err = handler.New(handler.Config{Memory: f, Prefetch: pager.Fixed(16 << 10),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.stop()
		if t.Failed() {
			t.Logf("new instance's log:\n%s", logs.String())
		}
	})
	ln, err := b.s.Takeover(ctx, ctlPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.serve(ln)

	taken := len(b.s.VMs())
	if taken < 1 {
		t.Fatalf("the new instance took %d VMs", taken)
	}
	os.WriteFile(hold, nil, 0o600)
	res := busy.wait(t)
	if res.Verified != basePages(24<<20) {
		t.Errorf("busy VM verified %d pages", res.Verified)
	}
	bres := balloon.wait(t)
	if bres.Ballooned == 0 {
		t.Error("the ballooned range was not checked")
	}
	// The old instance is done once its last VM is.
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the old instance's Serve did not return after the handover")
	}
	if a.err != nil {
		t.Errorf("old instance's Serve: %v", a.err)
	}
	a.cancel = nil
	if after := b.s.Stats().Faults; after == 0 {
		t.Errorf("the new instance served no fault (old one served %d before the handover)", before)
	}
	// The socket path now leads to the new instance.
	res = b.startVM(fctest.Config{Regions: []fctest.Region{{Size: 4 << 20}}, Touch: []string{"random"}, Verify: true}).wait(t)
	if res.Verified != basePages(4<<20) {
		t.Errorf("VM after the handover verified %d pages", res.Verified)
	}
	if len(b.logLines("VM connected")) != 1 || len(b.logLines("VM taken over")) != taken {
		t.Errorf("new instance's log lacks the takeover or the new VM:\n%s", logs.String())
	}
	b.waitIdle(t)
}
