package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// EnrollmentTokens is the view of the node enrollment tokens issued (never a token or its hash).
const EnrollmentTokens = "enrollment_tokens"

type enrollmentTokensProjection struct{}

func (enrollmentTokensProjection) Name() string     { return EnrollmentTokens }
func (enrollmentTokensProjection) Tables() []string { return []string{"rm_enrollment_tokens"} }
func (enrollmentTokensProjection) Handles(t string) bool {
	return t == domain.TypeEnrollmentTokenIssued || t == domain.TypeEnrollmentTokenUsed || t == domain.TypeEnrollmentTokenRevoked
}
func (enrollmentTokensProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	switch ev := e.(type) {
	case *domain.EnrollmentTokenIssued:
		queue(b, rec, `INSERT INTO rm_enrollment_tokens (generation, token_id, issued_by, issued_at, expires_at, max_uses, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, gen, ev.TokenID, ev.IssuedBy, rec.RecordedAt, ev.ExpiresAt, ev.MaxUses, int64(rec.Position))
	case *domain.EnrollmentTokenUsed:
		queue(b, rec, `UPDATE rm_enrollment_tokens SET nodes = array_append(nodes, $3), position = $4 WHERE generation = $1 AND token_id = $2`,
			gen, ev.TokenID, ev.NodeID, int64(rec.Position))
	case *domain.EnrollmentTokenRevoked:
		queue(b, rec, `UPDATE rm_enrollment_tokens SET revoked_at = $3, revoke_reason = $4, position = $5 WHERE generation = $1 AND token_id = $2`,
			gen, ev.TokenID, rec.RecordedAt, nullable(ev.Reason), int64(rec.Position))
	}
	return nil
}
