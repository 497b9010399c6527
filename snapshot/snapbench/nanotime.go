//go:build linux

package snapbench

import _ "unsafe" // go:linkname

// nanotime is the runtime's monotonic clock (one vDSO clock_gettime).
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64
