package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// AgentToken is an issued agent token's record (view agent_tokens), never the token itself.
type AgentToken struct {
	ID           string     `db:"token_id"`
	OrgID        string     `db:"org_id"`
	TunnelID     string     `db:"tunnel_id"`
	KeyID        string     `db:"key_id"`
	IssuedBy     string     `db:"issued_by"`
	IssuedAt     time.Time  `db:"issued_at"`
	ExpiresAt    time.Time  `db:"expires_at"`
	RevokedAt    *time.Time `db:"revoked_at"`
	RevokeReason *string    `db:"revoke_reason"`
	Position     int64      `db:"position"`
	// State is TokenActive, TokenRevoked or TokenExpired, as of the database's clock.
	State string `db:"state"`
}

// Agent token states.
const (
	TokenActive  = "active"
	TokenRevoked = "revoked"
	TokenExpired = "expired"
)

// AgentTokenFilter selects the agent tokens of one organization, oldest first.
type AgentTokenFilter struct {
	// OrgID is required.
	OrgID string
	// TunnelID, when set, is the tunnel the tokens are for.
	TunnelID string
	// State is TokenActive, TokenRevoked, TokenExpired or "" (any).
	State string
	// After is the key of the last row of the previous page; the page starts after it.
	After *AgentTokenKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

// AgentTokenKey is the sort key of the agent tokens list.
type AgentTokenKey struct {
	IssuedAt time.Time
	ID       string
}

const tokenColumns = `SELECT token_id::text AS token_id, org_id::text AS org_id, tunnel_id::text AS tunnel_id, key_id, issued_by, issued_at,
	expires_at, revoked_at, revoke_reason, position,
	CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END AS state
	FROM agent_tokens`

// ListAgentTokens lists an organization's agent tokens by issue time.
func (q *Queries) ListAgentTokens(ctx context.Context, f AgentTokenFilter) ([]AgentToken, error) {
	const op = "list agent tokens"
	w, err := credentialWhere(op, "token_id", f.OrgID, f.TunnelID, f.State, f.After, f.Limit)
	if err != nil {
		return nil, err
	}
	return selectRows[AgentToken](ctx, q, op, tokenColumns+w.sql()+" ORDER BY issued_at, token_id"+w.limit(f.Limit), w.args...)
}

// credentialWhere checks a list of an organization's agent tokens or access keys (idColumn) and
// builds its conditions: a tunnel, a state (TokenActive, TokenRevoked, TokenExpired or ""), a page
// after the key.
func credentialWhere(op, idColumn, orgID, tunnelID, state string, after *AgentTokenKey, limit int) (where, error) {
	var w where
	if err := checkLimit(op, limit); err != nil {
		return w, err
	}
	if err := checkID(op, "org", orgID); err != nil {
		return w, err
	}
	if tunnelID != "" {
		if err := checkID(op, "tunnel", tunnelID); err != nil {
			return w, err
		}
	}
	if err := checkState(op, state, TokenActive, TokenRevoked, TokenExpired); err != nil {
		return w, err
	}
	if after != nil {
		if err := checkID(op, "cursor", after.ID); err != nil {
			return w, err
		}
	}
	w.add("org_id = ?::uuid", orgID)
	if tunnelID != "" {
		w.add("tunnel_id = ?::uuid", tunnelID)
	}
	switch state {
	case TokenActive:
		w.add("revoked_at IS NULL AND expires_at > now()")
	case TokenRevoked:
		w.add("revoked_at IS NOT NULL")
	case TokenExpired:
		w.add("revoked_at IS NULL AND expires_at <= now()")
	}
	if after != nil {
		w.add("(issued_at, "+idColumn+") > (?, ?::uuid)", after.IssuedAt, after.ID)
	}
	return w, nil
}

// GetAgentToken reads one agent token's record in an organization; a token of another
// organization is domain.ErrNotFound, as is an id that is not one.
func (q *Queries) GetAgentToken(ctx context.Context, orgID, id string) (AgentToken, error) {
	if !domain.ValidID(id) {
		return AgentToken{}, fmt.Errorf("agent token %q: %w", id, domain.ErrNotFound)
	}
	if !domain.ValidID(orgID) {
		return AgentToken{}, fmt.Errorf("get agent token: %w: org %q is not an id", ErrBadFilter, orgID)
	}
	return selectOne[AgentToken](ctx, q, "get agent token", "agent token "+id,
		tokenColumns+" WHERE token_id = $1::uuid AND org_id = $2::uuid", id, orgID)
}
