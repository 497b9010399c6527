//go:build mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc || sparc64

package abi

// arch/{mips,powerpc,sparc}/include/uapi/asm/ioctl.h: three direction bits
// and a 13-bit size field.
const (
	iocNone     = 1
	iocRead     = 2
	iocWrite    = 4
	iocSizeBits = 13
)
