//go:build linux

package handler_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/handoff"
)

// TestHandoverWire speaks the handover protocol by hand: its messages are
// package handoff's (the UFD1 framing, descriptors with a payload). A
// request in the old framing of its own (a big-endian length) is refused
// and the instance goes on serving.
func TestHandoverWire(t *testing.T) {
	d := startDaemon(t, 8<<20, handler.Config{})
	ctlPath := filepath.Join(filepath.Dir(d.sock), "ctl")
	ctl, err := net.ListenUnix("unix", &net.UnixAddr{Name: ctlPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- d.s.ServeControl(ctx, ctl) }()
	defer func() { cancel(); <-ctlDone; ctl.Close() }()
	dial := func() *net.UnixConn {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ctlPath, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}

	// The framing of version 1: refused, nothing handed over.
	old := dial()
	body := []byte(`{"op":"takeover","version":1}`)
	old.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...))
	waitFor(t, "the refusal", func() bool { return len(d.logLines("handover failed")) == 1 })
	if _, err := old.Read(make([]byte, 1)); err == nil {
		t.Error("the old instance answered a request in the old framing")
	}
	res := d.startVM(vmOf(4 << 20)).wait(t)
	if res.Verified != basePages(4<<20) {
		t.Fatalf("not serving after a refused handover: verified %d pages", res.Verified)
	}
	d.waitIdle(t)

	// Version 2, by hand.
	c := dial()
	send := func(m map[string]any) {
		b, _ := json.Marshal(m)
		if err := handoff.SendFDs(c, b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() (map[string]any, []int) {
		b, fds, cred, err := handoff.ReceiveFDs(c)
		if err != nil {
			t.Fatal(err)
		}
		if cred.PID != os.Getpid() {
			t.Errorf("message from pid %d, want this process (%d)", cred.PID, os.Getpid())
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("message %q: %v", b, err)
		}
		return m, fds
	}
	send(map[string]any{"op": "takeover", "version": 2, "pid": os.Getpid()})
	m, fds := recv()
	if m["op"] != "listener" || len(fds) != 1 {
		t.Fatalf("first message %v with %d descriptors, want the listener with one", m, len(fds))
	}
	if v, err := unix.GetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		t.Errorf("the descriptor is not a listening socket (%d, %v)", v, err)
	}
	unix.Close(fds[0])
	if m, fds = recv(); m["op"] != "done" || len(fds) != 0 {
		t.Fatalf("second message %v, want done (no VMs)", m)
	}
	send(map[string]any{"op": "bye"})
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the handover")
	}
	if d.err != nil {
		t.Errorf("Serve: %v", d.err)
	}
	if !bytes.Contains([]byte(d.logs.String()), []byte("handover done")) {
		t.Errorf("no 'handover done' line:\n%s", d.logs.String())
	}
	if err := <-ctlDone; err != nil {
		t.Errorf("ServeControl: %v", err)
	}
	ctlDone <- nil
}
