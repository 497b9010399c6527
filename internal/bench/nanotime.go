//go:build linux

package bench

import _ "unsafe" // go:linkname

// nanotime is the runtime's monotonic clock: one vDSO clock_gettime
// (CLOCK_MONOTONIC), as ref_handler's now(). time.Now and time.Since read
// the clock three times between them (27 ns against 84 ns here), which
// would show in the touch latency of pages that were already served.
// runtime.nanotime is one of the runtime's symbols kept for linkname.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64
