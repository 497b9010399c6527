package uffd

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/gouffd/uffd/internal/abi"
	"github.com/gouffd/uffd/internal/bitnames"
)

// MessageSize is the size of one kernel message (struct uffd_msg).
const MessageSize = 32

// Event is the kind of a message read from a userfaultfd.
type Event uint8

// The events. Only EventPagefault is always on; the others need the
// matching Feature.
const (
	EventPagefault Event = 0x12 // a thread faulted on a registered page
	EventFork      Event = 0x13 // the process forked (FeatureEventFork)
	EventRemap     Event = 0x14 // mremap(2) moved a range (FeatureEventRemap)
	EventRemove    Event = 0x15 // madvise(MADV_DONTNEED/REMOVE) dropped a range (FeatureEventRemove)
	EventUnmap     Event = 0x16 // munmap(2) unmapped a range (FeatureEventUnmap)
)

func (e Event) String() string {
	switch e {
	case EventPagefault:
		return "Pagefault"
	case EventFork:
		return "Fork"
	case EventRemap:
		return "Remap"
	case EventRemove:
		return "Remove"
	case EventUnmap:
		return "Unmap"
	}
	return "Event(" + strconv.Itoa(int(e)) + ")"
}

// FaultFlags describe a page fault.
type FaultFlags uint64

// Page-fault flags (UFFD_PAGEFAULT_FLAG_*).
const (
	FaultWrite        FaultFlags = 1 << 0 // the access was a write
	FaultWriteProtect FaultFlags = 1 << 1 // a write to a write-protected page
	FaultMinor        FaultFlags = 1 << 2 // a minor fault (page in the page cache)
)

var faultFlagNames = []string{"Write", "WriteProtect", "Minor"}

func (f FaultFlags) String() string { return bitnames.Format(uint64(f), faultFlagNames) }

// Message is one decoded event. Which fields are set depends on Event:
//
//   - EventPagefault: Flags, Address (page-aligned unless FeatureExactAddress)
//     and ThreadID (with FeatureThreadID).
//   - EventFork: Child, the child process's userfaultfd, owned by the reader,
//     which must serve or Close it.
//   - EventRemap: From, To and Len. When mremap(2) moves a range, Linux
//     (6.18 at least) follows the Remap with an EventUnmap of the old range:
//     forget the old addresses on the Remap, and expect that Unmap.
//   - EventRemove and EventUnmap: Start and End (exclusive).
type Message struct {
	Event    Event
	Flags    FaultFlags
	Address  uintptr
	ThreadID int
	Child    *UFFD
	From     uintptr
	To       uintptr
	Len      uintptr
	Start    uintptr
	End      uintptr

	childFD int // raw descriptor of a fork event, before ReadMessages wraps it
}

func (m Message) String() string {
	switch m.Event {
	case EventPagefault:
		return fmt.Sprintf("Pagefault{addr=%#x flags=%v tid=%d}", m.Address, m.Flags, m.ThreadID)
	case EventFork:
		return fmt.Sprintf("Fork{child=%v}", m.Child)
	case EventRemap:
		return fmt.Sprintf("Remap{from=%#x to=%#x len=%#x}", m.From, m.To, m.Len)
	case EventRemove, EventUnmap:
		return fmt.Sprintf("%v{%#x-%#x}", m.Event, m.Start, m.End)
	}
	return m.Event.String()
}

// MessageError reports a message that could not be decoded.
type MessageError struct {
	Raw    [MessageSize]byte // the bytes, zero-padded when short
	Reason string
}

func (e *MessageError) Error() string { return "uffd: bad message: " + e.Reason }

// decodeMessage decodes one struct uffd_msg. It never panics; a short buffer
// or an unknown event is an error.
func decodeMessage(b []byte, m *Message) error {
	if len(b) < MessageSize {
		e := &MessageError{Reason: fmt.Sprintf("%d bytes, want %d", len(b), MessageSize)}
		copy(e.Raw[:], b)
		return e
	}
	b = b[:MessageSize]
	ne := binary.NativeEndian
	*m = Message{Event: Event(b[abi.MsgOffEvent]), childFD: -1}
	switch m.Event {
	case EventPagefault:
		m.Flags = FaultFlags(ne.Uint64(b[abi.MsgOffPFFlags:]))
		m.Address = uintptr(ne.Uint64(b[abi.MsgOffPFAddress:]))
		m.ThreadID = int(ne.Uint32(b[abi.MsgOffPFPtid:]))
	case EventFork:
		fd := ne.Uint32(b[abi.MsgOffForkUfd:])
		if fd > 1<<31-1 {
			e := &MessageError{Reason: fmt.Sprintf("fork event with descriptor %d", fd)}
			copy(e.Raw[:], b)
			return e
		}
		m.childFD = int(fd)
	case EventRemap:
		m.From = uintptr(ne.Uint64(b[abi.MsgOffRemapFrom:]))
		m.To = uintptr(ne.Uint64(b[abi.MsgOffRemapTo:]))
		m.Len = uintptr(ne.Uint64(b[abi.MsgOffRemapLen:]))
	case EventRemove, EventUnmap:
		m.Start = uintptr(ne.Uint64(b[abi.MsgOffRemoveStart:]))
		m.End = uintptr(ne.Uint64(b[abi.MsgOffRemoveEnd:]))
	default:
		e := &MessageError{Reason: "unknown event " + m.Event.String()}
		copy(e.Raw[:], b)
		return e
	}
	return nil
}
