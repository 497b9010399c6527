// Package stress is userfaultfd's stress test in the shape of the kernel's
// tools/testing/selftests/mm/uffd-stress.c, run between two processes.
//
// A locker process (this program started again, see LockerMain) maps two
// areas of one memory kind and registers one of them, the destination,
// with a userfaultfd that it hands to this process, the monitor. Per CPU
// the locker runs a locking goroutine that takes a lock word in a random or
// sequential page of the destination (an atomic compare-and-swap: the
// first touch of a missing page faults inside it), checks the page's
// counter against its own record and increments both. Per CPU the monitor
// runs a fault-serving path and a background thread that copies the CPU's
// share of the pages, write-protecting them halfway when the kernel can
// (so that the lockers also take write-protect faults). Every copy takes
// the page from the source, a memory image shared by both processes, and
// is atomic: a locker that finds its counter changed has caught a torn or
// misplaced copy.
//
// When the background copies are done the bounce ends: the locker stops,
// unregisters the destination, checks every counter on verify bounces and
// copies the destination into the source; the next bounce registers the
// other area. Each bounce chooses its modes from the bounces left, as the
// kernel's test does: random or sequential pages, faults racing on the
// same pages from every CPU, a full verification, and the fault path
// reading through the Go runtime's poller (read) or waiting in poll(2) on a
// thread of its own (poll). After every bounce the monitor checks
// independently that the counters in the source add up to the increments
// the locker reports; after the last, the locker checks every counter.
//
// The fault-serving path is either this package's own, a port of the
// kernel test's handler (ServeDirect), or package pager (ServePager), whose
// background copies then go through Pager.Resolve.
//
// The locker touches registered memory only in its own process, whose
// faults are served from here: the Go runtime hazard of faulting inside
// runtime code while a garbage collection stops the world does not arise.
package stress
