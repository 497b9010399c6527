// Package pager serves the page faults of registered memory from a source
// of page contents: the engine under the project's tools (the Firecracker
// snapshot-restore handler, remote memory images, live snapshots).
//
// A Pager serves one userfaultfd. Add the regions it owns, each with a
// Source (zeroes, an in-memory image, a mapped file, a function, a
// fetched image), then call Serve:
//
//	p, err := pager.New(u, pager.Config{Prefetch: pager.Adaptive()})
//	...
//	err = p.Add(pager.Region{Start: addr, Len: size, Source: pager.Image(snapshot)})
//	...
//	go p.Serve(ctx)
//	<-p.Serving() // faults are served from here on
//
// The pager registers nothing: the caller (or the process that sent the
// userfaultfd) registers the ranges in ModeMissing. It needs cgo, on Linux:
// New fails with an error matching uffd.ErrNotSupported otherwise.
//
// # The engine
//
// Faults are served by an Engine: a reader thread and a worker thread
// pinned to each CPU the process may run on (or the CPUs you choose).
// Each reader reads every userfaultfd of the engine, one message at a time,
// and resolves the faults it reads on the spot. The kernel wakes every
// reader waiting on a userfaultfd for each message (its read wait queue is
// not exclusive), and the reader on the CPU that raised the fault runs
// first, there, as soon as the faulting thread sleeps: so a fault is read
// and resolved on its own CPU.
//
// Each of those wake-ups costs the faulting
// thread, though, before it sleeps: waking a reader that sleeps on an idle
// CPU of a virtual machine is an interrupt into a halted vCPU, several
// microseconds, as much as the rest of the fault's handling. So while
// faults keep coming a reader with nothing to read does not sleep: it
// spins (EngineConfig.Spin, DefaultSpin after the last message any reader
// read), polling without waiting and yielding its CPU to any thread that
// wants it, and a spinning reader is not on the wait queue: a fault raised
// beside it wakes nobody. A message that appears right after another
// thread ran on the spinning reader's CPU (the faulting thread, which just
// stopped to fault) is read at once; one that appears while the reader
// spins alone on its CPU was raised elsewhere and is left to that CPU's
// reader for a few microseconds first. A reader does not spin while its
// CPU's worker installs ahead, nor while Go installs pages into the
// engine's pagers (Resolve, Config.Fill, a source's bytes), nor for 2 ms
// after: those need the CPUs more. The price is CPU time: through a
// stream of faults, CPUs that no faulting thread uses run their spinning
// reader instead of idling (uffd bench reports it).
//
// A reader with nothing
// to read and nothing served lately waits in the kernel: in read(2) or
// poll(2) when its engine serves one userfaultfd without event features,
// in epoll(7) otherwise, where reads can be ordered against installs (see
// Events). Pagers may share an engine (Config.Engine), so that a daemon
// serving a hundred VMs runs two threads per CPU, not two per CPU per VM.
// With no engine configured, Serve starts one for the pager and stops it
// on return. Idle, the threads sleep in the kernel and use no CPU.
//
// The engine's threads are C pthreads that never call Go, and the whole
// fault policy runs there: claims, prefetch windows, removed pages, the
// installing ioctls and the handling of the kernel's answers, events and
// forks. That is a design decision, made for the Go runtime:
//
//   - A goroutine that faults on registered memory blocks its thread in the
//     kernel while keeping its P: to the scheduler it is running. If it
//     faults inside code that cannot be preempted asynchronously (the
//     runtime's memmove behind copy and append, memequal behind
//     bytes.Equal, the vectorised routines of bytes and strings), a
//     garbage collection's stop-the-world waits for it, and a handler that
//     is a goroutine has already been stopped: the process hangs. Threads
//     that are not Go's are not stopped, and the collection completes once
//     the fault is served. TestGCTorture proves it: goroutines read served
//     memory through copy, bytes.Equal and append while another calls
//     runtime.GC in a loop.
//   - A goroutine that blocks in read(2) hands off its P and must get one
//     back when the fault arrives; the goroutines blocked in faults hold
//     theirs, sysmon retakes Ps after a delay, idle Ps spin: the handler's
//     latency then depends on the scheduler. Threads outside the scheduler
//     need no P, whatever GOMAXPROCS is and however many goroutines fault.
//   - The Go runtime's poller is one epoll set for the process, waited on
//     by whichever thread is idle; hand-offs between goroutines land on any
//     CPU. Neither can read a fault on the CPU that raised it.
//
// So the fault path allocates nothing in Go and takes no Go lock, and its
// cost is that of a C handler: the README has the measurements against a C
// reference with one pinned reader per CPU, and the commands that
// reproduce them. The C is in engine.c and engine.h, compiled with
// -Wall -Wextra -Werror.
//
// Go keeps the work that needs Go, off the fault path: reading sources
// that are not in memory (Func, io.ReaderAt, a Fetcher's missing bytes),
// retries with backoff, error policies, Config.OnFault and OnError, and
// children of fork events. The engine hands it requests through an eventfd
// per pager, and Serve's goroutines take them.
//
// # Serving
//
// Every page has three bits: claimed (resolved or being resolved), done
// and zero (dropped by the process). A fault claims its page, and its
// prefetch window, with one atomic operation per 64 pages; a page already
// claimed is never fetched twice, and a fault on it waits for the resolver
// that holds it, which wakes the thread whatever its outcome: every
// outcome but "installed" releases the pages it claimed and wakes their
// threads, which fault again. The kernel's answers: EEXIST (the page is
// there: another resolver won, or it was there before) wakes the thread;
// EAGAIN with progress continues where the kernel stopped; EAGAIN without
// progress means an event is pending: the fault is retried after the
// event is read; ESRCH (the process exited) ends Serve; ENOENT and EINVAL
// (the range is no longer mapped as it was) wake the thread, which faults
// where memory is now or gets SIGSEGV; EFAULT (the source's memory cannot
// be read: a memory file truncated under the pager) is a source error;
// EINTR is retried. A fault in no region waits, reported once, until a
// region that holds it is added. A fault on a page resolved before is
// answered with zeroes (UFFDIO_ZEROPAGE): a repeated message finds the
// page there and wakes its thread, and a page the process dropped without
// an event (no EVENT_REMOVE, a hole punched through another mapping)
// reads as zeroes, as the kernel gives a dropped page.
//
// Mapped sources (Image, File) are copied into the faulting process
// straight from their memory. Zero sources and removed pages are installed
// with UFFDIO_ZEROPAGE (on hugetlbfs, from a zero huge page mapped at
// Add). Other sources are read by Go into a buffer of one of
// Config.Fetchers goroutines, faults first; a failing read is retried with
// backoff (Config.Retry), and when it keeps failing the region's
// ErrorPolicy applies: SIGBUS through UFFDIO_POISON, or the thread keeps
// waiting while retries continue. A fault is never answered with zeroes
// in place of data.
//
// A Fetcher is a source whose bytes arrive into memory over time (a
// remote image fetched into a cache file). The engine copies the pages
// that are present without calling Go, and asks Fetch for the others,
// urgently for a waiting thread; each page is installed as soon as its own
// bytes have arrived.
//
// Prefetch: Fixed resolves the aligned block holding each fault. Adaptive
// follows up to four ascending streams: a fault where a stream's last
// resolve ended doubles its window, up to Max, and the next window is
// handed to the worker of another CPU first, so that both CPUs copy while
// the thread runs; any other fault starts a stream over at Min. The
// background fill (Config.Fill) walks every region in chunks, skipping
// resolved pages, and waits whenever a fault is pending. Resolve populates
// a range on demand (a recorded fault order replayed, for instance).
//
// # Events
//
// Open the userfaultfd with FeatureEventRemove (and EventUnmap,
// EventRemap, EventFork as needed): REMOVE marks the range to be
// zero-filled on its next fault (the balloon case: MADV_DONTNEED,
// MADV_FREE, MADV_REMOVE); UNMAP drops the range's bookkeeping; REMAP
// moves it to the new address; FORK makes a Pager for the child
// (Config.OnFork), with the parent's regions and the pages it received
// marked resolved.
//
// Events are asynchronous: the process that called madvise or mremap
// resumes as soon as the event is read, so a copy whose contents were
// chosen before the event but that lands after it would leave stale data
// where the process expects zeroes, or copy into memory mapped anew. With
// any event feature on, a reader holds the pager's lock exclusively from
// its read(2) to the events applied, and installs share it from choosing
// a page's contents to the ioctl's return: no copy is in flight when an
// event is read, and every copy after it sees its effect. That ordering is
// why such a userfaultfd is waited on in epoll rather than in a blocking
// read, which could not release the lock while it waits.
//
// # Lifetimes
//
// Serve duplicates the userfaultfd for the engine for as long as it runs;
// a Close of the userfaultfd ends it. A Pager's bookkeeping is C memory,
// freed when the Pager is unreachable. Memory the engine reads (an Image's
// bytes, a Fetcher's state) is pinned for the Pager's life and must not
// change while it is served.
//
// Stats are updated right after each ioctl returns, so a faulting thread
// can see its page an instant before Stats counts it; once Serve has
// returned they are exact.
package pager
