package ledger

import (
	"errors"
	"fmt"
)

// Sentinel errors of the event store. Match them with errors.Is.
var (
	// ErrWrongExpectedVersion: the stream is not at the version the caller expected.
	// The concrete error is a *WrongExpectedVersionError carrying the actual version.
	ErrWrongExpectedVersion = errors.New("wrong expected version")
	// ErrUnknownEventType: the type is not registered.
	ErrUnknownEventType = errors.New("unknown event type")
	// ErrInvalidEvent: the event is malformed (bad JSON, wrong schema version, empty type …).
	ErrInvalidEvent = errors.New("invalid event")
	// ErrTooLarge: a payload or metadata exceeds its documented limit.
	ErrTooLarge = errors.New("event too large")
	// ErrInvalidStreamID: the stream id does not match the allowed form.
	ErrInvalidStreamID = errors.New("invalid stream id")
	// ErrReservedStream: streams starting with '$' belong to the store itself.
	ErrReservedStream = errors.New("reserved stream")
	// ErrDuplicateEventID: an event with this id is already in the log.
	ErrDuplicateEventID = errors.New("duplicate event id")
	// ErrUnavailable: the database could not be reached or failed; nothing was written.
	ErrUnavailable = errors.New("event store unavailable")
	// ErrOutcomeUnknown: the commit was sent but its acknowledgement was lost and the store could
	// not find out whether it happened. The caller must check before retrying.
	ErrOutcomeUnknown = errors.New("append outcome unknown")
	// ErrNotInitialized: the log has no genesis record yet (run `tunnelplane init`).
	ErrNotInitialized = errors.New("event log not initialized")
	// ErrKeyMismatch: the signing key does not belong to this log.
	ErrKeyMismatch = errors.New("signing key does not belong to this log")
	// ErrClosed: the store was stopped.
	ErrClosed = errors.New("event store closed")
	// ErrReadOnly: the store has no signing key, so it cannot append.
	ErrReadOnly = errors.New("event store is read-only (no signing key)")
	// ErrGap: a reader saw positions that are not contiguous; the log is damaged.
	ErrGap = errors.New("gap in global positions")
)

// WrongExpectedVersionError tells what the caller expected and what the stream holds.
type WrongExpectedVersionError struct {
	StreamID string
	Expected ExpectedVersion
	Actual   uint64
}

func (e *WrongExpectedVersionError) Error() string {
	return fmt.Sprintf("%s: stream %q: expected %s, actual version %d",
		ErrWrongExpectedVersion, e.StreamID, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrWrongExpectedVersion) hold.
func (e *WrongExpectedVersionError) Is(target error) bool { return target == ErrWrongExpectedVersion }
