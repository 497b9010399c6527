// Package noncoop holds the end-to-end tests of non-cooperative
// userfaultfd: the process whose memory is registered is one program, the
// monitor that serves its faults another, and the monitor learns of the
// other's fork(2), mremap(2), madvise(2) and munmap(2) through events.
//
// The tests start a helper process (this test binary in a helper role),
// which maps and registers memory, hands its userfaultfd to the test
// process over a UNIX socket (package handoff) and then follows commands:
// touch pages, change its layout, or fork a child with a raw clone(2). The
// child is a copy of a Go process that runs with one thread: it executes
// only functions that cannot grow the stack or call into the runtime
// (go:nosplit, go:norace, raw system calls), reports into a shared page
// and exits. The test process serves the faults, either with the raw
// library (ports of the kernel's uffd-unit-tests.c scenarios: events,
// events-wp, wp-fork, wp-fork-with-event, sigbus across fork) or with
// package pager, whose handling of REMAP, REMOVE, UNMAP and FORK it
// checks.
//
// The package has no code outside its tests.
package noncoop
