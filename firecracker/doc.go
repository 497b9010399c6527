// Package firecracker is a page-fault handler for Firecracker microVMs
// restored from a snapshot with their guest memory served over
// userfaultfd ("mem_backend": {"backend_type": "Uffd"}): the library
// behind `uffd firecracker`.
//
// # The protocol
//
// The handler listens on a UNIX stream socket. For each VM it restores,
// Firecracker creates a userfaultfd (close-on-exec, non-blocking, with
// UFFD_FEATURE_EVENT_REMOVE in recent versions), maps the guest memory
// (private anonymous memory, with MAP_HUGETLB for 2 MiB hugetlbfs guests),
// registers every region in missing mode, connects, and writes one message
// with a single sendmsg(2): a JSON array of Mapping objects, with the
// userfaultfd attached as SCM_RIGHTS. The message has no length prefix and
// no terminator; the connection stays open for the VM's life, and its
// closing is the VM's exit. ReadHandshake reads such a message of any
// length; SendHandshake writes one as Firecracker does (for tests and
// tools).
//
// # Serving
//
// A Server serves every VM that connects, each with its own pager
// (package pager) on its own userfaultfd, from one memory file mapped
// once. Each handshake is checked before anything is served (Validate and
// the peer's memory map); a bad one is logged with its reason and its
// connection closed. A VM is served until its process exits (a pidfd, or
// the connection's end), and its resources are then released. Three modes:
// OnDemand, Prefault and RecordReplay.
//
// # When the handler stops
//
// Firecracker keeps its own copy of the userfaultfd. When the handler dies
// the kernel therefore neither unregisters the guest memory nor falls back
// to zero pages: the next vCPU or device access to a page not yet served
// blocks forever, and the guest stalls. Restarting the handler does not
// help those VMs, since their userfaultfds went with it. To restart or
// upgrade the handler without stalling running VMs, start the new instance
// with Takeover against the running one's control socket (ServeControl):
// the running instance hands over its listening socket and every VM's
// userfaultfd, connection and state. See Handover.
//
// # Testing without KVM
//
// Package fctest is a test VMM that speaks Firecracker's side of the
// protocol byte for byte from a process of its own: tests and the
// benchmark (BenchmarkTouchAll) drive the handler with it.
package firecracker
