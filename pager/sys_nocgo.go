//go:build !cgo || !linux

package pager

import (
	"context"

	"github.com/gouffd/uffd"
)

// errNoEngine is what every pager operation returns in this build: the
// engine is C, for Linux.
var errNoEngine = &uffd.NotSupportedError{What: "the pager (it needs cgo, on Linux)"}

type sysEngine struct{}

type sysPager struct{}

func (e *Engine) start() error { return errNoEngine }
func (e *Engine) stop()        {}

func (p *Pager) newSys() error             { return errNoEngine }
func (p *Pager) sysAdd(*source, int) error { return errNoEngine }
func (p *Pager) regionsLocked() []Region   { return nil }

// Regions returns the regions as they are now in the faulting process.
func (p *Pager) Regions() []Region { return nil }

// Resolved reports whether the page holding addr was resolved.
func (p *Pager) Resolved(addr uintptr) bool { return false }

// RemovedRanges returns the ranges the process dropped.
func (p *Pager) RemovedRanges() []Range { return nil }

// MarkRemoved records that the process dropped r.
func (p *Pager) MarkRemoved(r Range) {}

// Stats returns the counters.
func (p *Pager) Stats() Stats { return Stats{} }

// Serve serves faults; in this build it cannot.
func (p *Pager) Serve(ctx context.Context) error { return errNoEngine }

// Resolve installs pages ahead of faults; in this build it cannot.
func (p *Pager) Resolve(ctx context.Context, addr, length uintptr) error { return errNoEngine }
