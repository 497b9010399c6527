// Package handler is a page-fault handler for Firecracker microVMs
// restored from a snapshot with their guest memory served over
// userfaultfd: the daemon behind `uffd firecracker`, on the protocol of
// package firecracker and the fault-serving engine of package pager.
//
// # Serving
//
// A Server serves every VM that connects, each with its own pager on its
// own userfaultfd, from one memory source (Config.Memory: the memory file
// mapped once, or any pager.Source). Each handshake is checked before
// anything is served (firecracker.Validate and the peer's memory map); a
// bad one is logged with its reason, counted, and its connection closed;
// a connection closed without a byte sent (a probe of the socket) is
// not a rejection. A VM is served until its process exits (a pidfd, or
// the connection's end), and its resources are then released. Three
// modes: OnDemand, Prefault and RecordReplay (with a Trace). Prefault and
// replay populate only memory the VMM maps accessible, re-reading
// /proc/PID/maps as they go: unplugged hotplug memory (PROT_NONE) is
// served on demand once plugged.
//
// # The daemon
//
// RunDaemon is `uffd firecracker`: a DaemonConfig (one field per flag,
// checked by Validate) to sockets, a Server, the control socket, metrics
// (Collector, on package pager/metrics' names) and systemd's socket
// activation and notification. NewLogger makes its logger.
//
// # Logs
//
// One line per VM connected, rejected, handed over and ended, "prefault
// done" and "replay done" when a VM is populated, and "stopped" with the
// server's lifetime counters when Serve returns; debug lines for each
// connection, handshake and memory map check. Durations are
// time.Duration values (seconds in NewLogger's JSON). fault_p50 and
// fault_p99 are upper bounds: the upper edge of the log2 bucket of
// pager.Histogram that holds the percentile.
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
// userfaultfd, connection and state, as messages of package handoff. See
// Server.Handover.
package handler
