//go:build linux

package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gouffd/uffd"
	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

// Mode is how a VM's memory is brought in.
type Mode int

const (
	// OnDemand serves each fault when it comes (with Config.Prefetch).
	OnDemand Mode = iota
	// Prefault populates all of the VM's memory in the background, in
	// address order, while faults keep priority.
	Prefault
	// RecordReplay prefetches the pages a VM restored from this snapshot
	// touched before, in the order it touched them, when a trace of the
	// snapshot exists (Config.Trace); otherwise it serves on demand and
	// records the order of the VM's faults into the trace.
	RecordReplay
)

var modeNames = []string{"on-demand", "prefault", "record-replay"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses a Mode's name as String prints it.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q (want one of %s)", s, strings.Join(modeNames, ", "))
}

// Config holds a Server's options. MemFile is required; the zero value of
// everything else means the defaults.
type Config struct {
	// MemFile is the snapshot's memory file, mapped once and shared by
	// every VM. It must not change while the server runs.
	MemFile pager.Mapped
	// Mode is how memory is brought in.
	Mode Mode
	// Trace is the trace file of RecordReplay.
	Trace string
	// RecordFor bounds how long after a restore its faults are recorded
	// (default DefaultRecordFor); the VM's exit ends the recording sooner.
	RecordFor time.Duration
	// Prefetch, Workers and Reader configure each VM's pager.
	Prefetch pager.Prefetch
	Workers  int
	Reader   pager.Reader
	// Logger receives the server's structured logs (slog.Default() when
	// nil).
	Logger *slog.Logger
	// HandshakeTimeout bounds the wait for a connection's message
	// (default DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// MaxMessage bounds a handshake message (default DefaultMaxMessage).
	MaxMessage int
	// MaxVMs bounds the VMs served at once (default DefaultMaxVMs); more
	// are refused.
	MaxVMs int
	// MaxHandshakes bounds the connections waiting for their message
	// (default DefaultMaxHandshakes); more are refused at once.
	MaxHandshakes int
	// SkipMemoryMapCheck skips comparing the regions with the peer's
	// /proc/PID/smaps.
	SkipMemoryMapCheck bool
}

// Defaults of Config.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxVMs           = 1024
	DefaultMaxHandshakes    = 64
	DefaultRecordFor        = 60 * time.Second
)

// Server serves Firecracker VMs restored from one snapshot: it accepts
// their connections, checks each handshake, and serves each VM's faults
// with a pager of its own until the VM exits.
type Server struct {
	cfg         Config
	log         *slog.Logger
	pageSizes   []int
	fingerprint uint64

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
}

