//go:build linux && cgo

package snapshot

// SetArmHook makes s call fn after each chunk of its first protect pass.
func SetArmHook(s *Snapshotter, fn func(chunk int)) { s.armHook = fn }
