// Package bench is the workload behind `uffd bench`: the pager measured
// against C references of the same work, in the same invocation.
//
// # The workload
//
// Each run opens a fresh userfaultfd, maps a private anonymous region
// (MADV_NOHUGEPAGE), registers it in missing mode and serves it with a
// pager.Pager; then F faulting threads touch one byte of every page of
// their own slice of the region, in order or (Config.Random) in a fixed
// xorshift permutation, timing each touch with the monotonic clock. A
// write-touch stores 1; a read-touch (Config.ReadTouch) checks the served
// byte. After the faulters finish, every byte of the region is checked.
// The median of the runs by elapsed time is reported with that run's touch
// percentiles, under the JSON field names and number formats of the
// project's first C reference (ref_handler.c), plus fields of its own
// (impl, prefetch, engine, the pager's real fault count).
//
// The faulters run in this process (Config.FaultersIn InProcess) or in a
// child process (Child), started for each run, which creates the
// userfaultfd, registers its region and hands the descriptor over with
// package handoff, as a VM hands its guest memory to its page-fault
// handler. The child is the running program started again: its main must
// call ChildMain when IsChild reports true (the command uffd does).
//
// # The C references
//
// The C sources are in ref/, embedded, and built on demand with the
// system C compiler ($CC, or cc) with -O2 -Wall -Wextra -Werror into a
// cache directory (BuildRef):
//
//   - ref/refbench.c is the same workload in C, with ref_handler.c's options
//     and more: handlers pinned one per CPU of the allowed set (-n 0 -p),
//     the strongest configuration there is on these machines, since the
//     kernel wakes every reader blocked in read(2) for each message and the
//     one on the faulting CPU runs first; faulters in a child process that
//     hands its userfaultfd over (-X); and the machine's limits: the
//     kernel's own first touch with no userfaultfd (-m touch) and the
//     region installed ahead with no fault waiting (-m prefill).
//   - ref/fchandler.c is a handler of Firecracker's protocol with one
//     pinned reader per CPU per VM, the reference for `uffd firecracker`
//     (RunFirecracker, under test VMs of package fctest).
//
// Compare alternates runs of the Go workload with runs of the reference
// given the equivalent flags, and reports both and their ratios: the way
// the engine's targets (Targets) are checked, since absolute figures move
// from run to run on the project's (nested, virtual) machines.
//
// # Faulting threads
//
// The faulters are goroutines locked to their OS threads that touch the
// region with plain single-byte loads and stores only: a fault taken inside
// runtime assembly (copy, bytes.Equal) can deadlock a garbage collection
// with a pager that is itself a goroutine of the same process (see package
// pager). The Go scheduler does not know that a thread blocked in a page
// fault is idle, so such a thread keeps its P: with the faulters in this
// process the runs raise GOMAXPROCS to at least faulters+1
// (Config.GOMAXPROCS) so that the pager always has a P to run on.
//
// # The engine
//
// Engine holds the pager's engine options, and Engine.pagerConfig is the
// one place where the benchmark builds a pager.Config: the rest of the
// package does not depend on how the engine is chosen.
package bench
