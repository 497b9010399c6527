// Package uffd is the Linux userfaultfd API in Go: user-space handling of
// page faults, for snapshot restore, live migration, lazy loading, garbage
// collectors and dirty tracking.
//
// It covers everything Linux 6.18 offers: the userfaultfd(2) system call and
// the /dev/userfaultfd device, the two-step UFFDIO_API feature handshake,
// registration in missing, write-protect and minor modes, every resolving
// ioctl (Copy, ZeroPage, Wake, WriteProtect, Continue, Poison, Move) and
// every event (page faults, fork, remap, remove, unmap).
//
// # Opening
//
// Open creates a userfaultfd and enables exactly the features asked for in
// Config.Features; a feature the kernel lacks is an error matching
// ErrNotSupported that names it and the first kernel that has it. Probe
// reports what the kernel offers, on a throwaway descriptor, because a
// descriptor accepts only one UFFDIO_API.
//
// Creating a userfaultfd needs privilege when vm.unprivileged_userfaultfd is
// 0 (the default): root or CAP_SYS_PTRACE, read/write access to
// /dev/userfaultfd, or Config.UserModeOnly. Open tries the system call and
// then the device, and its error says which to change.
//
// # Serving faults
//
// Register a range, then read messages with ReadMessages and answer each
// page fault with Copy (or ZeroPage, Continue, Move, Poison). ReadMessages
// parks in the Go runtime's poller: it returns when a message arrives, when
// its context ends, or when the UFFD is closed. The resolving methods are
// safe to call from many goroutines at once and allocate nothing.
//
// The results of the resolving ioctls are decoded with care: the count
// returned is the bytes really resolved, never a negated errno. Errors are
// *OpError values naming the operation and range; they match sentinels and
// errnos with errors.Is:
//
//   - ErrPageExists (EEXIST): another resolver populated the page first.
//     Wake the range and carry on.
//   - ErrMmapChanging (EAGAIN, nothing done): a fork, mremap, madvise or
//     munmap event is pending. Read it before retrying: the process that
//     changes its layout sleeps until the event is read.
//   - ErrPartial (EAGAIN, some bytes done): retry the rest.
//   - ErrProcessGone (ESRCH): the registered process has exited.
//   - ErrNoMapping (ENOENT): nothing registered there any more.
//
// # Descriptor lifetime
//
// Close releases the descriptor; when it was the last reference, the kernel
// unregisters every range, drops unread events and wakes the faulting
// threads, which then fault as if never registered: anonymous memory reads
// as zeroes. A handler that exits without serving therefore turns missing
// contents into zeroes unless another process keeps the userfaultfd open.
// A fork event's Message.Child is a new UFFD that the reader owns.
//
// # Faults of the Go process itself
//
// A goroutine that touches a registered page blocks its OS thread in the
// kernel until the fault is served. If that happens inside code the Go
// runtime cannot preempt (runtime.memmove behind copy, bytes.Equal and other
// assembly), a garbage collection's stop-the-world waits for that thread
// forever, while the goroutine that would serve the fault is stopped: the
// process hangs. Faults from plain Go loads and stores are safe, and faults
// of other processes are never a problem. Serving the Go process's own
// memory in general needs a handler that a stop-the-world cannot stop:
// another process holding the userfaultfd, or a thread outside the Go
// scheduler.
//
// # Memory
//
// Package mem maps the memory kinds userfaultfd serves (anonymous, shmem,
// hugetlbfs, shared or private); package pagemap reads and resets
// write-protect state with PAGEMAP_SCAN for dirty tracking with
// FeatureWPAsync.
package uffd
