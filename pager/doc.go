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
// once plus Config.Workers.
//
// A goroutine that faults inside runtime assembly (copy, bytes.Equal,
// append's memmove) cannot be preempted: a garbage collection's
// stop-the-world then waits for it forever, while the pager's goroutines,
// already stopped, never serve the fault. The process hangs. Touch such
// memory only with plain loads and stores, or serve it with
// Config.Isolated, which serves faults from a thread the Go scheduler does
// not own (a cgo call that never returns to Go while serving). Memory of
// another process (a VM, a child) is not affected by either hazard.
//
// # Costs
//
// The fault path allocates nothing (TestFaultPathAllocs). Figures are in
// the repository's README.
package pager
