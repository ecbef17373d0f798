package projections

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// classifyDB marks connection-level failures as eventstore.ErrUnavailable (retry later); errors
// the server raised for a statement are the projection's problem and stay as they are.
func classifyDB(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "53", "57", "58", "40":
			return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
}
