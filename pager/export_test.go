//go:build cgo && linux

package pager

// EngineThreads returns the OS thread ids of e's readers and workers.
func EngineThreads(e *Engine) []int { return e.threads() }
