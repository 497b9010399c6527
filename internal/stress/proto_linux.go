package stress

import (
	"encoding/binary"
	"fmt"

	"github.com/gouffd/uffd"
)

// The locker is this program started again with lockerEnv set; descriptor
// 3 is its socket to the monitor, descriptor 4 the source image (a memfd
// both map shared). The monitor writes one request per line; the locker
// answers each with one line, and answers the hello with the handoff of
// its userfaultfd.
const lockerEnv = "UFFD_STRESS_LOCKER"

// Each page of the areas and of the source starts with this record: the
// lock word (taken with compare-and-swap), the counter, a placeholder that
// stays 1 (uffd-stress.c keeps a non-zero word after the counter) and the
// page's own index, which catches a copy landing on the wrong page.
const (
	offLock  = 0
	offCount = 8
	offPlace = 16
	offIndex = 24
)

// A locker that cannot set up writes one line, lockerErrorPrefix and the
// error, where the monitor waits for the handoff of its userfaultfd, and
// exits; a handoff starts with handoffFirstByte (of handoff's "UFD1"),
// which the monitor peeks at to tell the two apart.
const (
	lockerErrorPrefix = "error: "
	handoffFirstByte  = 'U'
)

// hello configures the locker.
type hello struct {
	Kind     string
	Pages    int
	PageSize int
	CPUs     int
	Features uffd.Feature
	WP       bool
}

// areas is the locker's handoff payload: the two areas and, for shared
// memory, their second mappings (registered too, as uffd-stress.c does, so
// that a copy through the alias meets the page the first copy installed).
type areas struct {
	Dst   [2]uintptr
	Alias [2]uintptr
}

// request is a step of a bounce.
type request struct {
	Op    string // "bounce", "go", "finish", "end", "check"
	Index int
	Dst   int  // which area is the destination
	Mode  Mode // of the bounce
	Left  int  // bounces left after this one
}

// answer is the locker's reply.
type answer struct {
	Err        string
	Increments uint64
}

// pageRecord reads the record at the start of page p.
func pageRecord(p []byte) (lock uint32, count, place, index uint64) {
	ne := binary.NativeEndian
	return ne.Uint32(p[offLock:]), ne.Uint64(p[offCount:]), ne.Uint64(p[offPlace:]), ne.Uint64(p[offIndex:])
}

// checkRecord describes what is wrong with page n's record, or returns "".
func checkRecord(p []byte, n int, want uint64) string {
	lock, count, place, index := pageRecord(p)
	switch {
	case index != uint64(n):
		return fmt.Sprintf("page %d holds page %d's record (count %d): a copy landed on the wrong page", n, index, count)
	case count != want:
		return fmt.Sprintf("page %d: counter %d, want %d", n, count, want)
	case lock != 0:
		return fmt.Sprintf("page %d: lock word %d after the lockers stopped", n, lock)
	case place != 1:
		return fmt.Sprintf("page %d: placeholder %d, want 1", n, place)
	}
	return ""
}
