package controlbus

import (
	"errors"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Sentinel errors of the control side of the bus. Match them with errors.Is.
var (
	// ErrInvalidConfig: a component's configuration is incomplete or out of range. Validate
	// joins every problem.
	ErrInvalidConfig = errors.New("invalid bus configuration")
	// ErrForeignEvents: the events stream holds records of another log (see CheckEventsStream).
	ErrForeignEvents = errors.New("the events stream holds another log's events")
	// ErrForeignStreams: a stream or the bucket was created for another log (see EnsureStreams).
	ErrForeignStreams = errors.New("NATS streams of another log")
	// ErrServerVersion: the NATS server is older than MinServerVersion or has no JetStream.
	ErrServerVersion = errors.New("unsupported NATS server")
	// ErrClosed: the component was stopped (it is lifecycle.ErrStopped: a stopped component
	// does not start again).
	ErrClosed = lifecycle.ErrStopped
	// ErrServer: the embedded NATS server could not start.
	ErrServer = errors.New("embedded NATS server")
)

// checkRetryRange validates a component's retry back-off bounds (zero: the default).
func checkRetryRange(component string, lo, hi time.Duration) error {
	if lo < 0 || hi < 0 || (lo > 0 && hi > 0 && lo > hi) {
		return fmt.Errorf("%w: %s: RetryMin %s / RetryMax %s are not a valid range", ErrInvalidConfig, component, lo, hi)
	}
	return nil
}
