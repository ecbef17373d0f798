package readmodels

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ComplianceScope is the window a compliance report reads: events recorded in [From, To), of
// one organization (OrgID) or of the whole log (OrgID "").
type ComplianceScope struct {
	OrgID    string
	From, To time.Time
}

// ComplianceSnapshot reads the compliance views in one read-only repeatable-read transaction,
// so every figure of a report comes from the same state of the read model: the log up to
// Position.
type ComplianceSnapshot struct {
	tx    pgx.Tx
	scope ComplianceScope
	// Position is the last log position the read model had applied (-1: none yet).
	Position int64
	counts   map[string]TypeCount
	sessions []SessionAlgorithms
}

// ReadCompliance runs fn on a snapshot of the compliance views.
func (q *Queries) ReadCompliance(ctx context.Context, scope ComplianceScope, fn func(ctx context.Context, s *ComplianceSnapshot) error) error {
	const op = "read compliance"
	if !scope.From.Before(scope.To) {
		return fmt.Errorf("%s: %w: the window's start is not before its end", op, ErrBadFilter)
	}
	tx, err := q.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return dbErr(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	s := &ComplianceSnapshot{tx: tx, scope: scope, Position: -1}
	err = tx.QueryRow(ctx, `SELECT position FROM projection_state WHERE name = 'compliance'`).Scan(&s.Position)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return dbErr(op, err)
	}
	return fn(ctx, s)
}

// where is the window and scope condition on a view with recorded_at and org_id, from $1.
func (s *ComplianceSnapshot) where(timeCol string) (string, []any) {
	cond := timeCol + ` >= $1 AND ` + timeCol + ` < $2`
	args := []any{s.scope.From, s.scope.To}
	if s.scope.OrgID != "" {
		cond += ` AND org_id = $3`
		args = append(args, s.scope.OrgID)
	}
	return cond, args
}

func collect[T any](ctx context.Context, tx pgx.Tx, op, sql string, args ...any) ([]T, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[T])
	if err != nil {
		return nil, dbErr(op, err)
	}
	return out, nil
}

// TypeCount is how many events of a type the window holds, and how many requests they stand for
// (an aggregated denial or failed login counts its requests).
type TypeCount struct {
	Type   string `db:"type"`
	Events int64  `db:"events"`
	Weight int64  `db:"weight"`
}

// hourly is a WITH clause naming h: the window's events grouped by UTC hour, type and the hourly
// rollup's keys (projections.ComplianceHourKey), with events, weight and first and last
// positions. Whole hours come from the rollup; the window's partial first and last hours from the
// indexed events, grouped alike, so every figure is exact for the window as given.
func (s *ComplianceSnapshot) hourly() (string, []any) {
	from, to := s.scope.From, s.scope.To
	ceilFrom := from.Truncate(time.Hour)
	if ceilFrom.Before(from) {
		ceilFrom = ceilFrom.Add(time.Hour)
	}
	floorTo := to.Truncate(time.Hour)
	rollFrom, rollTo, edge1To, edge2From := ceilFrom, floorTo, ceilFrom, floorTo
	if !ceilFrom.Before(floorTo) { // no whole hour: the raw rows of the whole window
		rollFrom, rollTo, edge1To, edge2From = from, from, to, to
	}
	args := []any{rollFrom, rollTo, from, edge1To, edge2From, to}
	org := ""
	if s.scope.OrgID != "" {
		args = append(args, s.scope.OrgID)
		org = ` AND org_id = $7`
	}
	return `WITH h AS (SELECT hour, type, subject, detail, events, weight, first_position, last_position FROM compliance_hourly
		WHERE hour >= $1 AND hour < $2` + org + `
		UNION ALL SELECT date_trunc('hour', recorded_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', type,
		CASE type WHEN 'audit.auth_failed' THEN subject WHEN 'agent.connected' THEN coalesce(attrs->>'node_id', '') ELSE '' END,
		CASE type WHEN 'audit.auth_failed' THEN coalesce(detail, '')
			WHEN 'agent.connected' THEN coalesce(attrs->>'protocol', '') || '|' || coalesce(attrs->>'cipher', '') || '|' || coalesce(attrs->>'kex', '')
			ELSE '' END,
		1, weight, position, position
		FROM compliance_events WHERE ((recorded_at >= $3 AND recorded_at < $4) OR (recorded_at >= $5 AND recorded_at < $6))` + org + `) `, args
}

// Counts counts the window's events by type (read once per snapshot).
func (s *ComplianceSnapshot) Counts(ctx context.Context) (map[string]TypeCount, error) {
	if s.counts != nil {
		return s.counts, nil
	}
	with, args := s.hourly()
	rows, err := collect[TypeCount](ctx, s.tx, "compliance counts",
		with+`SELECT type, sum(events)::bigint AS events, sum(weight)::bigint AS weight FROM h GROUP BY type`, args...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]TypeCount, len(rows))
	for _, r := range rows {
		out[r.Type] = r
	}
	s.counts = out
	return out, nil
}

