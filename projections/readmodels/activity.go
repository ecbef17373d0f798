package readmodels

import (
	"context"
	"fmt"

	"github.com/tunnelplane/tunnelplane/domain"
)

// ActivityEvent is an event about one tunnel: its audit index entry and the log's JSON copy of
// its payload.
type ActivityEvent struct {
	AuditEntry
	Payload []byte `db:"payload"`
}

// ActivityFilter selects events of one tunnel by position, oldest first.
type ActivityFilter struct {
	OrgID, TunnelID string // required
	// Types are the event types wanted (required).
	Types []string
	// After and UpTo bound the positions: After < position <= UpTo.
	After, UpTo int64
	// Scan bounds the organization's events of those types looked at (at least Limit).
	Scan int
	// Limit is the most events returned.
	Limit int
}

// TunnelActivity reads the tunnel's events of the given types through the audit index of its
// organization (which has no tunnel column: the payload's tunnel_id decides). It looks at no more
// than Scan events of the organization; scannedTo is the last position looked at (-1: none), so a
// page that found fewer than Limit goes on from there.
func (q *Queries) TunnelActivity(ctx context.Context, f ActivityFilter) (rows []ActivityEvent, scannedTo int64, err error) {
	const op = "tunnel activity"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, -1, err
	}
	if !domain.ValidID(f.OrgID) || !domain.ValidID(f.TunnelID) || len(f.Types) == 0 || f.Scan < f.Limit {
		return nil, -1, fmt.Errorf("%s: %w", op, ErrBadFilter)
	}
	type scanned struct {
		ActivityEvent
		Mine bool `db:"mine"`
	}
	all, err := selectRows[scanned](ctx, q, op, `SELECT a.position, a.recorded_at, a.event_id::text AS event_id, a.type, a.stream_id, a.actor, a.org_id,
		a.correlation_id, a.causation_id, a.request_id, a.client_ip, a.user_agent, (e.payload_json->>'tunnel_id') IS NOT DISTINCT FROM $3 AS mine,
		CASE WHEN e.payload_json->>'tunnel_id' = $3 THEN convert_to(e.payload_json::text, 'UTF8') END AS payload
		FROM audit a JOIN events e ON e.global_position = a.position
		WHERE a.org_id = $1 AND a.type = ANY($2) AND a.position > $4 AND a.position <= $5
		ORDER BY a.position LIMIT $6`, f.OrgID, f.Types, f.TunnelID, f.After, f.UpTo, f.Scan)
	if err != nil {
		return nil, -1, err
	}
	scannedTo = -1
	for _, r := range all {
		scannedTo = r.Position
		if !r.Mine {
			continue
		}
		rows = append(rows, r.ActivityEvent)
		if len(rows) == f.Limit {
			return rows, scannedTo, nil
		}
	}
	return rows, scannedTo, nil
}
