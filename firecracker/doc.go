// Package firecracker is Firecracker's page-fault handler protocol: what
// a handler of snapshot-restored microVMs ("mem_backend": {"backend_type":
// "Uffd"}) receives from Firecracker, how to read it, and how to check it
// before serving anything. It needs only the standard library,
// golang.org/x/sys and this module's uffd and handoff packages: use it to
// write a handler of your own. Package firecracker/handler is this
// project's handler, the daemon behind `uffd firecracker`.
//
// # The handshake
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
// length (through a handoff.Reader); SendHandshake writes one as
// Firecracker does (for tests and tools).
//
// # Checking it
//
// ParseMappings and ReadHandshake check the syntax; Validate checks the
// regions against each other, the memory file and the kernel's page sizes;
// MemoryMap.Check checks them against the peer's own mappings
// (/proc/PID/smaps: mapped, with the page size claimed, registered).
// Every rejection is a *HandshakeError whose Reason is a short word for
// logs and metrics.
//
// # Memory hotplug
//
// With virtio-mem, the handshake covers the whole hotpluggable range,
// plugged or not, and the VMM maps the unplugged part PROT_NONE until the
// guest plugs it, with mprotect(2), which raises no userfaultfd event. A
// handler that populates memory ahead of the guest should skip what is
// PROT_NONE: MemoryMap.Accessible, from ReadMemoryMap (/proc/PID/maps,
// cheap enough to re-read as it goes). Faults come only from accessible
// memory.
//
// # Testing without KVM
//
// Package firecracker/fctest is a test VMM that speaks Firecracker's side
// of the protocol from a process of its own.
package firecracker