// ComplianceEvent is one indexed event.
type ComplianceEvent struct {
	Position   int64     `db:"position"`
	RecordedAt time.Time `db:"recorded_at"`
	Type       string    `db:"type"`
	OrgID      *string   `db:"org_id"`
	Actor      *string   `db:"actor"`
	Subject    string    `db:"subject"`
	Detail     *string   `db:"detail"`
	Weight     int64     `db:"weight"`
}

// Events lists the window's events of the given types, newest first, at most limit: the newest
// of each type by its index, then merged.
func (s *ComplianceSnapshot) Events(ctx context.Context, types []string, limit int) ([]ComplianceEvent, error) {
	if err := checkLimit("compliance events", limit); err != nil {
		return nil, err
	}
	cond, args := s.where("recorded_at")
	args = append(args, types, limit)
	n := len(args)
	return collect[ComplianceEvent](ctx, s.tx, "compliance events",
		fmt.Sprintf(`SELECT e.position, e.recorded_at, e.type, e.org_id, e.actor, e.subject, e.detail, e.weight
		FROM unnest($%d::text[]) AS t(name) CROSS JOIN LATERAL (SELECT position, recorded_at, type, org_id, actor, subject, detail, weight
			FROM compliance_events WHERE type = t.name AND %s ORDER BY recorded_at DESC, position DESC LIMIT $%d) e
		ORDER BY e.recorded_at DESC, e.position DESC LIMIT $%d`, n-1, cond, n, n), args...)
}

// DailyCount is the requests events of a type stand for on one UTC day.
type DailyCount struct {
	Day    time.Time `db:"day"`
	Type   string    `db:"type"`
	Weight int64     `db:"weight"`
}

// Daily sums the window's events of the given types per UTC day.
func (s *ComplianceSnapshot) Daily(ctx context.Context, types []string) ([]DailyCount, error) {
	with, args := s.hourly()
	args = append(args, types)
	return collect[DailyCount](ctx, s.tx, "compliance daily",
		fmt.Sprintf(with+`SELECT date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day, type, sum(weight)::bigint AS weight
		FROM h WHERE type = ANY($%d) GROUP BY 1, 2 ORDER BY 1, 2`, len(args)), args...)
}

// ComplianceException is an exception the projection found in log order.
type ComplianceException struct {
	Position      int64      `db:"position"`
	RecordedAt    time.Time  `db:"recorded_at"`
	OrgID         *string    `db:"org_id"`
	Subject       string     `db:"subject"`
	Detail        string     `db:"detail"`
	Weight        int64      `db:"weight"`
	Since         *time.Time `db:"since"`
	SincePosition *int64     `db:"since_position"`
}

