package readmodels

import (
	"context"
	"fmt"
	"time"
)

// AuditEntry is one event of the log as the audit index holds it (view audit): who did what,
// where, when.
type AuditEntry struct {
	Position      int64     `db:"position"`
	RecordedAt    time.Time `db:"recorded_at"`
	EventID       string    `db:"event_id"`
	Type          string    `db:"type"`
	StreamID      string    `db:"stream_id"`
	Actor         *string   `db:"actor"`
	OrgID         *string   `db:"org_id"`
	CorrelationID *string   `db:"correlation_id"`
	CausationID   *string   `db:"causation_id"`
	RequestID     *string   `db:"request_id"`
	ClientIP      *string   `db:"client_ip"`
	UserAgent     *string   `db:"user_agent"`
}

// AuditFilter selects entries of the audit index, newest first.
type AuditFilter struct {
	// AllOrgs searches every event (the platform's and every organization's); otherwise only
	// OrgID's (none when OrgID is empty).
	AllOrgs bool
	OrgID   string
	// Actor, Type, StreamID, CorrelationID and RequestID, when set, are exact.
	Actor, Type, StreamID, CorrelationID, RequestID string
	// Since (inclusive) and Until (exclusive) bound the recording time.
	Since, Until *time.Time
	// After is the key of the last row of the previous page; the page holds older entries.
	After *AuditKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

// AuditKey is the sort key of the audit index.
type AuditKey struct {
	Position int64
}

const auditColumns = `SELECT position, recorded_at, event_id::text AS event_id, type, stream_id, actor, org_id, correlation_id, causation_id,
	request_id, client_ip, user_agent FROM audit`

// SearchAudit searches the audit index, newest first.
func (q *Queries) SearchAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	const op = "search audit"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if !f.AllOrgs && f.OrgID == "" {
		return nil, fmt.Errorf("%s: %w: no organization", op, ErrBadFilter)
	}
	var w where
	if !f.AllOrgs {
		w.add("org_id = ?", f.OrgID)
	}
	for _, c := range []struct{ column, value string }{{"actor", f.Actor}, {"type", f.Type}, {"stream_id", f.StreamID},
		{"correlation_id", f.CorrelationID}, {"request_id", f.RequestID}} {
		if c.value != "" {
			w.add(c.column+" = ?", c.value)
		}
	}
	if f.Since != nil {
		w.add("recorded_at >= ?", *f.Since)
	}
	if f.Until != nil {
		w.add("recorded_at < ?", *f.Until)
	}
	if f.After != nil {
		w.add("position < ?", f.After.Position)
	}
	return selectRows[AuditEntry](ctx, q, op, auditColumns+w.sql()+" ORDER BY position DESC"+w.limit(f.Limit), w.args...)
}
