package nodebus

import (
	"errors"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Sentinel errors of the node side of the bus. Match them with errors.Is.
var (
	// ErrInvalidConfig: a component's configuration is incomplete or out of range. Validate
	// joins every problem.
	ErrInvalidConfig = errors.New("invalid bus configuration")
	// ErrSkipEvent: a SubscribeEvents handler returns it for an event it did not take (it did not
	// verify); the subscription goes on without moving past the event's position.
	ErrSkipEvent = errors.New("relayed event skipped")
	// ErrInvalidFact: a fact handed to Publisher.Publish cannot become an event.
	ErrInvalidFact = errors.New("invalid fact")
	// ErrTooLarge: a batch exceeds the largest message NATS accepts; publish fewer facts at once.
	ErrTooLarge = errors.New("batch too large")
	// ErrSpoolFull: NATS is unreachable and the spool reached its size limit; the batch was not
	// accepted.
	ErrSpoolFull = errors.New("event spool full")
	// ErrClosed: the component was stopped (it is lifecycle.ErrStopped: a stopped component
	// does not start again).
	ErrClosed = lifecycle.ErrStopped
	// ErrGap: a consumer of the relayed log saw a position jump; its view cannot be trusted and
	// must be rebuilt.
	ErrGap = errors.New("gap in relayed positions")
)

// checkRetryRange validates a component's retry back-off bounds (zero: the default).
func checkRetryRange(component string, lo, hi time.Duration) error {
	if lo < 0 || hi < 0 || (lo > 0 && hi > 0 && lo > hi) {
		return fmt.Errorf("%w: %s: RetryMin %s / RetryMax %s are not a valid range", ErrInvalidConfig, component, lo, hi)
	}
	return nil
}
