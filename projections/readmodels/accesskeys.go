package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// AccessKey is an issued tunnel access key's record (view access_keys): never the secret, and
// not its hash either (a hash of a leaked secret would confirm it).
type AccessKey struct {
	ID       string `db:"key_id"`
	OrgID    string `db:"org_id"`
	TunnelID string `db:"tunnel_id"` // "" for a key scoped by Selector
	// Selector is the label selector of a key scoped by labels (nil for a key of one tunnel).
	Selector     map[string]string `db:"selector"`
	CIDRs        []string          `db:"cidrs"`
	RateTier     *string           `db:"rate_tier"`
	IssuedBy     string            `db:"issued_by"`
	IssuedAt     time.Time         `db:"issued_at"`
	ExpiresAt    time.Time         `db:"expires_at"`
	RevokedAt    *time.Time        `db:"revoked_at"`
	RevokeReason *string           `db:"revoke_reason"`
	Position     int64             `db:"position"`
	// State is TokenActive, TokenRevoked or TokenExpired, as of the database's clock.
	State string `db:"state"`
}

// AccessKeyFilter selects the access keys of one organization, oldest first.
type AccessKeyFilter struct {
	// OrgID is required.
	OrgID string
	// TunnelID, when set, is the tunnel the keys are for.
	TunnelID string
	// LabelScoped keeps only the keys scoped by a label selector (with no TunnelID).
	LabelScoped bool
	// State is TokenActive, TokenRevoked, TokenExpired or "" (any).
	State string
	// After is the key of the last row of the previous page; the page starts after it.
	After *AgentTokenKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

const accessKeyColumns = `SELECT key_id::text AS key_id, org_id::text AS org_id, coalesce(tunnel_id::text, '') AS tunnel_id, selector, cidrs, rate_tier, issued_by,
	issued_at, expires_at, revoked_at, revoke_reason, position,
	CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END AS state
	FROM access_keys`

// ListAccessKeys lists an organization's access keys by issue time.
func (q *Queries) ListAccessKeys(ctx context.Context, f AccessKeyFilter) ([]AccessKey, error) {
	const op = "list access keys"
	w, err := credentialWhere(op, "key_id", f.OrgID, f.TunnelID, f.State, f.After, f.Limit)
	if err != nil {
		return nil, err
	}
	if f.LabelScoped {
		if f.TunnelID != "" {
			return nil, fmt.Errorf("%s: %w: a tunnel and label-scoped keys", op, ErrBadFilter)
		}
		w.add("tunnel_id IS NULL")
	}
	return selectRows[AccessKey](ctx, q, op, accessKeyColumns+w.sql()+" ORDER BY issued_at, key_id"+w.limit(f.Limit), w.args...)
}

// GetAccessKey reads one access key's record in an organization; a key of another organization
// is domain.ErrNotFound, as is an id that is not one.
func (q *Queries) GetAccessKey(ctx context.Context, orgID, id string) (AccessKey, error) {
	if !domain.ValidID(id) {
		return AccessKey{}, fmt.Errorf("access key %q: %w", id, domain.ErrNotFound)
	}
	if !domain.ValidID(orgID) {
		return AccessKey{}, fmt.Errorf("get access key: %w: org %q is not an id", ErrBadFilter, orgID)
	}
	return selectOne[AccessKey](ctx, q, "get access key", "access key "+id,
		accessKeyColumns+" WHERE key_id = $1::uuid AND org_id = $2::uuid", id, orgID)
}
