package uffd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gouffd/uffd/internal/abi"
)

// knownEvents are the events decodeMessage accepts.
var knownEvents = []Event{EventPagefault, EventFork, EventRemap, EventRemove, EventUnmap}

func isKnownEvent(e Event) bool {
	for _, k := range knownEvents {
		if e == k {
			return true
		}
	}
	return false
}

// encodeMessage lays out a struct uffd_msg of the given event with its
// argument words a, b, c at the offsets of internal/abi. Pagefault: flags,
// address, ptid (the low 32 bits of c); fork: ufd (the low 32 bits of a);
// remap: from, to, len; remove and unmap: start, end.
func encodeMessage(e Event, a, b, c uint64) []byte {
	buf := make([]byte, MessageSize)
	ne := binary.NativeEndian
	buf[abi.MsgOffEvent] = byte(e)
	switch e {
	case EventPagefault:
		ne.PutUint64(buf[abi.MsgOffPFFlags:], a)
		ne.PutUint64(buf[abi.MsgOffPFAddress:], b)
		ne.PutUint32(buf[abi.MsgOffPFPtid:], uint32(c))
	case EventFork:
		ne.PutUint32(buf[abi.MsgOffForkUfd:], uint32(a))
	case EventRemap:
		ne.PutUint64(buf[abi.MsgOffRemapFrom:], a)
		ne.PutUint64(buf[abi.MsgOffRemapTo:], b)
		ne.PutUint64(buf[abi.MsgOffRemapLen:], c)
	case EventRemove, EventUnmap:
		ne.PutUint64(buf[abi.MsgOffRemoveStart:], a)
		ne.PutUint64(buf[abi.MsgOffRemoveEnd:], b)
	}
	return buf
}

// expectedMessage is the Message that encodeMessage(e, a, b, c) must decode
// to (for a fork, the descriptor is in childFD; Child stays nil until
// ReadMessages wraps it).
func expectedMessage(e Event, a, b, c uint64) Message {
	m := Message{Event: e, childFD: -1}
	switch e {
	case EventPagefault:
		m.Flags, m.Address, m.ThreadID = FaultFlags(a), uintptr(b), int(uint32(c))
	case EventFork:
		m.childFD = int(uint32(a))
	case EventRemap:
		m.From, m.To, m.Len = uintptr(a), uintptr(b), uintptr(c)
	case EventRemove, EventUnmap:
		m.Start, m.End = uintptr(a), uintptr(b)
	}
	return m
}

// checkDecode checks decodeMessage on arbitrary bytes: no panic, a
// *MessageError holding the bytes for short input and unknown events.
func checkDecode(t *testing.T, raw []byte) {
	t.Helper()
	var m Message
	err := decodeMessage(raw, &m)
	var me *MessageError
	switch {
	case len(raw) < MessageSize:
		if !errors.As(err, &me) {
			t.Fatalf("decode of %d bytes: %v, want a *MessageError", len(raw), err)
		}
		if !bytes.Equal(me.Raw[:len(raw)], raw) || !bytes.Equal(me.Raw[len(raw):], make([]byte, MessageSize-len(raw))) {
			t.Fatalf("MessageError.Raw %x, want %x zero-padded", me.Raw, raw)
		}
	case !isKnownEvent(Event(raw[abi.MsgOffEvent])):
		if !errors.As(err, &me) {
			t.Fatalf("decode of unknown event %#x: %v, want a *MessageError", raw[0], err)
		}
		if !bytes.Equal(me.Raw[:], raw[:MessageSize]) {
			t.Fatalf("MessageError.Raw %x, want %x", me.Raw, raw[:MessageSize])
		}
	case Event(raw[abi.MsgOffEvent]) == EventFork && binary.NativeEndian.Uint32(raw[abi.MsgOffForkUfd:]) > 1<<31-1:
		if !errors.As(err, &me) {
			t.Fatalf("fork event with descriptor %#x: %v, want a *MessageError", binary.NativeEndian.Uint32(raw[abi.MsgOffForkUfd:]), err)
		}
	default:
		if err != nil {
			t.Fatalf("decode of a known event %x: %v", raw[:MessageSize], err)
		}
		if m.Event != Event(raw[abi.MsgOffEvent]) {
			t.Fatalf("event %v, want %v", m.Event, Event(raw[abi.MsgOffEvent]))
		}
	}
	if err != nil && err.Error() == "" {
		t.Fatal("empty error message")
	}
}

