package uffd

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gouffd/uffd/internal/abi"
)

// UFFD is an open, initialized userfaultfd: the UFFDIO_API handshake is
// done and the descriptor is registered with the Go runtime's poller.
//
// All methods are safe for concurrent use. Reads are serialized (one reader
// at a time gets whole messages); the resolving ioctls run concurrently.
type UFFD struct {
	// f is the descriptor as an *os.File, registered with the runtime's
	// poller, for reads: made on the first ReadMessages or SyscallConn.
	// Until then fd is not in the poller's epoll set, which every fault
	// would otherwise wake (a pager serving on threads of its own never
	// needs it).
	fileMu    sync.Mutex
	f         *os.File
	fd        int // the descriptor
	fdCleanup runtime.Cleanup

	// ioctlFd is a duplicate of f's descriptor that the ioctls use. refs
	// counts the ioctls using it, times two, plus one once Close was called:
	// the descriptor is closed when Close was called and no ioctl uses it.
	// So its number is never closed (and perhaps reused) under a running
	// ioctl, and Close never waits for one.
	ioctlFd  int
	refs     atomic.Int64
	fdClosed atomic.Bool
	cleanup  runtime.Cleanup

	features     Feature // enabled by the handshake
	available    Feature // all the kernel offers
	ioctls       Ioctl   // the fd's ioctls (UFFDIO_API's answer)
	userModeOnly bool
	path         Path

	readMu sync.Mutex
	rbuf   []byte

	done     chan struct{} // closed by Close
	doneOnce sync.Once

	dlMu      sync.Mutex // orders context cancellation against reads
	readSeq   uint64
	cancelled bool
}

// newUFFD takes ownership of fd, which must be initialized. On error fd is
// closed.
func newUFFD(fd int, features, available Feature, ioctls Ioctl, userModeOnly bool, path Path) (*UFFD, error) {
	// The descriptor must be non-blocking for the poller (the kernel gives a
	// fork child's descriptor the parent's flags; this makes sure of it).
	setNonblock(fd)
	ioctlFd, err := dupFd(fd)
	if err != nil {
		closeFd(fd)
		return nil, &OpError{Op: "dup", Err: err}
	}
	u := &UFFD{
		fd:           fd,
		ioctlFd:      ioctlFd,
		features:     features,
		available:    available,
		ioctls:       ioctls,
		userModeOnly: userModeOnly,
		path:         path,
		done:         make(chan struct{}),
	}
	// The safety net for a UFFD dropped without Close: these close both
	// descriptors (once f is made, it closes its own).
	u.cleanup = runtime.AddCleanup(u, closeFd, ioctlFd)
	u.fdCleanup = runtime.AddCleanup(u, closeFd, fd)
	return u, nil
}

// file returns f, making it on first use.
func (u *UFFD) file() (*os.File, error) {
	u.fileMu.Lock()
	defer u.fileMu.Unlock()
	if u.isClosed() {
		return nil, ErrClosed
	}
	if u.f == nil {
		u.fdCleanup.Stop()
		u.f = os.NewFile(uintptr(u.fd), "userfaultfd")
	}
	return u.f, nil
}

// Features returns the features enabled on this userfaultfd.
func (u *UFFD) Features() Feature { return u.features }

// Available returns every feature the kernel reported in the handshake.
func (u *UFFD) Available() Feature { return u.available }

// Ioctls returns the ioctls the kernel offers on the descriptor itself
// (Register, Unregister and API); the resolving ioctls of a range are what
// Register returns.
func (u *UFFD) Ioctls() Ioctl { return u.ioctls }

// UserModeOnly reports whether faults taken in kernel mode (a system call
// reading a registered page) fail with EFAULT instead of reaching this
// userfaultfd.
func (u *UFFD) UserModeOnly() bool { return u.userModeOnly }

// Path reports how the descriptor was created.
func (u *UFFD) Path() Path { return u.path }

func (u *UFFD) String() string {
	if u == nil {
		return "<nil>"
	}
	return fmt.Sprintf("uffd(fd=%d features=%v)", u.fd, u.features)
}

// SyscallConn gives raw access to the descriptor, for passing it to another
// process (SCM_RIGHTS) or to poll it yourself. Do not close it or change
// its flags.
//
// The descriptor is then registered with the runtime's poller, whose
// thread every fault wakes from then on: to hand the userfaultfd to
// threads or processes of your own, prefer Dup.
func (u *UFFD) SyscallConn() (syscall.RawConn, error) {
	f, err := u.file()
	if err != nil {
		return nil, err
	}
	return f.SyscallConn()
}

// Close releases the userfaultfd. It unblocks a pending read, which returns
// ErrClosed; later operations return ErrClosed too. It does not wait for
// ioctls in flight: their descriptor is closed when the last one returns.
// When this was the last reference to the userfaultfd, the kernel
// unregisters every range and wakes the faulting threads, which then fault
// as if never registered (anonymous memory reads as zeroes). Close is
// idempotent.
func (u *UFFD) Close() error {
	old := u.refs.Or(1)
	if old&1 != 0 {
		return nil
	}
	u.doneOnce.Do(func() { close(u.done) })
	if old == 0 {
		u.closeIoctlFd()
	}
	u.fileMu.Lock()
	var err error
	if u.f != nil {
		err = u.f.Close() // wakes a reader parked in the poller
	} else {
		u.fdCleanup.Stop()
		closeFd(u.fd)
	}
	u.fileMu.Unlock()
	if err != nil {
		return &OpError{Op: "close", Err: err}
	}
	return nil
}

