//go:build linux

package handler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/firecracker"
	"github.com/gouffd/uffd/handoff"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// Rejection reasons of the handler's own, beside the protocol's
// (firecracker.Reason*): they label connections_rejected_total too.
const (
	ReasonPeer       = "peer"          // the peer's credentials cannot be had, or it is gone
	ReasonOverloaded = "overloaded"    // too many connections or VMs at once
	ReasonInternal   = "internal"      // the handler failed (not the peer's fault)
	ReasonShutdown   = "shutting_down" // the handler is stopping
)

// Reasons lists every reason a connection is rejected for.
var Reasons = append(slices.Clone(firecracker.Reasons), ReasonPeer, ReasonOverloaded, ReasonInternal, ReasonShutdown)

// Why a VM stops being served, as the "VM ended" log line and
// vms_ended_total{reason} name it.
const (
	EndExited       = "exited"        // the Firecracker process exited (its pidfd)
	EndSocketClosed = "socket_closed" // Firecracker closed the connection
	EndGone         = "gone"          // the userfaultfd reported the process gone (ESRCH)
	EndHandedOver   = "handed_over"   // moved to another handler instance
	EndShutdown     = "shutdown"      // this handler stopped
	EndError        = "error"         // serving failed
)

// EndReasons lists every reason a VM ends for.
var EndReasons = []string{EndExited, EndSocketClosed, EndGone, EndHandedOver, EndShutdown, EndError}

// Server serves Firecracker VMs restored from one snapshot: it accepts
// their connections, checks each handshake, and serves each VM's faults
// with a pager of its own until the VM exits.
type Server struct {
	cfg         Config
	log         *slog.Logger
	pageSizes   []int
	fingerprint uint64
	created     time.Time

	handshakes chan struct{} // semaphore of connections in handshake

	mu       sync.Mutex
	vms      map[uint64]*vm
	retired  pager.Stats // sums of the VMs that ended
	stopping bool

	nextID atomic.Uint64
	wg     sync.WaitGroup // connection and VM goroutines

	// record-replay
	traceMu   sync.Mutex
	replay    *Trace // the trace to replay, when there is a good one
	recording bool   // a VM is recording

	handover handoverState

	m serverMetrics

	engineMu  sync.Mutex
	engine    *pager.Engine // serves every VM
	ownEngine bool          // the first VM started it
}

// New returns a server for cfg, after Validate and, in RecordReplay, a
// check that the trace's directory is writable (a trace that cannot be
// written is found at start, not after the first restore) and an attempt
// to load the trace.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxMessage == 0 {
		cfg.MaxMessage = firecracker.DefaultMaxMessage
	}
	if cfg.MaxVMs == 0 {
		cfg.MaxVMs = DefaultMaxVMs
	}
	if cfg.MaxHandshakes == 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.RecordFor == 0 {
		cfg.RecordFor = DefaultRecordFor
	}
	sizes, _ := mem.HugePageSizes() // none: only base pages are accepted
	s := &Server{
		engine:     cfg.Engine,
		cfg:        cfg,
		log:        cfg.Logger,
		pageSizes:  sizes,
		created:    time.Now(),
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		vms:        map[uint64]*vm{},
	}
	s.m.init()
	if cfg.Mode == RecordReplay {
		if err := checkWritable(cfg.Trace); err != nil {
			return nil, err
		}
		fp, err := Fingerprint(cfg.Memory)
		if err != nil {
			return nil, fmt.Errorf("handler: fingerprint of the memory file: %w", err)
		}
		s.fingerprint = fp
		t, err := ReadTrace(cfg.Trace)
		switch {
		case err == nil:
			if err := t.Matches(cfg.Memory.Size(), s.fingerprint); err != nil {
				s.log.Warn("trace does not match the memory file; the next VM records a new one", "trace", cfg.Trace, "err", err)
			} else {
				s.replay = t
				s.log.Info("trace loaded: VMs replay it", "trace", cfg.Trace, "pages", len(t.Offsets))
			}
		case errors.Is(err, os.ErrNotExist):
			s.log.Info("no trace yet: the next VM records one", "trace", cfg.Trace)
		default:
			s.log.Warn("trace unreadable; the next VM records a new one", "trace", cfg.Trace, "err", err)
		}
	}
	return s, nil
}

