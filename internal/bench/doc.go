// Package bench measures the pager against the project's C reference
// handler, shared/bench/ref_handler.c: the workload behind `uffd bench`.
//
// The workload is ref_handler's, step for step. Each run opens a fresh
// userfaultfd, maps a private anonymous region (MADV_NOHUGEPAGE), registers
// it in missing mode and serves it with a pager.Pager; then F faulting
// threads touch one byte of every page of their own slice of the region, in
// order or (Config.Random) in ref_handler's fixed xorshift permutation,
// timing each touch with the monotonic clock. A write-touch stores 1; a
// read-touch (Config.ReadTouch) checks the served byte. After the faulters
// finish, every page is verified. The median of the runs by elapsed time is
// reported with that run's touch percentiles, under ref_handler's JSON field
// names and number formats, plus fields of its own (impl, prefetch, reader,
// the pager's real fault count).
//
// Compare alternates runs of the Go workload with runs of the ref_handler
// binary given the equivalent flags, and reports both and their ratios: the
// way the project's performance targets are checked, since absolute figures
// move from run to run on the project's (nested, virtual) machines.
//
// # Faulting threads
//
// The faulters are goroutines locked to their OS threads that touch the
// region with plain single-byte loads and stores only: a fault taken inside
// runtime assembly (copy, bytes.Equal) can deadlock a garbage collection
// with a pager that is itself a goroutine (see package pager). The Go
// scheduler does not know that a thread blocked in a page fault is idle, so
// such a thread keeps its P: the runs raise GOMAXPROCS to at least
// faulters+1 (Config.GOMAXPROCS) so that the pager always has a P to run
// on. Not more: on 2 CPUs, Ps beyond that only add the scheduler's idle
// spinning (2 faulters, 2 workers: 0.95-1.15 of the C figure with 3 Ps,
// 0.67-0.84 with 4).
package bench
