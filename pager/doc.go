// Package pager serves the page faults of registered memory from a source
// of page contents: the engine under the project's tools (the Firecracker
// snapshot-restore handler, remote memory, live snapshots).
//
// A Pager serves one userfaultfd. Add the regions it owns, each with a
// Source (zeroes, an in-memory image, a mapped file, a function), then call
// Serve:
//
//	p := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
//	p.Add(pager.Region{Start: addr, Len: size, Source: pager.Image(snapshot)})
//	go p.Serve(ctx)
//
// The pager registers nothing: the caller (or the process that sent the
// userfaultfd) registers the ranges in ModeMissing.
//
// # Serving
//
// Readers (Config.Workers, one by default) read up to 64 messages per
// read(2) and resolve each fault on the spot, with no hand-off to another
// goroutine. Every page has three bits: claimed (resolved or being
// resolved), done and zero. A fault claims its page, and its prefetch
// window, with one atomic operation per 64 pages; a page already claimed
// is never fetched again. A repeated message for a resolved page (several
// threads faulted on it, or a fault was interrupted by a signal) wakes the
// thread. The kernel's answers are handled as follows: EEXIST (another
// resolver won) skips the page and wakes the thread; EAGAIN with progress
// continues where the kernel stopped; EAGAIN without progress means an
// event is pending: the fault is retried after the next read, which
// delivers the event; ESRCH (the process exited) ends Serve; ENOENT (the
// range was unmapped under us) wakes the thread, whose process will see
// its own munmap.
//
// Mapped sources (Image, File) are copied into the faulting process
// straight from their memory. Zero sources and removed pages are installed
// with UFFDIO_ZEROPAGE (on hugetlbfs, from a zero huge page). Other sources
// are read into a per-reader buffer outside any lock; a failing read is
// retried away from the fault path with backoff (Config.Retry), and when it
// keeps failing the region's ErrorPolicy applies: SIGBUS through
// UFFDIO_POISON, or the thread keeps waiting while retries continue. A
// fault is never answered with zeroes in place of data.
//
// Prefetch: Fixed resolves the aligned block holding each fault, as
// ref_handler's -c does. Adaptive follows up to four ascending streams:
// while faults continue where the last resolve ended, the window doubles
// up to Max and the reader also resolves the next window ahead of the
// thread; any other fault starts over with one page. The background fill
// (Config.Fill) walks every region in chunks, skipping resolved pages, and
// waits whenever a fault was read and not yet resolved.
//
// # Events
//
// Open the userfaultfd with FeatureEventRemove (and EventUnmap, EventRemap,
// EventFork as needed): REMOVE marks the range to be zero-filled on its
// next fault (the balloon case: MADV_DONTNEED, MADV_FREE, MADV_REMOVE);
// UNMAP drops the range's bookkeeping; REMAP moves it to the new address;
// FORK makes a Pager for the child (Config.OnFork). Without
// FeatureEventRemove the pager cannot know which pages the process dropped,
// so a fault on a page it resolved before is resolved again from the
// source.
//
// Events are asynchronous: the process that called madvise or mremap
// resumes as soon as the event is read, so a copy chosen before the event
// but issued after it would land stale data. When any event feature is on,
// readers hold a lock exclusively while they read and apply a batch's
// events, and resolvers share it from choosing a page's contents to the
// ioctl's return: no copy is in flight when an event is read, and the
// faults of a batch are resolved against the layout its events left.
//
// # Faults of the Go process itself
//
// Serving memory that the Go process itself touches has two hazards.
//
// A goroutine blocked in a page fault keeps its P (it is running, as far
// as the scheduler knows). When as many goroutines fault at once as there
// are Ps, the pager's readers wait for the scheduler to preempt one (about
// 10 ms). Keep GOMAXPROCS above the number of goroutines that may fault at
// once (the isolated engine below needs no P); on a small machine, not far
// above: idle Ps make the scheduler spin on the CPUs the faulting threads
// need (2 faulters on 2 CPUs: 3 Ps served faults about 1.2 times as fast
// as 4).
//
// A goroutine that faults on registered memory waits in the kernel until the
// fault is served. In ordinary Go code that is harmless: to stop the world
// (a garbage collection), the runtime interrupts the thread with a signal,
// the fault gives way, the goroutine stops at the faulting instruction, and
// it faults again once the world restarts. Inside code that cannot be
// stopped asynchronously, the runtime must wait for the goroutine to get
// out of that code instead: runtime assembly such as the memmove behind
// copy, append and string conversions, the memequal behind bytes.Equal and
// string comparison, and the vectorised routines of package bytes and
// strings. If the handler serving the fault is a goroutine, the
// stop-the-world has already stopped it: the collection waits for the
// faulting goroutine, which waits for the handler, which waits for the
// collection, and the whole process hangs.
//
// The default engine serves faults from goroutines. Serving memory of the
// same process that Go code reads through copy, bytes.Equal or append while
// runtime.GC runs in a loop, it hung in 5 runs out of 5 on the development
// machine (2 vCPUs, Linux 6.18, Go 1.26), each time before the first page
// was read (within 1.2 s).
//
// Config.Isolated runs Serve's loop inside one cgo call. A goroutine in a
// cgo call counts as being in a system call: stopping the world does not wait
// for it, and its thread keeps serving faults while the world is stopped. The
// loop is C, never calls back into Go, and shares with Go only memory pinned
// for the duration of Serve (the regions' bitmaps, the Mapped sources'
// bytes, the counters of Stats). The same workload (4 goroutines reading
// 64 MiB each round through copy, bytes.Equal and append while another calls
// runtime.GC in a loop) finishes every time: 60 rounds of 16384 faults each
// in a row, and 28 more under the race detector.
//
// # Isolated mode: which engine to use
//
// Use Config.Isolated when the registered memory belongs to the Go process
// that serves it and any Go code may touch it: a snapshot or a large file
// mapped into the program and loaded on first touch, memory handed to
// packages you do not control, anything read with copy, append, bytes or
// strings functions, encoders, hashes or io.Readers.
//
// Use the default engine when the faulting process is another one: a virtual
// machine's guest memory (the Firecracker handler), a child, a process that
// sent its userfaultfd. Its faults cannot stall this process's garbage
// collector, and the default engine offers everything the isolated one does
// not (Func sources with retries and poisoning, Fill, OnFault, OnFork,
// several workers). Memory of the serving process itself is safe with the
// default engine only if nothing but plain Go loads and stores ever touches
// it, which is hard to guarantee: prefer Isolated.
//
// # Isolated mode: cost
//
// The isolated loop costs no more than the goroutine engines: about what a
// plain C handler costs. Per 4 KiB page, one goroutine touching one byte per
// page (BenchmarkServe* and BenchmarkFaultIsolated* against the C reference handler of the design notes,
// 25 interleaved rounds on the 2-vCPU development VM while other jobs ran;
// medians, and the median of the per-round ratios to the C handler):
//
//	                                      us/page   vs C
//	C reference handler, blocking read      40.7    1
//	Isolated                                43.2    1.07
//	default engine, ReaderThread            47.9    1.10
//	default engine, poller                  89.6    1.40
//	C reference handler, 64 KiB per fault    9.6    1
//	Isolated, Fixed(64 KiB)                  8.0    0.86
//	default engine, Fixed(64 KiB)           16.5    0.97
//
// On a quieter machine the same order held (9 rounds: C 23.5, Isolated 33.5,
// poller 45.8 us per page). The loop cannot block in read(2) as the C handler
// does, since the descriptor is non-blocking for the Go poller: it reads
// first and waits in poll(2) only when nothing is pending.
//
// Besides, an isolated Serve holds one OS thread for as long as it runs (the
// thread of the cgo call), and a watcher goroutine wakes every 50 ms.
//
// # Isolated mode: limits
//
//   - It needs cgo: with CGO_ENABLED=0 (or no C compiler) Serve returns
//     ErrNoIsolation.
//   - Sources are Mapped (Image, File, or your own Mapped) or Zero: Add
//     rejects others, since reading them is Go code. Such sources cannot
//     fail, so Retry and OnError policies never apply.
//   - Config.Fill, OnFault and OnFork make Serve return an error. Workers and
//     Reader are ignored: one loop reads the userfaultfd first and waits in
//     poll(2) only when it is empty.
//   - Prefetch works as in the default engine (Fixed and Adaptive alike).
//   - Config.OnError is called from a watcher goroutine within 50 ms of the
//     error, not from the fault path. Stats are updated live.
//   - The loop keeps the regions' layout in C: REMOVE, UNMAP and REMAP
//     events are applied there at once, and Regions reports them within
//     50 ms, exactly once Serve has returned.
//   - Regions added while Serve runs are served from their first fault.
//   - A FORK event's userfaultfd is closed: the child's registered ranges
//     then fault as if never registered (anonymous memory reads as zeroes).
//     Go programs rarely fork without exec; os/exec does not raise FORK
//     events (it clones with CLONE_VM).
//   - A Close of the userfaultfd ends Serve within 50 ms; the loop holds a
//     duplicate of the descriptor and keeps serving until then.
//   - Resolve may run concurrently, but is not ordered against the events
//     the loop applies (the loop does not share the default engine's lock).
//   - Nobody serves faults before the loop starts or after Serve returns, and
//     a fault inside runtime assembly then stalls the next collection for
//     good, as with the default engine. Start Serve before such code touches
//     the memory, and end it after. A plain load of a registered byte (in a
//     function of your own, not copy) is a safe way to wait until Serve
//     serves: a collection can interrupt it.
//
// # Costs
//
// The fault path allocates nothing (TestFaultPathAllocs). Figures are in
// the repository's README.
package pager