// checkRoundTrip encodes a message of a known event and decodes it.
func checkRoundTrip(t *testing.T, e Event, a, b, c uint64) {
	t.Helper()
	raw := encodeMessage(e, a, b, c)
	var m Message
	err := decodeMessage(raw, &m)
	if e == EventFork && uint32(a) > 1<<31-1 {
		var me *MessageError
		if !errors.As(err, &me) {
			t.Fatalf("fork event with descriptor %#x: %v, want a *MessageError", uint32(a), err)
		}
		return
	}
	if err != nil {
		t.Fatalf("decode %v: %v", e, err)
	}
	if want := expectedMessage(e, a, b, c); m != want {
		t.Fatalf("round trip of %v (%#x, %#x, %#x):\n got %+v\nwant %+v", e, a, b, c, m, want)
	}
	// Trailing bytes beyond one message are ignored.
	var m2 Message
	if err := decodeMessage(append(raw, 0xff, 0xee), &m2); err != nil || m2 != m {
		t.Fatalf("decode with trailing bytes: %+v, %v; want %+v", m2, err, m)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	// One valid message of each event, then short and unknown ones.
	f.Add(encodeMessage(EventPagefault, uint64(FaultWrite|FaultWriteProtect), 0x7f0000001000, 4242), uint8(0), uint64(0), uint64(0), uint64(0))
	f.Add(encodeMessage(EventFork, 7, 0, 0), uint8(1), uint64(7), uint64(0), uint64(0))
	f.Add(encodeMessage(EventRemap, 0x10000, 0x20000, 0x3000), uint8(2), uint64(0x10000), uint64(0x20000), uint64(0x3000))
	f.Add(encodeMessage(EventRemove, 0x10000, 0x12000, 0), uint8(3), uint64(0x10000), uint64(0x12000), uint64(0))
	f.Add(encodeMessage(EventUnmap, 0x10000, 0x12000, 0), uint8(4), uint64(1<<63), uint64(^uint64(0)), uint64(1))
	f.Add([]byte{}, uint8(0), uint64(0), uint64(0), uint64(0))
	f.Add([]byte{abi.EventPagefault}, uint8(1), uint64(1<<31), uint64(0), uint64(0))
	f.Add(encodeMessage(EventPagefault, 0, 0x1000, 1)[:MessageSize-1], uint8(0), uint64(0), uint64(0), uint64(0))
	f.Add(encodeMessage(0, 0, 0, 0), uint8(0), uint64(0), uint64(0), uint64(0))
	f.Add(encodeMessage(0x11, 1, 2, 3), uint8(0), uint64(0), uint64(0), uint64(0))
	f.Add(encodeMessage(0x17, 1, 2, 3), uint8(0), uint64(0), uint64(0), uint64(0))
	f.Add(encodeMessage(0xff, 1, 2, 3), uint8(0), uint64(0), uint64(0), uint64(0))
	f.Add(encodeMessage(EventFork, 1<<32-1, 0, 0), uint8(1), uint64(1<<32-1), uint64(0), uint64(0))

	f.Fuzz(func(t *testing.T, raw []byte, which uint8, a, b, c uint64) {
		checkDecode(t, raw)
		checkRoundTrip(t, knownEvents[int(which)%len(knownEvents)], a, b, c)
	})
}

func TestDecodeMessageTable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		raw     []byte
		want    Message
		wantErr bool
	}{
		{
			name: "pagefault",
			raw:  encodeMessage(EventPagefault, uint64(FaultWrite|FaultMinor), 0x7fff12345678, 31337),
			want: Message{Event: EventPagefault, Flags: FaultWrite | FaultMinor, Address: 0x7fff12345678, ThreadID: 31337, childFD: -1},
		},
		{
			name: "pagefault-max-tid",
			raw:  encodeMessage(EventPagefault, 0, 0x1000, 0xffffffff),
			want: Message{Event: EventPagefault, Address: 0x1000, ThreadID: 0xffffffff, childFD: -1},
		},
		{
			name: "fork",
			raw:  encodeMessage(EventFork, 42, 0, 0),
			want: Message{Event: EventFork, childFD: 42},
		},
		{
			name: "remap",
			raw:  encodeMessage(EventRemap, 0x100000, 0x200000, 0x5000),
			want: Message{Event: EventRemap, From: 0x100000, To: 0x200000, Len: 0x5000, childFD: -1},
		},
		{
			name: "remove",
			raw:  encodeMessage(EventRemove, 0x300000, 0x302000, 0),
			want: Message{Event: EventRemove, Start: 0x300000, End: 0x302000, childFD: -1},
		},
		{
			name: "unmap",
			raw:  encodeMessage(EventUnmap, 0x400000, 0x410000, 0),
			want: Message{Event: EventUnmap, Start: 0x400000, End: 0x410000, childFD: -1},
		},
		{name: "empty", raw: nil, wantErr: true},
		{name: "short", raw: encodeMessage(EventPagefault, 0, 0x1000, 1)[:31], wantErr: true},
		{name: "zero-event", raw: make([]byte, MessageSize), wantErr: true},
		{name: "unknown-event", raw: encodeMessage(0x17, 1, 2, 3), wantErr: true},
		{name: "fork-bad-fd", raw: encodeMessage(EventFork, 0x80000000, 0, 0), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Message{Event: 0x77, Address: 1, From: 2} // stale fields must be cleared
			err := decodeMessage(tc.raw, &m)
			if tc.wantErr {
				var me *MessageError
				if !errors.As(err, &me) {
					t.Fatalf("got %v, want a *MessageError", err)
				}
				if me.Reason == "" {
					t.Error("MessageError without a reason")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m != tc.want {
				t.Fatalf("got %+v\nwant %+v", m, tc.want)
			}
			if m.String() == "" {
				t.Error("empty String()")
			}
		})
	}
}
