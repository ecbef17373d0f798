package bus

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors of the bus. Match them with errors.Is.
var (
	// ErrInvalidConfig: a component's configuration is incomplete or out of range. Validate
	// joins every problem.
	ErrInvalidConfig = errors.New("invalid bus configuration")
	// ErrMalformed: bytes from the network or from the spool are not a valid message of the
	// documented format.
	ErrMalformed = errors.New("malformed bus message")
	// ErrSkipEvent: a SubscribeEvents handler returns it for an event it did not take (it did not
	// verify); the subscription goes on without moving past the event's position.
	ErrSkipEvent = errors.New("relayed event skipped")
	// ErrForeignEvents: TP_EVENTS holds records of another log (see CheckEventsStream).
	ErrForeignEvents = errors.New("TP_EVENTS holds another log's events")
	// ErrInvalidFact: a fact handed to Publisher.Publish cannot become an event.
	ErrInvalidFact = errors.New("invalid fact")
	// ErrTooLarge: a batch exceeds the largest message NATS accepts; publish fewer facts at once.
	ErrTooLarge = errors.New("batch too large")
	// ErrSpoolFull: NATS is unreachable and the spool reached its size limit; the batch was not
	// accepted.
	ErrSpoolFull = errors.New("event spool full")
	// ErrClosed: the component was stopped.
	ErrClosed = errors.New("bus component closed")
	// ErrGap: a consumer of the relayed log saw a position jump; its view cannot be trusted and
	// must be rebuilt.
	ErrGap = errors.New("gap in relayed positions")
	// ErrInvalidCommand: a command is missing its id or its target.
	ErrInvalidCommand = errors.New("invalid command")
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
