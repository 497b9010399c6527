//go:build !(cgo && linux)

package cdefs

// Available reports whether the C headers could be read: not without cgo
// on Linux.
const Available = false

// Def is one value from the headers.
type Def struct {
	Value   uint64
	Present bool
}

// Defs is empty without cgo.
var Defs = map[string]Def{}