// checkWritable checks that a file can be written at path (by a temporary
// file renamed over it, as WriteTrace does): its directory exists and is
// writable.
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".check*")
	if err != nil {
		return fmt.Errorf("handler: the trace %s cannot be written: %w", path, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// Serve accepts connections on ln until ctx ends, then stops serving every
// VM, logs the server's lifetime summary ("stopped") and returns nil. A VM
// that is still running when its handler stops keeps its userfaultfd
// (Firecracker holds its own copy): its next fault waits until a handler
// serves it again, so hand the VMs over (Handover) rather than stop when
// they should go on running.
//
// When Handover moves everything to another instance, Serve returns nil
// without closing ln (which the other instance now has).
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	s.mu.Lock()
	if s.handover.ln != nil {
		s.mu.Unlock()
		return errors.New("handler: Serve is already running")
	}
	s.handover.ln = ln
	s.handover.acceptDone = make(chan struct{})
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	s.log.Debug("accepting connections", "socket", ln.Addr().String())
	var err error
	backoff := 5 * time.Millisecond
	for {
		var c *net.UnixConn
		c, err = ln.AcceptUnix()
		if err == nil {
			backoff = 5 * time.Millisecond
			s.m.accepted.Add(1)
			s.handover.pending.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handle(c)
			}()
			continue
		}
		if ctx.Err() != nil || s.handover.active.Load() {
			err = nil
			break
		}
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == syscall.EMFILE || errno == syscall.ENFILE || errno == syscall.ENOBUFS || errno == syscall.ENOMEM) {
			// Out of descriptors or memory: shed load, do not die.
			s.log.Error("accept failed; retrying", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		if errors.Is(err, syscall.ECONNABORTED) {
			continue
		}
		break
	}
	close(s.handover.acceptDone)
	if s.handover.active.Load() {
		// A handover took the listener: wait for it to finish, and for
		// the VMs that stayed here to end.
		<-s.handover.finished
		s.wg.Wait()
		s.closeEngine()
		s.logSummary("handed over")
		if s.handover.failed.Load() {
			return errors.New("handler: handover failed; see the log")
		}
		return nil
	}
	ln.Close()
	left := s.shutdown()
	s.logSummary("shutdown", "vms_left_running", left)
	if err != nil {
		return fmt.Errorf("handler: accept: %w", err)
	}
	return nil
}

// logSummary logs the server's lifetime counters.
func (s *Server) logSummary(why string, args ...any) {
	st := s.Stats()
	var rejected uint64
	for _, n := range s.Rejections() {
		rejected += n
	}
	s.log.Info("stopped", append([]any{"why", why,
		"uptime", time.Since(s.created).Round(time.Millisecond),
		"connections", s.m.accepted.Load(), "rejected", rejected,
		"vms_started", s.m.started.Load(), "vms_handed_over", s.m.endedCount(EndHandedOver),
		"faults", st.Faults, "pages", st.Pages, "bytes", st.Bytes,
		"fault_p50", st.Latency.Quantile(0.5), "fault_p99", st.Latency.Quantile(0.99)}, args...)...)
}

// Shutdown stops serving every VM (taken over, or left by Serve) and waits
// for their goroutines. Serve calls it when its context ends; call it
// after a Takeover that is not followed by Serve.
func (s *Server) Shutdown() { s.shutdown() }

// shutdown stops every VM and waits for the goroutines. It returns how
// many VMs it stopped.
func (s *Server) shutdown() int {
	s.mu.Lock()
	s.stopping = true
	vms := make([]*vm, 0, len(s.vms))
	for _, v := range s.vms {
		vms = append(vms, v)
	}
	s.mu.Unlock()
	if len(vms) > 0 {
		s.log.Warn("stopping with VMs still running: their next faults wait for a handler (Firecracker keeps its userfaultfd)", "vms", len(vms))
	}
	for _, v := range vms {
		v.cancel(errShutdown)
	}
	s.wg.Wait()
	s.closeEngine()
	return len(vms)
}

// vmEngine returns the engine that serves the VMs: Config.Engine, or one
// started on every CPU with the first VM.
func (s *Server) vmEngine() (*pager.Engine, error) {
	s.engineMu.Lock()
	defer s.engineMu.Unlock()
	if s.engine == nil {
		eng, err := pager.NewEngine(pager.EngineConfig{})
		if err != nil {
			return nil, fmt.Errorf("handler: %w", err)
		}
		s.engine, s.ownEngine = eng, true
	}
	return s.engine, nil
}

// closeEngine stops the engine the server started, once no VM uses it.
func (s *Server) closeEngine() {
	s.engineMu.Lock()
	defer s.engineMu.Unlock()
	if s.ownEngine {
		if err := s.engine.Close(); err != nil {
			s.log.Error("engine", "err", err)
		}
		s.engine, s.ownEngine = nil, false
	}
}

// VMInfo describes a VM being served.
type VMInfo struct {
	ID       uint64
	PID      int
	UID      int
	Regions  []firecracker.Mapping
	Started  time.Time
	Stats    pager.Stats
	Replay   bool
	Record   bool
	Features uffd.Feature
}

// VMs lists the VMs being served.
func (s *Server) VMs() []VMInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]VMInfo, 0, len(s.vms))
	for _, v := range s.vms {
		out = append(out, v.info())
	}
	slices.SortFunc(out, func(a, b VMInfo) int { return int(a.ID - b.ID) })
	return out
}

