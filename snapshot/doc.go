// Package snapshot takes live snapshots of memory: a point-in-time copy of
// running memory, written to a file, any io.WriterAt or S3 while its writers
// keep running, without fork(); and incremental snapshots that save only
// the pages written since the last one, as diff layers that a Chain serves
// back through the pager.
//
// It is for programs that keep large state in memory (in-memory databases,
// VMMs, language runtimes) and for monitors holding another process's
// userfaultfd (a VMM's guest memory).
//
//	u, _ := uffd.Open(uffd.Config{Features: snapshot.Features(false)})
//	s, _ := snapshot.New(u, snapshot.Config{Regions: []snapshot.Region{{Start: addr, Len: size}}, Track: true})
//	defer s.Close()
//	res, err := s.TakeFile(ctx, "base.img") // full
//	...
//	res, err = s.TakeFile(ctx, "d1.img") // the pages written since
//	c, _ := snapshot.OpenChain("base.img", "d1.img") // a pager.Mapped
//
// # How a snapshot is taken
//
// The memory is registered in write-protect mode (with
// UFFD_FEATURE_WP_UNPOPULATED, so that pages never touched are covered
// too). Its write-protect faults are answered by the pager's engine, in C
// (pager.Protector), in one of four modes: off (unprotect), track
// (unprotect at once and mark the page dirty), hold (keep the writer
// waiting) and save (copy the page out first if it is still to save).
//
//  1. Arm, writers running: write-protect everything in chunks
//     (Config.ArmChunk) in track mode, then protect the pages marked dirty
//     again, one ioctl per run, until few are left (Config.Rounds,
//     Config.Small). Protecting 4 GiB of 4 KiB pages takes 75-94 ms on the
//     development machine, fork() 98-176 ms: holding writers for the whole
//     pass would pause them nearly as long as fork does.
//  2. The instant, in one call into C: switch to hold (which waits for the
//     track answers in flight), protect the last dirty pages, switch to
//     save. When the protection returns, every page is protected and
//     unwritten since its last protection, so the memory is its state at
//     that instant: a write either completed before it (its page was
//     unprotected and is protected again after the write) or is held. A
//     writer held at one page makes no later write, so what the snapshot
//     holds of each thread's writes is a prefix of them, and a write seen
//     by another thread before that thread's own write is in the snapshot
//     whenever that write is: the copy is one consistent cut. The pause is
//     the last small protection (tens of microseconds).
//  3. Save: a background pass copies the pages still to save in address
//     order, runs of Config.SaveRun pages, into a bounded buffer of C
//     memory (Config.Buffer), unprotecting each run with one ioctl; a
//     write fault on a page still to save copies that page's block
//     (Config.Block) first and then releases the writer. Copies wait in
//     the buffer until written out. A full buffer makes the fault wait
//     (parked, without blocking the reader thread) until the drain frees
//     slots: a slow destination slows writers down instead of growing
//     memory; the background pass leaves a quarter of the buffer to faults.
//     A thread of the snapshot's own writes the copies to the file (no Go
//     code in the loop). Zero pages are not written (holes in a file).
//
// Pages are read with memcpy in this process, with process_vm_readv in
// another one (Config.Pid: its userfaultfd was handed over, package
// handoff, and the Snapshotter registers its ranges through it:
// registration acts on the userfaultfd's memory, not the caller's).
// Hugetlbfs pages are protected and saved whole.
//
// # The Go process's own memory
//
// A goroutine that faults inside runtime assembly (the memmove behind copy
// and append) cannot be stopped by a garbage collection's stop-the-world,
// which then waits for its fault to be answered. Every answer here runs in
// C, on the engine's threads, in cgo calls, or on the drain thread that
// writes copies to an *os.File destination; no page is claimed while Go
// code runs. TestGCTorture takes full and incremental snapshots while
// writers use copy and append and runtime.GC runs in a loop.
//
// The drain thread starts before the instant, since only it frees the
// buffer, and writes with O_DIRECT where the file system has it
// (Config.Buffered turns that off): the kernel puts buffered writers to
// sleep for up to 200 ms when dirty pages pile up. An io.WriterAt that is
// not an *os.File gets the layer staged in a temporary file
// (Config.TempDir) and copied once the writers run free (TakeURL uploads
// the staged layer with remote.Push the same way): a goroutine
// draining the buffer would stop with the world at each collection, and a
// writer of this process faulting inside runtime assembly on a full buffer
// would hang it (seen under the race detector, whose atomics cannot be
// preempted).
//
// # Incremental snapshots and dirty tracking
//
// With Config.Track, pages saved stay protected after the snapshot, and a
// write fault there marks the page dirty and unprotects it (track mode),
// on the same synchronous userfaultfd. The next snapshot skips the first
// protect pass, protects the dirty pages again (arming as above), and
// saves exactly those, copy-before-write included, as a diff layer over
// the last one.
//
// UFFD_FEATURE_WP_ASYNC tracks writes far cheaper: the kernel resolves the
// fault itself (BenchmarkTrackAsync: 0.75 us per page written, against
// 11.8 us for a fault answered by the engine, BenchmarkTrackSync; the dirty
// set is collected in 38 and 103 ns per page). But an asynchronous
// userfaultfd never delivers write-protect messages, so no write can be
// held or copied first: the pages written since the last snapshot could
// only be saved consistently with the writers stopped, and a range cannot
// move to a synchronous userfaultfd without being unregistered, which
// clears its write-protection and loses the writes made meanwhile. So the
// tracking stays synchronous, in C.
//
// # Layers
//
// A layer file holds the image's bytes at their offsets (holes for zero
// pages and pages not in the layer), a bit per 4 KiB unit saying which
// units it holds, and a footer naming the layer and its parent (see
// OpenLayer). A full layer is served as it is (pager.OpenFile, Offset 0).
// A Chain maps a full layer and its diffs as one image, each diff's runs
// mapped over the layers before it; Compact (and `uffd image compact`)
// folds a chain into one full layer.
//
// # Cancellation and errors
//
// When the context ends, the destination fails (disk full) or a page
// cannot be read, everything is unprotected, every writer waiting is
// released, the copies not written are dropped and Take returns the
// error; tracking starts over, so the next snapshot is full.
package snapshot
