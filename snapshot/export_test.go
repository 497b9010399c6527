//go:build linux && cgo

package snapshot

// SetArmHook makes s call fn after each chunk of its first protect pass.
func SetArmHook(s *Snapshotter, fn func(chunk int)) { s.armHook = fn }

// SetSaveHook makes s call fn after each step of its background pass.
func SetSaveHook(s *Snapshotter, fn func(step int)) { s.saveHook = fn }