// Stats returns the pager counters summed over every VM served so far.
func (s *Server) Stats() pager.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := s.retired
	for _, v := range s.vms {
		sum.Add(v.p.Stats())
	}
	return sum
}

// peer is what the kernel says of the process at the other end of a
// connection.
type peer struct {
	handoff.Cred
	pidfd *os.File // nil when it cannot be had
}

// peerOf reads the peer's credentials (SO_PEERCRED) and a pidfd for it
// (SO_PEERPIDFD, Linux 6.5; pidfd_open on older kernels).
func peerOf(c *net.UnixConn) (peer, error) {
	cred, err := handoff.PeerCred(c)
	if err != nil {
		return peer{}, err
	}
	p := peer{Cred: cred}
	pidfd := -1
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			if n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
				pidfd = n
			}
		})
	}
	if pidfd < 0 && p.PID > 0 {
		if n, err := unix.PidfdOpen(p.PID, unix.PIDFD_NONBLOCK); err == nil {
			pidfd = n
		}
	}
	if pidfd >= 0 {
		unix.CloseOnExec(pidfd)
		if err := unix.SetNonblock(pidfd, true); err != nil {
			unix.Close(pidfd)
		} else {
			p.pidfd = os.NewFile(uintptr(pidfd), "pidfd")
		}
	}
	return p, nil
}

// handle serves one connection from its handshake to the VM's end.
func (s *Server) handle(c *net.UnixConn) {
	pending := true
	settled := func() { // a handover waits for connections to settle
		if pending {
			pending = false
			s.handover.pending.Done()
		}
	}
	defer settled()
	id := s.nextID.Add(1)
	log := s.log.With("vm", id)
	p, err := peerOf(c)
	if err != nil {
		s.rejected(log, c, nil, reject(ReasonPeer, "reading the peer's credentials: %v", err))
		return
	}
	log = log.With("pid", p.PID)
	log.Debug("connection accepted", "uid", p.UID, "gid", p.GID, "pidfd", p.pidfd != nil)
	select {
	case s.handshakes <- struct{}{}:
	default:
		s.rejected(log, c, p.pidfd, reject(ReasonOverloaded, "%d connections are already waiting for their message", cap(s.handshakes)))
		return
	}
	t0 := time.Now()
	hs, err := firecracker.ReadHandshake(c, s.cfg.MaxMessage, time.Now().Add(s.cfg.HandshakeTimeout))
	<-s.handshakes
	if errors.Is(err, firecracker.ErrNoMessage) {
		// Nothing sent: a probe of whether something listens (a second
		// instance, a health check), not a bad Firecracker.
		log.Debug("connection closed without a handshake (a probe?)")
		c.Close()
		if p.pidfd != nil {
			p.pidfd.Close()
		}
		return
	}
	if err != nil {
		s.rejected(log, c, p.pidfd, err)
		return
	}
	log.Debug("handshake received", "bytes", hs.Bytes, "regions", len(hs.Mappings), "took", time.Since(t0))
	v, err := s.adopt(id, log, c, p, hs)
	settled()
	if err != nil {
		s.rejected(log, c, p.pidfd, err)
		return
	}
	s.run(v)
}

