package oidcauth

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Exchanges records the ID tokens exchanged for user tokens (table exchanged_id_tokens, shared by
// the control plane's replicas), so each is exchanged once: an ID token that leaked on its way
// (a log, a proxy, a shared terminal) within its age bound mints nothing more.
type Exchanges struct {
	Pool *pgxpool.Pool
}

// sweepRows bounds the expired rows one claim deletes.
const sweepRows = 100

// Claim records raw's exchange until until (when it is too old to be exchanged anyway), or
// refuses it (ErrRefused) when it was exchanged before. Only a hash of the token is kept.
func (x *Exchanges) Claim(ctx context.Context, raw string, until time.Time) error {
	sum := sha256.Sum256([]byte(raw))
	// A row whose time is up is taken over (an expired token that verifies again could not).
	var fresh bool
	err := x.Pool.QueryRow(ctx, `INSERT INTO exchanged_id_tokens (token_hash, expires_at) VALUES ($1, $2)
		ON CONFLICT (token_hash) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE exchanged_id_tokens.expires_at < now()
		RETURNING true`, sum[:], until).Scan(&fresh)
	if errors.Is(err, pgx.ErrNoRows) {
		return refused("it was exchanged already; log in again for a new one")
	}
	if err != nil {
		return fmt.Errorf("record the ID token's exchange: %w", err)
	}
	// Keep the table to the tokens still young enough to be exchanged.
	if _, err := x.Pool.Exec(ctx, `DELETE FROM exchanged_id_tokens WHERE token_hash IN
		(SELECT token_hash FROM exchanged_id_tokens WHERE expires_at < now() LIMIT $1)`, sweepRows); err != nil {
		return fmt.Errorf("forget expired ID token exchanges: %w", err)
	}
	return nil
}
