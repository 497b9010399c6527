//go:build !(mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc || sparc64)

package abi

// iocHost is the running architecture's _IOC encoding: asm-generic/ioctl.h
// (amd64, arm64, riscv64, loong64, s390x, 386, arm).
var iocHost = iocGeneric
