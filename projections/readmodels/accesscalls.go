package readmodels

import (
	"context"
	"time"
)

// AccessCall is one call through a tunnel that logs calls (view access_calls).
type AccessCall struct {
	Position   int64     `db:"position"`
	Idx        int32     `db:"idx"`
	OrgID      string    `db:"org_id"`
	TunnelID   string    `db:"tunnel_id"`
	NodeID     string    `db:"node_id"`
	At         time.Time `db:"at"`
	CallerKind string    `db:"caller_kind"`
	CallerID   string    `db:"caller_id"`
	Method     string    `db:"method"`
	Route      string    `db:"route"`
	Status     int32     `db:"status"`
	BytesIn    int64     `db:"bytes_in"`
	BytesOut   int64     `db:"bytes_out"`
	DurationUS int64     `db:"duration_us"`
}

// AccessCallKey orders access calls (a page starts after one).
type AccessCallKey struct {
	At       time.Time
	Position int64
	Idx      int32
}

// AccessCallFilter selects one tunnel's calls, oldest first.
type AccessCallFilter struct {
	// OrgID and TunnelID are required.
	OrgID, TunnelID string
	// From (inclusive) and To (exclusive), when set, bound the calls' times.
	From, To *time.Time
	// Caller, when set, is a user id or an access key id.
	Caller string
	// Status, when not 0, is the response status.
	Status int
	After  *AccessCallKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

const accessCallColumns = `SELECT position, idx, org_id::text AS org_id, tunnel_id::text AS tunnel_id, node_id, at, caller_kind, caller_id,
	method, route, status, bytes_in, bytes_out, duration_us FROM access_calls`

// ListAccessCalls pages through a tunnel's call records by time.
func (q *Queries) ListAccessCalls(ctx context.Context, f AccessCallFilter) ([]AccessCall, error) {
	const op = "list access calls"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if err := checkID(op, "org", f.OrgID); err != nil {
		return nil, err
	}
	if err := checkID(op, "tunnel", f.TunnelID); err != nil {
		return nil, err
	}
	var w where
	w.add("tunnel_id = ?::uuid", f.TunnelID)
	w.add("org_id = ?::uuid", f.OrgID)
	if f.From != nil {
		w.add("at >= ?", *f.From)
	}
	if f.To != nil {
		w.add("at < ?", *f.To)
	}
	if f.Caller != "" {
		w.add("caller_id = ?", f.Caller)
	}
	if f.Status != 0 {
		w.add("status = ?", f.Status)
	}
	if f.After != nil {
		w.add("(at, position, idx) > (?, ?, ?)", f.After.At, f.After.Position, f.After.Idx)
	}
	return selectRows[AccessCall](ctx, q, op, accessCallColumns+w.sql()+" ORDER BY at, position, idx"+w.limit(f.Limit), w.args...)
}
