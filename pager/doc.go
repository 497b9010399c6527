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
// userfaultfd) registers the ranges in ModeMissing. Serve reads fault
// messages and resolves each fault once, copying straight from in-memory
// sources (no intermediate copy), with prefetch of neighbours adapted to
// the access pattern and an optional background fill. It follows the
// layout of the faulting process through events: REMOVE makes a range read
// as zeroes next time, UNMAP drops it, REMAP moves it, FORK hands the
// child's userfaultfd over (Config.OnFork).
//
// # Faults of the Go process itself
//
// A goroutine that faults on registered memory inside runtime assembly
// (copy, bytes.Equal, append's memmove) blocks a garbage collection's
// stop-the-world; a handler that is itself a goroutine then never runs, and
// the process hangs. Serve such memory with Config.Isolated, which serves
// faults from a thread the Go scheduler does not own. See Config.Isolated.
package pager
