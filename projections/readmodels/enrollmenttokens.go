package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// EnrollmentToken is a node enrollment token's record (view enrollment_tokens): never the token,
// nor its hash.
type EnrollmentToken struct {
	ID        string    `db:"token_id"`
	IssuedBy  string    `db:"issued_by"`
	IssuedAt  time.Time `db:"issued_at"`
	ExpiresAt time.Time `db:"expires_at"`
	MaxUses   int       `db:"max_uses"`
	// Nodes are the nodes it enrolled, in order.
	Nodes        []string   `db:"nodes"`
	RevokedAt    *time.Time `db:"revoked_at"`
	RevokeReason *string    `db:"revoke_reason"`
	Position     int64      `db:"position"`
	// State is TokenActive, TokenRevoked, TokenExpired or TokenUsed, as of the database's clock.
	State string `db:"state"`
}

// TokenUsed: an enrollment token that enrolled as many nodes as it may.
const TokenUsed = "used"

// EnrollmentTokenFilter selects enrollment tokens, oldest first.
type EnrollmentTokenFilter struct {
	// State is TokenActive, TokenRevoked, TokenExpired, TokenUsed or "" (any).
	State string
	// After is the key of the last row of the previous page; the page starts after it.
	After *AgentTokenKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

const enrollmentTokenState = `CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN cardinality(nodes) >= max_uses THEN 'used'
	WHEN expires_at <= now() THEN 'expired' ELSE 'active' END`

const enrollmentTokenColumns = `SELECT * FROM (SELECT token_id::text AS token_id, issued_by, issued_at, expires_at, max_uses, nodes, revoked_at,
	revoke_reason, position, ` + enrollmentTokenState + ` AS state FROM enrollment_tokens) t`

// ListEnrollmentTokens lists enrollment tokens by issue time.
func (q *Queries) ListEnrollmentTokens(ctx context.Context, f EnrollmentTokenFilter) ([]EnrollmentToken, error) {
	const op = "list enrollment tokens"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if err := checkState(op, f.State, TokenActive, TokenRevoked, TokenExpired, TokenUsed); err != nil {
		return nil, err
	}
	var w where
	if f.State != "" {
		w.add("state = ?", f.State)
	}
	if f.After != nil {
		if err := checkID(op, "cursor", f.After.ID); err != nil {
			return nil, err
		}
		w.add("(issued_at, token_id::uuid) > (?, ?::uuid)", f.After.IssuedAt, f.After.ID)
	}
	return selectRows[EnrollmentToken](ctx, q, op, enrollmentTokenColumns+w.sql()+" ORDER BY issued_at, token_id"+w.limit(f.Limit), w.args...)
}

// GetEnrollmentToken reads one enrollment token's record; an id that is not one is
// domain.ErrNotFound.
func (q *Queries) GetEnrollmentToken(ctx context.Context, id string) (EnrollmentToken, error) {
	if !domain.ValidID(id) {
		return EnrollmentToken{}, fmt.Errorf("enrollment token %q: %w", id, domain.ErrNotFound)
	}
	return selectOne[EnrollmentToken](ctx, q, "get enrollment token", "enrollment token "+id, enrollmentTokenColumns+" WHERE token_id::uuid = $1::uuid", id)
}
