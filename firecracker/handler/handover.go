//go:build linux

package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker"
	"github.com/gouffd/uffd/handoff"
)

// # Handover
//
// A handler that stops leaves its VMs stalled: Firecracker keeps its own
// copy of the userfaultfd, so the kernel neither unregisters the memory nor
// falls back to zero pages; the next fault waits for a handler that never
// comes. To restart or upgrade the handler without stopping its VMs, the
// running instance hands everything to the new one over a UNIX socket:
//
//	new -> old   {"op":"takeover","version":2}
//	old -> new   {"op":"listener"}             + the listening socket
//	old -> new   {"op":"vm", ...}              + uffd, connection, pidfd   (per VM)
//	new -> old   {"op":"ack","ok":true}                                    (per VM)
//	old -> new   {"op":"done","vms":N,"kept":K}
//	new -> old   {"op":"bye"}
//
// Each message is a JSON object carried by package handoff (SendFDs and
// ReceiveFDs: the "UFD1" header, then the payload, with the descriptors on
// its first byte and the sender's credentials).
//
// The old instance stops accepting first (connections queue in the
// listening socket's backlog, which the new instance then serves), then
// moves one VM at a time: it stops that VM's pager, sends its regions, the
// ranges it removed (balloon) and its descriptors, and waits for the
// acknowledgement. The new instance adopts the userfaultfd, starts serving
// it, and wakes every thread waiting on the VM's memory: a fault whose
// message the old instance read but did not resolve is raised again. A VM
// whose handover fails is served again by the old instance. A VM is
// without a handler only between the old pager's stop and the new one's
// start; its faults wait in the userfaultfd meanwhile, none is lost.

// handoverVersion is the protocol's version: 2 since the messages travel
// in package handoff's framing (version 1 had a framing of its own).
const handoverVersion = 2

type handoverMsg struct {
	Op      string                `json:"op"`
	Version int                   `json:"version,omitempty"`
	ID      uint64                `json:"id,omitempty"`
	PID     int                   `json:"pid,omitempty"`
	UID     int                   `json:"uid,omitempty"`
	GID     int                   `json:"gid,omitempty"`
	Regions []firecracker.Mapping `json:"regions,omitempty"`
	// Removed lists [start, end) ranges removed by the VM (balloon): they
	// must read as zeroes.
	Removed [][2]uint64 `json:"removed,omitempty"`
	// FDs names the descriptors of a "vm" message in order: "uffd",
	// "conn", and "pidfd" when there is one.
	FDs     []string  `json:"fds,omitempty"`
	Started time.Time `json:"started,omitzero"`
	OK      bool      `json:"ok,omitempty"`
	Err     string    `json:"err,omitempty"`
	VMs     int       `json:"vms,omitempty"`
	Kept    int       `json:"kept,omitempty"`
}

// handoverState is the Server's side of a handover.
type handoverState struct {
	ln         *net.UnixListener
	acceptDone chan struct{} // the accept loop stopped
	active     atomic.Bool   // a handover took the listener
	finished   chan struct{} // the handover ended (then Serve returns)
	failed     atomic.Bool
	once       sync.Mutex // one handover at a time
	pending    sync.WaitGroup
}

func writeFrame(c *net.UnixConn, m *handoverMsg, fds []int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return handoff.SendFDs(c, b, fds...)
}

// readFrame reads one message and the descriptors that came with it (owned
// by the caller, also on error).
func readFrame(c *net.UnixConn, m *handoverMsg) ([]int, error) {
	b, fds, _, err := handoff.ReceiveFDs(c)
	if err != nil {
		return nil, err
	}
	*m = handoverMsg{}
	if err := json.Unmarshal(b, m); err != nil {
		return fds, fmt.Errorf("handover message: %w", err)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// controlFD returns the descriptor behind a RawConn without changing its
// mode (os.File.Fd would make it blocking). It stays owned by its owner.
func controlFD(ctl func(func(uintptr)) error) (int, error) {
	fd := -1
	err := ctl(func(f uintptr) { fd = int(f) })
	return fd, err
}

// ServeControl accepts handover requests on ln, the control socket, until
// ctx ends or a handover moved everything away. Only a peer with this
// process's user ID (or root) may take over.
func (s *Server) ServeControl(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.ECONNABORTED) {
				continue
			}
			return err
		}
		p, err := peerOf(c)
		if p.pidfd != nil {
			p.pidfd.Close()
		}
		if err != nil || (p.UID != 0 && p.UID != os.Geteuid()) {
			s.log.Warn("handover request refused: the peer runs as another user", "uid", p.UID, "err", err)
			c.Close()
			continue
		}
		err = s.Handover(ctx, c)
		c.Close()
		if err != nil {
			s.log.Error("handover failed", "err", err)
			continue
		}
		// The new instance binds its own control socket at this path.
		ln.SetUnlinkOnClose(false)
		return nil
	}
}

