package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// SIEMSink is a configured SIEM sink (view siem_sinks) and what its forwarder last recorded
// (table siem_cursors, written by whichever control plane instance forwards it). Spec holds
// secrets sealed or referenced only; callers showing it to people blank them anyway.
type SIEMSink struct {
	ID           string              `db:"sink_id"`
	OrgID        string              `db:"org_id"` // "" for a platform sink
	Name         string              `db:"name"`
	Spec         domain.SIEMSinkSpec `db:"spec"`
	Skipped      []int64             `db:"skipped"`
	ConfiguredBy string              `db:"configured_by"`
	ConfiguredAt time.Time           `db:"configured_at"`
	UpdatedAt    time.Time           `db:"updated_at"`
	RemovedAt    *time.Time          `db:"removed_at"`
	Version      int64               `db:"version"`
	Position     int64               `db:"position"`

	// The forwarder's record: the next log position to forward, the last sequence number
	// delivered, and its counts (zero before its first delivery).
	NextPosition  int64      `db:"next_position"`
	Seq           int64      `db:"seq"`
	Delivered     int64      `db:"delivered"`
	Retries       int64      `db:"retries"`
	LastError     string     `db:"last_error"`
	LastErrorAt   *time.Time `db:"last_error_at"`
	Refused       bool       `db:"refused"`
	StuckPosition *int64     `db:"stuck_position"`
	// OldestPendingAt is when the record at NextPosition was recorded (nil: caught up).
	OldestPendingAt *time.Time `db:"oldest_pending_at"`
	ForwardedAt     *time.Time `db:"forwarded_at"`
}

// SIEMSinkFilter selects sinks.
type SIEMSinkFilter struct {
	// OrgID lists one organization's sinks; Platform the platform sinks; neither: every sink.
	OrgID    string
	Platform bool
	// Removed includes removed sinks.
	Removed bool
	// After is the id of the last row of the previous page (the list is in id order).
	After string
	Limit int
}

const siemSinkColumns = `SELECT s.sink_id::text AS sink_id, COALESCE(s.org_id::text, '') AS org_id, s.name, s.spec, s.skipped, s.configured_by,
	s.configured_at, s.updated_at, s.removed_at, s.version, s.position,
	COALESCE(c.position, 0) AS next_position, COALESCE(c.seq, 0) AS seq, COALESCE(c.delivered, 0) AS delivered,
	COALESCE(c.retries, 0) AS retries, COALESCE(c.last_error, '') AS last_error, c.last_error_at, COALESCE(c.refused, false) AS refused,
	c.stuck_position, (SELECT e.recorded_at FROM events e WHERE e.global_position = COALESCE(c.position, 0)) AS oldest_pending_at,
	c.updated_at AS forwarded_at
	FROM siem_sinks s LEFT JOIN siem_cursors c ON c.sink_id = s.sink_id::text`

// ListSIEMSinks lists sinks by id.
func (q *Queries) ListSIEMSinks(ctx context.Context, f SIEMSinkFilter) ([]SIEMSink, error) {
	const op = "list siem sinks"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	var w where
	switch {
	case f.OrgID != "":
		if err := checkID(op, "org", f.OrgID); err != nil {
			return nil, err
		}
		w.add("s.org_id = ?::uuid", f.OrgID)
	case f.Platform:
		w.add("s.org_id IS NULL")
	}
	if !f.Removed {
		w.add("s.removed_at IS NULL")
	}
	if f.After != "" {
		if err := checkID(op, "cursor", f.After); err != nil {
			return nil, err
		}
		w.add("s.sink_id > ?::uuid", f.After)
	}
	return selectRows[SIEMSink](ctx, q, op, siemSinkColumns+w.sql()+" ORDER BY s.sink_id"+w.limit(f.Limit), w.args...)
}

// GetSIEMSink is one sink, removed or not.
func (q *Queries) GetSIEMSink(ctx context.Context, sinkID string) (SIEMSink, error) {
	const op = "get siem sink"
	if !domain.ValidID(sinkID) {
		return SIEMSink{}, fmt.Errorf("siem sink %q: %w", sinkID, domain.ErrNotFound)
	}
	return selectOne[SIEMSink](ctx, q, op, "siem sink "+sinkID, siemSinkColumns+" WHERE s.sink_id = $1::uuid", sinkID)
}
