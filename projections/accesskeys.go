package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// AccessKeys is the view of the tunnel access keys issued (hashes only, never a secret).
const AccessKeys = "access_keys"

type accessKeysProjection struct{}

func (accessKeysProjection) Name() string     { return AccessKeys }
func (accessKeysProjection) Tables() []string { return []string{"rm_access_keys"} }
func (accessKeysProjection) Handles(t string) bool {
	return t == domain.TypeAccessKeyIssued || t == domain.TypeAccessKeyRevoked
}
func (accessKeysProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	switch ev := e.(type) {
	case *domain.AccessKeyIssued:
		cidrs := ev.CIDRs
		if cidrs == nil {
			cidrs = []string{}
		}
		queue(b, rec, `INSERT INTO rm_access_keys (generation, key_id, org_id, tunnel_id, secret_hash, cidrs, rate_tier, issued_by, issued_at,
			expires_at, position, selector) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			gen, ev.KeyID, ev.OrgID, nullable(ev.TunnelID), ev.SecretHash, cidrs, nullable(ev.RateTier), ev.IssuedBy, rec.RecordedAt, ev.ExpiresAt, int64(rec.Position), ev.Selector) // selector NULL for a key of one tunnel
	case *domain.AccessKeyRevoked:
		queue(b, rec, `UPDATE rm_access_keys SET revoked_at = $3, revoke_reason = $4, position = $5 WHERE generation = $1 AND key_id = $2`,
			gen, ev.KeyID, rec.RecordedAt, nullable(ev.Reason), int64(rec.Position))
	}
	return nil
}
