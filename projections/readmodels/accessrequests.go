package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// AccessRequest is a request for the use of a tunnel and what was decided on it (view
// access_requests).
type AccessRequest struct {
	ID              string     `db:"request_id"`
	OrgID           string     `db:"org_id"`
	TunnelID        string     `db:"tunnel_id"`
	Requester       string     `db:"requester"`
	DurationSeconds int64      `db:"duration_seconds"`
	Reason          string     `db:"reason"`
	State           string     `db:"state"` // domain.RequestPending, RequestApproved, RequestDenied
	Approvers       []string   `db:"approvers"`
	GrantID         *string    `db:"grant_id"`
	DeniedBy        *string    `db:"denied_by"`
	Denial          *string    `db:"denial"`
	RequestedAt     time.Time  `db:"requested_at"`
	DecidedAt       *time.Time `db:"decided_at"`
	Position        int64      `db:"position"`
}

// AccessRequestKey orders access requests (a page starts after one).
type AccessRequestKey struct {
	RequestedAt time.Time
	ID          string
}

// AccessRequestFilter selects the access requests of one organization, oldest first.
type AccessRequestFilter struct {
	// OrgID is required.
	OrgID string
	// TunnelID and Requester, when set, narrow the list.
	TunnelID, Requester string
	// State is domain.RequestPending, RequestApproved, RequestDenied or "" (any).
	State string
	After *AccessRequestKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

const accessRequestColumns = `SELECT request_id::text AS request_id, org_id::text AS org_id, tunnel_id::text AS tunnel_id, requester,
	duration_seconds, reason, state, approvers, grant_id::text AS grant_id, denied_by, denial, requested_at, decided_at, position
	FROM access_requests`

// ListAccessRequests lists an organization's access requests by the time they were made.
func (q *Queries) ListAccessRequests(ctx context.Context, f AccessRequestFilter) ([]AccessRequest, error) {
	const op = "list access requests"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if err := checkID(op, "org", f.OrgID); err != nil {
		return nil, err
	}
	if err := checkState(op, f.State, domain.RequestPending, domain.RequestApproved, domain.RequestDenied); err != nil {
		return nil, err
	}
	var w where
	w.add("org_id = ?::uuid", f.OrgID)
	if f.TunnelID != "" {
		if err := checkID(op, "tunnel", f.TunnelID); err != nil {
			return nil, err
		}
		w.add("tunnel_id = ?::uuid", f.TunnelID)
	}
	if f.Requester != "" {
		w.add("requester = ?", f.Requester)
	}
	if f.State != "" {
		w.add("state = ?", f.State)
	}
	if f.After != nil {
		if err := checkID(op, "cursor", f.After.ID); err != nil {
			return nil, err
		}
		w.add("(requested_at, request_id) > (?, ?::uuid)", f.After.RequestedAt, f.After.ID)
	}
	return selectRows[AccessRequest](ctx, q, op, accessRequestColumns+w.sql()+" ORDER BY requested_at, request_id"+w.limit(f.Limit), w.args...)
}

// GetAccessRequest reads one access request in an organization; one of another organization is
// domain.ErrNotFound, as is an id that is not one.
func (q *Queries) GetAccessRequest(ctx context.Context, orgID, id string) (AccessRequest, error) {
	if !domain.ValidID(id) {
		return AccessRequest{}, fmt.Errorf("access request %q: %w", id, domain.ErrNotFound)
	}
	if !domain.ValidID(orgID) {
		return AccessRequest{}, fmt.Errorf("get access request: %w: org %q is not an id", ErrBadFilter, orgID)
	}
	return selectOne[AccessRequest](ctx, q, "get access request", "access request "+id,
		accessRequestColumns+" WHERE request_id = $1::uuid AND org_id = $2::uuid", id, orgID)
}
