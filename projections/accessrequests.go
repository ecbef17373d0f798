package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// AccessRequests is the view of access requests to tunnels and what was decided on them.
const AccessRequests = "access_requests"

type accessRequestsProjection struct{}

func (accessRequestsProjection) Name() string     { return AccessRequests }
func (accessRequestsProjection) Tables() []string { return []string{"rm_access_requests"} }
func (accessRequestsProjection) Handles(t string) bool {
	return t == domain.TypeAccessRequested || t == domain.TypeAccessApproved || t == domain.TypeAccessRequestDenied || t == domain.TypeGrantCreated
}
func (accessRequestsProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	switch ev := e.(type) {
	case *domain.AccessRequested:
		queue(b, rec, `INSERT INTO rm_access_requests (generation, request_id, org_id, tunnel_id, requester, duration_seconds, reason, state,
			requested_at, position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			gen, ev.RequestID, ev.OrgID, ev.TunnelID, ev.Requester, ev.DurationSeconds, ev.Reason, domain.RequestPending, rec.RecordedAt, int64(rec.Position))
	case *domain.AccessApproved:
		queue(b, rec, `UPDATE rm_access_requests SET approvers = array_append(approvers, $3), position = $4 WHERE generation = $1 AND request_id = $2`,
			gen, ev.RequestID, ev.Approver, int64(rec.Position))
	case *domain.AccessRequestDenied:
		queue(b, rec, `UPDATE rm_access_requests SET state = $3, denied_by = $4, denial = $5, decided_at = $6, position = $7
			WHERE generation = $1 AND request_id = $2`, gen, ev.RequestID, domain.RequestDenied, ev.DeniedBy, ev.Reason, rec.RecordedAt, int64(rec.Position))
	case *domain.GrantCreated:
		if ev.RequestID == "" {
			return nil // a direct grant
		}
		queue(b, rec, `UPDATE rm_access_requests SET state = $3, grant_id = $4, decided_at = $5, position = $6 WHERE generation = $1 AND request_id = $2`,
			gen, ev.RequestID, domain.RequestApproved, ev.GrantID, rec.RecordedAt, int64(rec.Position))
	}
	return nil
}