// NewServer returns a server for cfg.
func NewServer(cfg Config) (*Server, error) {
	if cfg.MemFile == nil {
		return nil, errors.New("firecracker: no memory file")
	}
	if cfg.Mode < OnDemand || cfg.Mode > RecordReplay {
		return nil, fmt.Errorf("firecracker: unknown mode %v", cfg.Mode)
	}
	if cfg.Mode == RecordReplay && cfg.Trace == "" {
		return nil, errors.New("firecracker: record-replay needs a trace file")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxVMs <= 0 {
		cfg.MaxVMs = DefaultMaxVMs
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.RecordFor <= 0 {
		cfg.RecordFor = DefaultRecordFor
	}
	sizes, _ := mem.HugePageSizes() // none: only base pages are accepted
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		pageSizes:  sizes,
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		vms:        map[uint64]*vm{},
	}
	s.m.init()
	if cfg.Mode == RecordReplay {
		s.fingerprint = Fingerprint(cfg.MemFile.Bytes())
		t, err := ReadTrace(cfg.Trace)
		switch {
		case err == nil:
			if err := t.Matches(cfg.MemFile.Size(), s.fingerprint); err != nil {
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

// Serve accepts connections on ln until ctx ends, then stops serving every
// VM and returns nil. A VM that is still running when its handler stops
// keeps its userfaultfd (Firecracker holds its own copy): its next fault
// waits until a handler serves it again, so hand the VMs over (Handover)
// rather than stop when they should go on running.
//
// When Handover moves everything to another instance, Serve returns nil
// without closing ln (which the other instance now has).
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	s.mu.Lock()
	if s.handover.ln != nil {
		s.mu.Unlock()
		return errors.New("firecracker: Serve is already running")
	}
	s.handover.ln = ln
	s.handover.acceptDone = make(chan struct{})
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	s.log.Info("serving", "socket", ln.Addr().String(), "mode", s.cfg.Mode.String(), "memory_file_bytes", s.cfg.MemFile.Size())
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
		if s.handover.failed.Load() {
			return errors.New("firecracker: handover failed; see the log")
		}
		return nil
	}
	ln.Close()
	s.shutdown()
	if err != nil {
		return fmt.Errorf("firecracker: accept: %w", err)
	}
	return nil
}

// Shutdown stops serving every VM (taken over, or left by Serve) and waits
// for their goroutines. Serve calls it when its context ends; call it
// after a Takeover that is not followed by Serve.
func (s *Server) Shutdown() { s.shutdown() }

// shutdown stops every VM and waits for the goroutines.
func (s *Server) shutdown() {
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
}

// VMInfo describes a VM being served.
type VMInfo struct {
	ID       uint64
	PID      int
	UID      int
	Regions  []Mapping
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
		addStats(&sum, v.p.Stats())
	}
	return sum
}

func addStats(sum *pager.Stats, st pager.Stats) {
	sum.Faults += st.Faults
	sum.Pages += st.Pages
	sum.Bytes += st.Bytes
	sum.Prefetched += st.Prefetched
	sum.Filled += st.Filled
	sum.Zeroed += st.Zeroed
	sum.Exists += st.Exists
	sum.Retries += st.Retries
	sum.SourceErrors += st.SourceErrors
	sum.Poisoned += st.Poisoned
	sum.Outside += st.Outside
	sum.Removes += st.Removes
	sum.Unmaps += st.Unmaps
	sum.Remaps += st.Remaps
	sum.Forks += st.Forks
	for i, c := range st.Latency.Buckets {
		sum.Latency.Buckets[i] += c
	}
}

// peer is what the kernel says of the process at the other end of a
// connection.
type peer struct {
	pid, uid, gid int
	pidfd         *os.File // nil when it cannot be had
}

// peerOf reads the peer's credentials (SO_PEERCRED) and a pidfd for it
// (SO_PEERPIDFD, Linux 6.5; pidfd_open on older kernels).
func peerOf(c *net.UnixConn) (peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var p peer
	var cerr error
	pidfd := -1
	err = rc.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if cerr != nil {
			return
		}
		p.pid, p.uid, p.gid = int(cred.Pid), int(cred.Uid), int(cred.Gid)
		if n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
			pidfd = n
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return peer{}, err
	}
	if pidfd < 0 && p.pid > 0 {
		if n, err := unix.PidfdOpen(p.pid, unix.PIDFD_NONBLOCK); err == nil {
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
	log = log.With("pid", p.pid)
	select {
	case s.handshakes <- struct{}{}:
	default:
		s.rejected(log, c, p.pidfd, reject(ReasonOverloaded, "%d connections are already waiting for their message", cap(s.handshakes)))
		return
	}
	hs, err := ReadHandshake(c, s.cfg.MaxMessage, time.Now().Add(s.cfg.HandshakeTimeout))
	<-s.handshakes
	if err != nil {
		s.rejected(log, c, p.pidfd, err)
		return
	}
	v, err := s.adopt(id, log, c, p, hs)
	settled()
	if err != nil {
		s.rejected(log, c, p.pidfd, err)
		return
	}
	s.run(v)
}

// rejected logs and counts a refused connection and closes it.
func (s *Server) rejected(log *slog.Logger, c *net.UnixConn, pidfd *os.File, err error) {
	reason := ReasonInternal
	var he *HandshakeError
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
func (s *Server) adopt(id uint64, log *slog.Logger, c *net.UnixConn, p peer, hs *Handshake) (*vm, error) {
	if err := Validate(hs.Mappings, s.cfg.MemFile.Size(), s.pageSizes); err != nil {
		unix.Close(hs.FD)
		return nil, err
	}
	if !s.cfg.SkipMemoryMapCheck && p.pid > 0 {
		vmas, err := readSmaps(p.pid)
		if err != nil {
			log.Debug("cannot read the peer's memory map; regions not checked against it", "err", err)
		} else {
			unreg, err := checkMemoryMap(vmas, hs.Mappings)
			if err != nil {
				unix.Close(hs.FD)
				return nil, err
			}
			if len(unreg) > 0 {
				log.Warn("regions not registered with a userfaultfd in missing mode: their faults will not reach this handler", "regions", unreg)
			}
		}
	}
	u, err := uffd.FromFD(hs.FD, 0) // closes the fd on error
	if err != nil {
		return nil, reject(ReasonFD, "the descriptor sent is not a usable userfaultfd: %v", err)
	}
	v, err := s.newVM(id, log, c, p, u, hs.Mappings, nil)
	if err != nil {
		u.Close()
		return nil, err
	}
	log.Info("VM connected",
		"uid", p.uid, "regions", len(hs.Mappings), "guest_bytes", v.guestBytes(), "message_bytes", hs.Bytes,
		"features", u.Features().String(), "layout", describeRegions(hs.Mappings),
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
