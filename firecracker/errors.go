package firecracker

import (
	"errors"
	"fmt"
)

// ErrHandshake is matched (errors.Is) by every error that rejects a
// handshake message: bad JSON, missing or wrong descriptors, bad regions.
var ErrHandshake = errors.New("bad handshake")

// HandshakeError says why a connection's handshake was rejected. Reason is
// a short machine-friendly word (a handler labels its rejection metric
// with it); Err the detail.
type HandshakeError struct {
	Reason string
	Err    error
}

func (e *HandshakeError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *HandshakeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrHandshake) true.
func (e *HandshakeError) Is(target error) bool { return target == ErrHandshake }

func reject(reason, format string, args ...any) error {
	return &HandshakeError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Rejection reasons of the protocol, as HandshakeError.Reason carries
// them. A handler adds its own (package handler: overloaded, peer, ...).
const (
	ReasonJSON      = "json"      // not a JSON array of mappings
	ReasonTruncated = "truncated" // the peer closed the connection mid-message
	ReasonTooLarge  = "too_large" // the message exceeds the size limit
	ReasonTimeout   = "timeout"   // the message did not arrive in time
	ReasonFD        = "fd"        // no descriptor, several, or not a userfaultfd
	ReasonRegion    = "region"    // a region is empty, misaligned, overlapping or outside the file
	ReasonPageSize  = "page_size" // an unknown page size
	ReasonMapping   = "mapping"   // the regions do not match the peer's memory map
	ReasonTrailing  = "trailing"  // bytes after the JSON array
)

// Reasons lists the protocol's rejection reasons.
var Reasons = []string{ReasonJSON, ReasonTruncated, ReasonTooLarge, ReasonTimeout, ReasonFD, ReasonRegion, ReasonPageSize, ReasonMapping, ReasonTrailing}
