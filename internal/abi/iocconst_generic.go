//go:build !(mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc || sparc64)

package abi

// asm-generic/ioctl.h: amd64, arm64, riscv64, loong64, s390x, 386, arm.
const (
	iocNone     = 0
	iocWrite    = 1
	iocRead     = 2
	iocSizeBits = 14
)