// Done returns a channel that is closed when Close is called, for code that
// serves the descriptor on threads of its own and must stop when it is
// closed (package pager).
func (u *UFFD) Done() <-chan struct{} { return u.done }

// Dup returns a new descriptor of the same userfaultfd, close-on-exec,
// which the caller owns and must close: for threads of your own that block
// in read(2) or epoll(7) on it (it is not registered with the Go runtime's
// poller), or for handing to another process. The userfaultfd lives on
// while any of its descriptors is open, so closing u alone then does not
// unregister its ranges. It returns ErrClosed after Close.
func (u *UFFD) Dup() (int, error) {
	if u.refs.Add(2)&1 != 0 {
		u.release()
		return -1, ErrClosed
	}
	fd, err := dupFd(u.ioctlFd)
	u.release()
	if err != nil {
		return -1, &OpError{Op: "dup", Err: err}
	}
	return fd, nil
}

// ioctl runs one userfaultfd ioctl. It allocates nothing and takes no lock.
// Once Close was called it returns EBADF without a system call; callers
// report that as ErrClosed (the descriptor cannot be closed while an ioctl
// uses it, so EBADF means nothing else).
func (u *UFFD) ioctl(req uint, arg unsafe.Pointer) syscall.Errno {
	if u.refs.Add(2)&1 != 0 {
		u.release()
		return syscall.EBADF
	}
	errno := abi.Ioctl(u.ioctlFd, req, arg)
	u.release()
	return errno
}

// isClosed reports whether Close was called.
func (u *UFFD) isClosed() bool { return u.refs.Load()&1 != 0 }

func (u *UFFD) release() {
	if u.refs.Add(-2) == 1 { // closed, and this was the last ioctl
		u.closeIoctlFd()
	}
}

func (u *UFFD) closeIoctlFd() {
	if !u.fdClosed.Swap(true) {
		u.cleanup.Stop()
		closeFd(u.ioctlFd)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// ReadMessages blocks until at least one message is pending, then reads as
// many as fit in msgs, decodes them in place and returns how many it
// decoded. It parks in the Go runtime's poller, never on an OS thread.
//
// It returns ErrClosed once Close was called, and an error wrapping
// ctx.Err() when ctx ends first. With a context that can never be cancelled
// (context.Background) it allocates nothing in the steady state; other
// contexts cost one small allocation per call.
//
// A message that cannot be decoded yields a *MessageError after the valid
// messages of the same read were returned in msgs[:n]. Fork events carry the
// child's userfaultfd in Message.Child; the caller owns it.
func (u *UFFD) ReadMessages(ctx context.Context, msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if u.isClosed() {
		return 0, ErrClosed
	}
	f, err := u.file()
	if err != nil {
		return 0, err
	}
	u.readMu.Lock()
	defer u.readMu.Unlock()
	want := len(msgs) * MessageSize
	if cap(u.rbuf) < want {
		u.rbuf = make([]byte, want)
	}
	buf := u.rbuf[:want]

	var n int
	if ctx.Done() == nil {
		n, err = f.Read(buf)
	} else {
		n, err = u.readCancellable(ctx, f, buf)
	}
	if err != nil {
		switch {
		case u.isClosed():
			return 0, ErrClosed
		case ctx.Err() != nil:
			return 0, &OpError{Op: "read", Err: ctx.Err()}
		}
		return 0, &OpError{Op: "read", Err: err}
	}
	return u.decode(buf[:n], msgs)
}

func (u *UFFD) readCancellable(ctx context.Context, f *os.File, buf []byte) (int, error) {
	u.dlMu.Lock()
	u.readSeq++
	seq := u.readSeq
	u.dlMu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		u.dlMu.Lock()
		if u.readSeq == seq {
			u.cancelled = true
			f.SetReadDeadline(aLongTimeAgo)
		}
		u.dlMu.Unlock()
	})
	n, err := f.Read(buf)
	stop()
	u.dlMu.Lock()
	u.readSeq++
	if u.cancelled {
		u.cancelled = false
		f.SetReadDeadline(time.Time{})
	}
	u.dlMu.Unlock()
	return n, err
}

// Decode decodes the messages in buf, as read(2) returned them from this
// userfaultfd, into msgs, for callers that read the descriptor themselves
// (their own epoll loop, or a blocking read on a thread of their own). It
// returns how many it decoded; len(msgs) must be at least
// len(buf)/MessageSize. Fork events carry the child's userfaultfd, owned by
// the caller, as with ReadMessages.
func (u *UFFD) Decode(buf []byte, msgs []Message) (int, error) {
	if len(msgs)*MessageSize < len(buf) {
		return 0, &OpError{Op: "decode", Err: argError(fmt.Sprintf("%d bytes hold %d messages; msgs has room for %d", len(buf), len(buf)/MessageSize, len(msgs)))}
	}
	return u.decode(buf, msgs)
}

func (u *UFFD) decode(buf []byte, msgs []Message) (int, error) {
	n := 0
	var firstErr error
	for off := 0; off < len(buf); off += MessageSize {
		m := &msgs[n]
		if err := decodeMessage(buf[off:], m); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if m.Event == EventFork {
			child, err := newUFFD(m.childFD, u.features, u.available, u.ioctls, u.userModeOnly, PathFork)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			m.Child = child
		}
		n++
	}
	return n, firstErr
}