func reject(reason, format string, args ...any) error {
	return &firecracker.HandshakeError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// rejected logs and counts a refused connection and closes it.
func (s *Server) rejected(log *slog.Logger, c *net.UnixConn, pidfd *os.File, err error) {
	reason := ReasonInternal
	var he *firecracker.HandshakeError
	if errors.As(err, &he) {
		reason = he.Reason
	}
	s.m.reject(reason)
	if reason == ReasonOverloaded {
		s.m.overloadLog(log, err) // rate-limited: a flood must not flood the log too
	} else {
		log.Warn("connection rejected", "reason", reason, "err", err)
	}
	c.Close()
	if pidfd != nil {
		pidfd.Close()
	}
}

// adopt checks a handshake and sets up its VM: the userfaultfd, the pager
// and its regions. On error it closes hs.FD.
func (s *Server) adopt(id uint64, log *slog.Logger, c *net.UnixConn, p peer, hs *firecracker.Handshake) (*vm, error) {
	if err := firecracker.Validate(hs.Mappings, s.cfg.Memory.Size(), s.pageSizes); err != nil {
		unix.Close(hs.FD)
		return nil, err
	}
	if !s.cfg.SkipMemoryMapCheck && p.PID > 0 {
		vmas, err := firecracker.ReadSmaps(p.PID)
		if err != nil {
			log.Warn("cannot read the peer's memory map; regions not checked against it", "err", err)
		} else {
			unreg, err := vmas.Check(hs.Mappings)
			if err != nil {
				unix.Close(hs.FD)
				return nil, err
			}
			if len(unreg) > 0 {
				log.Warn("regions not registered with a userfaultfd in missing mode: their faults will not reach this handler", "regions", unreg)
			}
			log.Debug("regions match the peer's memory map", "mappings", len(vmas))
		}
	}
	u, err := uffd.FromFD(hs.FD, 0) // closes the fd on error
	if err != nil {
		return nil, reject(firecracker.ReasonFD, "the descriptor sent is not a usable userfaultfd: %v", err)
	}
	v, err := s.newVM(id, log, c, p, u, hs.Mappings, nil)
	if err != nil {
		u.Close()
		return nil, err
	}
	log.Info("VM connected",
		"uid", p.UID, "regions", len(hs.Mappings), "guest_bytes", v.guestBytes(), "message_bytes", hs.Bytes,
		"features", u.Features().String(), "layout", firecracker.Describe(hs.Mappings),
		"replay", v.replay != nil, "record", v.rec != nil)
	if !u.Features().Has(uffd.FeatureEventRemove) {
		log.Warn("the userfaultfd lacks UFFD_FEATURE_EVENT_REMOVE: memory the guest gives back (balloon) is not seen, and is served from the snapshot again if touched (Firecracker before 1.7 enables it only with a balloon device)")
	}
	return v, nil
}

var (
	errShutdown     = errors.New("the handler is shutting down")
	errSocketClosed = errors.New("Firecracker closed the connection")
	errExited       = errors.New("the Firecracker process exited")
	errHandover     = errors.New("handed over to another handler")
	errGone         = errors.New("the process is gone (ESRCH) or the userfaultfd was closed")
)
