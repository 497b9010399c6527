package abi

import "unsafe"

// Escape keeps the memory p points to off goroutine stacks.
//
// Some ioctl structs carry addresses of Go memory as integers
// (pm_scan_arg.vec, uffdio_copy.src). A goroutine's stack moves when it
// grows, and the runtime adjusts the pointers into it, but not integers:
// a buffer on the stack could move between taking its address and the
// system call, and the kernel would use the old location. Passing the
// buffer to Escape makes escape analysis place it on the heap (in the
// caller, once), where it never moves; the call itself does nothing.
func Escape(p unsafe.Pointer) {
	if escapeSink.never {
		escapeSink.p = p
	}
}

var escapeSink struct {
	never bool
	p     unsafe.Pointer
}