// Handover hands the listening socket and every VM to the instance at the
// other end of c, which called Takeover. Serve returns once it is done.
// A VM that the other instance refuses stays and is served here until it
// exits; Serve returns after it.
func (s *Server) Handover(ctx context.Context, c *net.UnixConn) error {
	h := &s.handover
	if !h.once.TryLock() {
		return errors.New("handler: a handover is already running")
	}
	defer h.once.Unlock()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var req handoverMsg
	fds, err := readFrame(c, &req)
	closeFDs(fds)
	if err != nil {
		return fmt.Errorf("handler: reading the takeover request: %w", err)
	}
	if req.Op != "takeover" || req.Version != handoverVersion {
		return fmt.Errorf("handler: unexpected handover request %q version %d (want takeover version %d)", req.Op, req.Version, handoverVersion)
	}
	s.mu.Lock()
	ln := h.ln
	s.mu.Unlock()
	if ln == nil || h.active.Load() {
		return errors.New("handler: not serving, nothing to hand over")
	}
	s.log.Info("handing over to a new instance", "new_pid", req.PID)

	// Stop accepting; let connections already in their handshake finish.
	h.finished = make(chan struct{})
	h.active.Store(true)
	ln.SetDeadline(time.Unix(1, 0))
	<-h.acceptDone
	h.pending.Wait()
	defer close(h.finished)

	lf, err := ln.File()
	if err != nil {
		h.failed.Store(true)
		return fmt.Errorf("handler: the listening socket: %w", err)
	}
	// Not lf.Fd(), which would make the shared socket blocking.
	var lfd int
	if rc, e := lf.SyscallConn(); e != nil {
		err = e
	} else if lfd, err = controlFD(rc.Control); err == nil {
		err = writeFrame(c, &handoverMsg{Op: "listener"}, []int{lfd})
	}
	lf.Close()
	if err != nil {
		h.failed.Store(true)
		return fmt.Errorf("handler: sending the listening socket: %w", err)
	}
	// The other instance owns the socket's path now.
	ln.SetUnlinkOnClose(false)
	ln.Close()

	s.mu.Lock()
	vms := make([]*vm, 0, len(s.vms))
	for _, v := range s.vms {
		vms = append(vms, v)
	}
	s.mu.Unlock()
	slices.SortFunc(vms, func(a, b *vm) int { return int(a.id - b.id) })

	moved, kept := 0, 0
	var failure error
	for _, v := range vms {
		if failure != nil {
			kept++
			continue
		}
		ok, err := s.handOne(c, v)
		switch {
		case err != nil:
			failure = err
			kept++
		case ok:
			moved++
		default:
			kept++
		}
	}
	if failure != nil {
		h.failed.Store(true)
		return fmt.Errorf("handler: handover stopped after %d VMs (%d stay here): %w", moved, kept, failure)
	}
	if err := writeFrame(c, &handoverMsg{Op: "done", VMs: moved, Kept: kept}, nil); err != nil {
		return fmt.Errorf("handler: handover: %w", err)
	}
	var bye handoverMsg
	fds, _ = readFrame(c, &bye)
	closeFDs(fds)
	s.log.Info("handover done", "vms_moved", moved, "vms_kept", kept)
	return nil
}

// handOne moves one VM. It returns false, nil when the VM must stay; an
// error when the handover must stop (the VM then stays too).
func (s *Server) handOne(c *net.UnixConn, v *vm) (bool, error) {
	v.cancel(errHandover)
	<-v.stopped
	if context.Cause(v.ctx) != errHandover {
		return false, nil // it ended on its own meanwhile: nothing to move
	}
	msg := &handoverMsg{
		Op: "vm", ID: v.id, PID: v.peer.PID, UID: v.peer.UID, GID: v.peer.GID,
		Regions: v.maps, Started: v.started, FDs: []string{"uffd", "conn"},
	}
	for _, r := range v.p.RemovedRanges() {
		msg.Removed = append(msg.Removed, [2]uint64{uint64(r.Start), uint64(r.End)})
	}
	var fds []int
	var held []*os.File
	defer func() {
		for _, f := range held {
			f.Close()
		}
	}()
	urc, err := v.u.SyscallConn()
	if err == nil {
		var fd int
		fd, err = controlFD(urc.Control)
		fds = append(fds, fd)
	}
	if err == nil {
		var cf *os.File
		cf, err = v.conn.File() // a duplicate
		if err == nil {
			held = append(held, cf)
			var fd int
			if rc, e := cf.SyscallConn(); e == nil {
				fd, err = controlFD(rc.Control)
			} else {
				err = e
			}
			fds = append(fds, fd)
		}
	}
	if err == nil && v.peer.pidfd != nil {
		if rc, e := v.peer.pidfd.SyscallConn(); e == nil {
			var fd int
			if fd, e = controlFD(rc.Control); e == nil {
				fds = append(fds, fd)
				msg.FDs = append(msg.FDs, "pidfd")
			}
		}
	}
	if err == nil {
		err = writeFrame(c, msg, fds)
	}
	var ack handoverMsg
	if err == nil {
		var got []int
		got, err = readFrame(c, &ack)
		closeFDs(got)
	}
	if err == nil && (ack.Op != "ack" || !ack.OK) {
		err = fmt.Errorf("the new instance refused VM %d: %s", v.id, ack.Err)
	}
	if err != nil {
		v.handoff <- false
		return false, err
	}
	v.handoff <- true
	v.log.Info("VM handed over")
	return true, nil
}

