//go:build mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc || sparc64

package abi

// iocHost is the running architecture's _IOC encoding (this file's name
// must not end in an architecture, or the name alone would restrict it):
// arch/{mips,powerpc,sparc}/include/uapi/asm/ioctl.h.
var iocHost = iocMIPSPPC