// Exceptions lists the window's exceptions of a rule, newest first, at most limit, with their
// total.
func (s *ComplianceSnapshot) Exceptions(ctx context.Context, rule string, limit int) ([]ComplianceException, int64, error) {
	if err := checkLimit("compliance exceptions", limit); err != nil {
		return nil, 0, err
	}
	cond, args := s.where("recorded_at")
	args = append(args, rule)
	var total int64
	if err := s.tx.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM compliance_exceptions WHERE %s AND rule = $%d`, cond, len(args)), args...).Scan(&total); err != nil {
		return nil, 0, dbErr("compliance exceptions", err)
	}
	args = append(args, limit)
	rows, err := collect[ComplianceException](ctx, s.tx, "compliance exceptions",
		fmt.Sprintf(`SELECT position, recorded_at, org_id, subject, detail, weight, since, since_position FROM compliance_exceptions
		WHERE %s AND rule = $%d ORDER BY recorded_at DESC, position DESC LIMIT $%d`, cond, len(args)-1, len(args)), args...)
	return rows, total, err
}

// AuthBurst is one subject's failed authentications within one window of the rule's length.
type AuthBurst struct {
	Subject     string    `db:"subject"`
	WindowStart time.Time `db:"window_start"`
	Failures    int64     `db:"failures"`
	Reasons     string    `db:"reasons"`
	Last        int64     `db:"last_position"`
}

// AuthFailureBursts finds subjects with at least threshold failed authentications within one
// window of the given length (whole hours, aligned to the epoch), most failures first.
func (s *ComplianceSnapshot) AuthFailureBursts(ctx context.Context, threshold int64, window time.Duration, limit int) ([]AuthBurst, error) {
	if err := checkLimit("compliance auth failures", limit); err != nil {
		return nil, err
	}
	if window < time.Hour || window%time.Hour != 0 {
		return nil, fmt.Errorf("compliance auth failures: %w: window %s is not whole hours", ErrBadFilter, window)
	}
	with, args := s.hourly()
	args = append(args, window.Seconds(), threshold, limit)
	n := len(args)
	return collect[AuthBurst](ctx, s.tx, "compliance auth failures",
		fmt.Sprintf(with+`SELECT subject, to_timestamp(floor(extract(epoch FROM hour) / $%[1]d) * $%[1]d) AS window_start,
		sum(weight)::bigint AS failures, string_agg(DISTINCT detail, ', ') AS reasons, max(last_position) AS last_position
		FROM h WHERE type = 'audit.auth_failed'
		GROUP BY 1, 2 HAVING sum(weight) >= $%[2]d ORDER BY failures DESC, window_start DESC LIMIT $%[3]d`, n-2, n-1, n), args...)
}

// Credential is an agent token, access key or signing key with its lifetime.
type Credential struct {
	Kind      string     `db:"kind"`
	ID        string     `db:"credential_id"`
	OrgID     *string    `db:"org_id"`
	TunnelID  *string    `db:"tunnel_id"`
	IssuedBy  *string    `db:"issued_by"`
	IssuedAt  time.Time  `db:"issued_at"`
	ExpiresAt *time.Time `db:"expires_at"`
	RevokedAt *time.Time `db:"revoked_at"`
	Position  int64      `db:"position"`
}

const credentialColumns = `SELECT kind, credential_id, org_id, tunnel_id, issued_by, issued_at, expires_at, revoked_at, position FROM compliance_credentials`

// LongLivedCredentials lists credentials of a kind issued in the window whose lifetime (expiry
// minus issue) exceeds max, longest first.
func (s *ComplianceSnapshot) LongLivedCredentials(ctx context.Context, kind string, max time.Duration, limit int) ([]Credential, error) {
	if err := checkLimit("compliance credentials", limit); err != nil {
		return nil, err
	}
	cond, args := s.where("issued_at")
	args = append(args, kind, max.Seconds(), limit)
	n := len(args)
	return collect[Credential](ctx, s.tx, "compliance credentials", fmt.Sprintf(credentialColumns+` WHERE %s AND kind = $%d
		AND expires_at - issued_at > make_interval(secs => $%d) ORDER BY expires_at - issued_at DESC, position LIMIT $%d`, cond, n-2, n-1, n), args...)
}

// OverAgeCredentials lists credentials of a kind still valid at the window's end (not revoked
// or expired by then) that were older than maxAge then, oldest first.
func (s *ComplianceSnapshot) OverAgeCredentials(ctx context.Context, kind string, maxAge time.Duration, limit int) ([]Credential, error) {
	if err := checkLimit("compliance credentials", limit); err != nil {
		return nil, err
	}
	args := []any{s.scope.To, kind, maxAge.Seconds(), limit}
	org := ""
	if s.scope.OrgID != "" {
		args = append(args, s.scope.OrgID)
		org = ` AND org_id = $5`
	}
	return collect[Credential](ctx, s.tx, "compliance credentials", credentialColumns+` WHERE kind = $2 AND issued_at < $1
		AND (revoked_at IS NULL OR revoked_at > $1) AND (expires_at IS NULL OR expires_at > $1)
		AND $1 - issued_at > make_interval(secs => $3)`+org+` ORDER BY issued_at, position LIMIT $4`, args...)
}

// SessionAlgorithms is how many agent sessions a node reported with one protocol, cipher and key
// exchange in the window, and the (UTC) hour of the last.
type SessionAlgorithms struct {
	NodeID   string    `db:"node_id"`
	Protocol string    `db:"protocol"`
	Cipher   string    `db:"cipher"`
	Kex      string    `db:"kex"`
	Sessions int64     `db:"sessions"`
	Last     time.Time `db:"last"`
}

// Sessions groups the window's agent sessions by node, protocol, cipher and key exchange (read
// once per snapshot).
func (s *ComplianceSnapshot) Sessions(ctx context.Context) ([]SessionAlgorithms, error) {
	if s.sessions != nil {
		return s.sessions, nil
	}
	with, args := s.hourly()
	rows, err := collect[SessionAlgorithms](ctx, s.tx, "compliance sessions",
		with+`SELECT subject AS node_id, split_part(detail, '|', 1) AS protocol, split_part(detail, '|', 2) AS cipher, split_part(detail, '|', 3) AS kex,
		sum(events)::bigint AS sessions, max(hour) AS last FROM h WHERE type = 'agent.connected' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`, args...)
	if err != nil {
		return nil, err
	}
	if rows == nil {
		rows = []SessionAlgorithms{} // cached: none
	}
	s.sessions = rows
	return rows, nil
}

// To is the end of the snapshot's window.
func (s *ComplianceSnapshot) To() time.Time { return s.scope.To }

// Span is how many of the window's events the read model holds, and their first and last
// positions (0 when none).
func (s *ComplianceSnapshot) Span(ctx context.Context) (events, first, last int64, err error) {
	with, args := s.hourly()
	err = s.tx.QueryRow(ctx, with+`SELECT coalesce(sum(events), 0)::bigint, coalesce(min(first_position), 0), coalesce(max(last_position), 0) FROM h`, args...).
		Scan(&events, &first, &last)
	if err != nil {
		err = dbErr("compliance span", err)
	}
	return events, first, last, err
}
