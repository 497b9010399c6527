// Package handoff moves a userfaultfd from one process to another, for
// non-cooperative paging: the process whose memory is registered is one
// program, the handler (a monitor, a migration or restore daemon) another.
//
// There are two ways to hand a userfaultfd over:
//
//   - Send and Receive pass it over a UNIX domain socket (SCM_RIGHTS), with
//     a payload of any length (the layout of the registered memory, say)
//     and the sender's credentials as the kernel vouches for them
//     (SCM_CREDENTIALS). This is how a process that creates its own
//     userfaultfd, as Firecracker and QEMU do, gives it to its handler.
//   - FromPid takes a descriptor from a running process by its pid, with
//     pidfd_open(2) and pidfd_getfd(2) (Linux 5.6), the way a checkpoint
//     tool or debugger would. The kernel allows it only to a process that
//     may ptrace the target (PTRACE_MODE_ATTACH_REALCREDS); the error says
//     which part of that is missing.
//
// Either way the receiver gets a *uffd.UFFD through uffd.FromFD: it checks
// that the descriptor is a userfaultfd and adopts the features the other
// side enabled. The received userfaultfd still belongs to the memory of the
// process that created it: its ioctls resolve faults there.
//
// # Descriptor lifetime
//
// Sending does not close the sender's descriptor: both processes then hold
// the same userfaultfd, and the kernel keeps the registration alive until
// the last of them closes it. A sender that should not serve faults itself
// can Close its UFFD once Send returned.
//
// # Wire format
//
// Send writes one message: an 8-byte header (the magic "UFD1" and the
// payload length, little-endian uint32) followed by the payload; the
// descriptor and the credentials ride on the first byte. On SOCK_STREAM
// sockets the header frames the payload; on SOCK_SEQPACKET and SOCK_DGRAM
// sockets the message is one packet, whose size Receive learns before
// reading it, so no payload is ever truncated.
//
// # Other descriptors, other formats
//
// SendFDs and ReceiveFDs carry a payload with any descriptors (up to
// MaxFDs, none included) in the same format: a protocol of one's own that
// moves sockets, pidfds or several userfaultfds at once uses them rather
// than a framing of its own (the Firecracker handler's handover does).
// For a wire format fixed by another program, WriteFDs sends bytes with
// descriptors on the first byte and no framing, and a Reader reads a
// stream socket with recvmsg(2), keeping the descriptors and credentials
// that come with the bytes (Firecracker's handshake is read this way).
// The Reader is the one place in the module where SCM_RIGHTS and
// SCM_CREDENTIALS are parsed.
package handoff