// Takeover connects to the control socket of a running instance, takes
// over its VMs (serving each from this server as it arrives) and returns
// its listening socket, for Serve. s must not be serving yet. ready, when
// not nil, is called once everything arrived and before the old instance
// is let go (for a service manager to learn the new main process first).
func (s *Server) Takeover(ctx context.Context, control string, ready func()) (*net.UnixListener, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: control, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("handler: takeover: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeFrame(c, &handoverMsg{Op: "takeover", Version: handoverVersion, PID: os.Getpid()}, nil); err != nil {
		return nil, fmt.Errorf("handler: takeover: %w", err)
	}
	var ln *net.UnixListener
	defer func() {
		if ln != nil && err != nil {
			ln.Close()
		}
	}()
	for {
		var m handoverMsg
		var fds []int
		fds, err = readFrame(c, &m)
		if err != nil {
			closeFDs(fds)
			err = fmt.Errorf("handler: takeover: %w", err)
			return nil, err
		}
		switch m.Op {
		case "listener":
			if len(fds) != 1 {
				closeFDs(fds)
				err = fmt.Errorf("handler: takeover: the listener came with %d descriptors", len(fds))
				return nil, err
			}
			f := os.NewFile(uintptr(fds[0]), "listener")
			l, e := net.FileListener(f)
			f.Close()
			ul, ok := l.(*net.UnixListener)
			if e != nil || !ok {
				if l != nil {
					l.Close()
				}
				err = fmt.Errorf("handler: takeover: the listener is not a UNIX socket: %v", e)
				return nil, err
			}
			ln = ul
		case "vm":
			ack := handoverMsg{Op: "ack", ID: m.ID, OK: true}
			if e := s.adoptHandedOver(&m, fds); e != nil {
				ack.OK, ack.Err = false, e.Error()
				s.log.Error("taking over a VM failed; it stays with the old instance", "from_vm", m.ID, "pid", m.PID, "err", e)
			}
			if err = writeFrame(c, &ack, nil); err != nil {
				err = fmt.Errorf("handler: takeover: %w", err)
				return nil, err
			}
		case "done":
			closeFDs(fds)
			if ln == nil {
				err = errors.New("handler: takeover: no listening socket came")
				return nil, err
			}
			s.log.Info("takeover done", "vms", m.VMs, "vms_left_with_old_instance", m.Kept)
			if ready != nil {
				ready()
			}
			writeFrame(c, &handoverMsg{Op: "bye"}, nil)
			return ln, nil
		default:
			closeFDs(fds)
			err = fmt.Errorf("handler: takeover: unexpected message %q", m.Op)
			return nil, err
		}
	}
}

// adoptHandedOver starts serving a VM received in a handover. It owns fds.
func (s *Server) adoptHandedOver(m *handoverMsg, fds []int) error {
	if len(fds) != len(m.FDs) || len(fds) < 2 || m.FDs[0] != "uffd" || m.FDs[1] != "conn" {
		closeFDs(fds)
		return fmt.Errorf("descriptors %v do not match %d received", m.FDs, len(fds))
	}
	if err := firecracker.Validate(m.Regions, s.cfg.Memory.Size(), s.pageSizes); err != nil {
		closeFDs(fds)
		return err
	}
	u, err := uffd.FromFD(fds[0], 0)
	if err != nil {
		closeFDs(fds[1:])
		return err
	}
	cf := os.NewFile(uintptr(fds[1]), "conn")
	fc, err := net.FileConn(cf)
	cf.Close()
	uc, ok := fc.(*net.UnixConn)
	if err != nil || !ok {
		if fc != nil {
			fc.Close()
		}
		u.Close()
		closeFDs(fds[2:])
		return fmt.Errorf("the connection is not a UNIX socket: %v", err)
	}
	p := peer{Cred: handoff.Cred{PID: m.PID, UID: m.UID, GID: m.GID}}
	if len(fds) > 2 && m.FDs[2] == "pidfd" {
		if err := unix.SetNonblock(fds[2], true); err == nil {
			p.pidfd = os.NewFile(uintptr(fds[2]), "pidfd")
		} else {
			unix.Close(fds[2])
		}
	}
	id := s.nextID.Add(1)
	log := s.log.With("vm", id, "pid", p.PID)
	removed := m.Removed
	if removed == nil {
		removed = [][2]uint64{}
	}
	v, err := s.newVM(id, log, uc, p, u, m.Regions, removed)
	if err != nil {
		u.Close()
		uc.Close()
		if p.pidfd != nil {
			p.pidfd.Close()
		}
		return err
	}
	v.started = m.Started
	v.wakeAll()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(v)
	}()
	log.Info("VM taken over", "from_vm", m.ID, "regions", len(m.Regions), "removed_ranges", len(m.Removed))
	return nil
}
