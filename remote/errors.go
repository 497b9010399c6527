package remote

import (
	"errors"
	"fmt"
)

// Kind classifies a failure of a source.
type Kind int

const (
	// KindTransient is a failure that retrying may cure: a 5xx status, a
	// 429 or S3's SlowDown, a reset or refused connection, a timeout, a
	// body that stopped arriving.
	KindTransient Kind = iota
	// KindNotFound: the bucket or the object does not exist (404).
	KindNotFound
	// KindDenied: the credentials are refused or lack permission (401, 403).
	KindDenied
	// KindWrongRegion: the bucket is in another region than the client's.
	KindWrongRegion
	// KindChanged: the object is not the version opened any more (412, a
	// different ETag, size or modification time).
	KindChanged
	// KindCorrupt: bytes disagree with the image's index checksums.
	KindCorrupt
	// KindUnsupported: the server does not serve byte ranges, or the URL
	// names nothing this package can read.
	KindUnsupported
	// KindOther is any other permanent failure (a 4xx status, a bad URL).
	KindOther
)

var kindNames = [...]string{"transient", "not_found", "denied", "wrong_region", "changed", "corrupt", "unsupported", "other"}

// String returns the kind's name as used in metrics labels.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Sentinels matched by errors.Is on an *Error of the kind.
var (
	ErrNotFound    = errors.New("remote: not found")
	ErrDenied      = errors.New("remote: access denied")
	ErrWrongRegion = errors.New("remote: wrong region")
	ErrChanged     = errors.New("remote: object changed since it was opened")
	ErrCorrupt     = errors.New("remote: checksum mismatch")
	ErrUnsupported = errors.New("remote: not supported")
	// ErrClosed is returned for requests pending when an Image is closed.
	ErrClosed = errors.New("remote: image closed")
)

var kindSentinels = map[Kind]error{
	KindNotFound: ErrNotFound, KindDenied: ErrDenied, KindWrongRegion: ErrWrongRegion,
	KindChanged: ErrChanged, KindCorrupt: ErrCorrupt, KindUnsupported: ErrUnsupported,
}

// Error is a failure of an operation on a source.
type Error struct {
	Op     string // "open", "read", "push", ...
	URL    string
	Kind   Kind
	Status int // HTTP status, 0 when none was received
	Err    error
}

func (e *Error) Error() string {
	s := "remote: " + e.Op + " " + e.URL
	if e.Status != 0 {
		s += fmt.Sprintf(": HTTP %d", e.Status)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of the error's kind.
func (e *Error) Is(target error) bool {
	s, ok := kindSentinels[e.Kind]
	return ok && s == target
}

// Temporary reports whether the failure is transient.
func (e *Error) Temporary() bool { return e.Kind == KindTransient }

// KindOf returns the Kind of err: that of the *Error it wraps, or
// KindOther.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindOther
}
