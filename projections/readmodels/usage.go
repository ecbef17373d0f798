package readmodels

import (
	"context"
	"fmt"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Scopes of the usage rollups (view usage_hourly).
const (
	UsageScopeTunnel = "tunnel"
	UsageScopeCaller = "caller"
	UsageScopeOrg    = "org"
)

// UsageKey names one series of a scope: a tunnel, a (tunnel, caller), or the org itself.
type UsageKey struct {
	TunnelID   string `json:"tunnel_id,omitempty"`
	CallerKind string `json:"caller_kind,omitempty"`
	CallerID   string `json:"caller_id,omitempty"`
}

// UsageHour is one hourly rollup row. Latency and TTFB are the stored buckets (nil: none).
type UsageHour struct {
	UsageKey
	Hour         time.Time
	Windows      int64
	Requests     int64
	Errors       int64
	ErrorClasses map[string]int64
	BytesIn      int64
	BytesOut     int64
	StreamsMax   int64
	StreamedMS   int64
	Latency      *domain.Histogram
	TTFB         *domain.Histogram
}

// UsageFilter selects hourly rows of one organization and scope in [From, To).
type UsageFilter struct {
	OrgID string // required
	Scope string // UsageScopeTunnel, UsageScopeCaller or UsageScopeOrg
	// TunnelID narrows scopes tunnel and caller to one tunnel.
	TunnelID string
	From, To time.Time
	// After is the last key of the previous page (scopes tunnel and caller); Limit the most keys
	// a page holds (at least 1). The org scope has one key.
	After *UsageKey
	Limit int
}

// UsageHours reads a page of keys and their hourly rows in the range, ordered by key then hour.
// next is the page's last key when the page is full (more may follow), nil otherwise. Keys whose
// rows all lie outside the range take a place in the page but return no rows.
func (q *Queries) UsageHours(ctx context.Context, f UsageFilter) (rows []UsageHour, next *UsageKey, err error) {
	const op = "usage hours"
	if !domain.ValidID(f.OrgID) || f.Limit < 1 || !f.From.Before(f.To) || (f.TunnelID != "" && !domain.ValidID(f.TunnelID)) {
		return nil, nil, fmt.Errorf("%s: %w", op, ErrBadFilter)
	}
	var keys []UsageKey
	switch f.Scope {
	case UsageScopeOrg:
		keys = []UsageKey{{TunnelID: nilTunnel}}
	case UsageScopeTunnel, UsageScopeCaller:
		after := UsageKey{TunnelID: nilTunnel}
		if f.After != nil {
			after = *f.After
			if !domain.ValidID(after.TunnelID) {
				return nil, nil, fmt.Errorf("%s: %w: cursor", op, ErrBadFilter)
			}
		}
		keys, err = q.usageKeys(ctx, f, after)
		if err != nil {
			return nil, nil, dbErr(op, err)
		}
	default:
		return nil, nil, fmt.Errorf("%s: %w: scope %q", op, ErrBadFilter, f.Scope)
	}
	if len(keys) == 0 {
		return nil, nil, nil
	}
	if f.Scope != UsageScopeOrg && len(keys) == f.Limit {
		last := keys[len(keys)-1]
		next = &last
	}
	tunnels, kinds, callers := make([]string, len(keys)), make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		tunnels[i], kinds[i], callers[i] = k.TunnelID, k.CallerKind, k.CallerID
	}
	// LATERAL: each key's hours are one range of the primary key, whatever the planner guesses
	// of the keys' number.
	pgRows, err := q.db.Query(ctx, `SELECT u.tunnel_id::text, u.caller_kind, u.caller_id, u.hour, u.windows, u.requests, u.errors, u.error_classes,
		u.bytes_in, u.bytes_out, u.streams_max, u.streamed_ms, coalesce(array_lower(u.latency, 1), 0), u.latency, coalesce(array_lower(u.ttfb, 1), 0), u.ttfb
		FROM unnest($3::uuid[], $4::text[], $5::text[]) WITH ORDINALITY AS k(tunnel_id, caller_kind, caller_id, n)
		CROSS JOIN LATERAL (SELECT * FROM usage_hourly h WHERE h.org_id = $1 AND h.scope = $2 AND h.tunnel_id = k.tunnel_id
			AND h.caller_kind = k.caller_kind AND h.caller_id = k.caller_id AND h.hour >= $6 AND h.hour < $7 ORDER BY h.hour) u
		ORDER BY k.n, u.hour`, f.OrgID, f.Scope, tunnels, kinds, callers, f.From, f.To)
	if err != nil {
		return nil, nil, dbErr(op, err)
	}
	defer pgRows.Close()
	for pgRows.Next() {
		var h UsageHour
		var latLo, ttfbLo int
		var lat, ttfb []int64
		if err := pgRows.Scan(&h.TunnelID, &h.CallerKind, &h.CallerID, &h.Hour, &h.Windows, &h.Requests, &h.Errors, &h.ErrorClasses,
			&h.BytesIn, &h.BytesOut, &h.StreamsMax, &h.StreamedMS, &latLo, &lat, &ttfbLo, &ttfb); err != nil {
			return nil, nil, dbErr(op, err)
		}
		h.Hour = h.Hour.UTC()
		if f.Scope == UsageScopeOrg {
			h.TunnelID = ""
		}
		h.Latency, h.TTFB = storedHist(latLo, lat), storedHist(ttfbLo, ttfb)
		rows = append(rows, h)
	}
	if err := pgRows.Err(); err != nil {
		return nil, nil, dbErr(op, err)
	}
	return rows, next, nil
}

// usageKeys walks the distinct keys after 'after' with one index probe each (a loose index
// scan), so a page costs Limit probes however many hours each key holds.
func (q *Queries) usageKeys(ctx context.Context, f UsageFilter, after UsageKey) ([]UsageKey, error) {
	tunnelCond := ""
	args := []any{f.OrgID, f.Scope, after.TunnelID, after.CallerKind, after.CallerID, f.Limit}
	if f.TunnelID != "" {
		tunnelCond = " AND tunnel_id = $7"
		args = append(args, f.TunnelID)
	}
	next := `SELECT tunnel_id, caller_kind, caller_id FROM usage_hourly WHERE org_id = $1 AND scope = $2` + tunnelCond + `
		AND (tunnel_id, caller_kind, caller_id) > (%s) ORDER BY tunnel_id, caller_kind, caller_id LIMIT 1`
	rows, err := q.db.Query(ctx, `WITH RECURSIVE k(tunnel_id, caller_kind, caller_id, n) AS (
		(SELECT *, 1 FROM (`+fmt.Sprintf(next, "$3::uuid, $4, $5")+`) first)
		UNION ALL
		SELECT s.tunnel_id, s.caller_kind, s.caller_id, k.n + 1 FROM k, LATERAL (`+fmt.Sprintf(next, "k.tunnel_id, k.caller_kind, k.caller_id")+`) s
		WHERE k.n < $6)
		SELECT tunnel_id::text, caller_kind, caller_id FROM k`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (UsageKey, error) {
		var k UsageKey
		err := r.Scan(&k.TunnelID, &k.CallerKind, &k.CallerID)
		return k, err
	})
}

const nilTunnel = "00000000-0000-0000-0000-000000000000"

// storedHist is a stored histogram as the domain type; one outside the layout (which the
// projection never writes) is dropped rather than trusted.
func storedHist(lo int, counts []int64) *domain.Histogram {
	h := &domain.Histogram{Offset: lo, Counts: counts}
	if len(counts) == 0 || h.Validate() != nil {
		return nil
	}
	return h
}

// OrgTimeZone is an organization's time zone setting ("" when never set: UTC).
func (q *Queries) OrgTimeZone(ctx context.Context, orgID string) (string, error) {
	if !domain.ValidID(orgID) {
		return "", fmt.Errorf("org time zone: %w", ErrBadFilter)
	}
	var tz string
	err := q.db.QueryRow(ctx, `SELECT time_zone FROM org_settings WHERE org_id = $1`, orgID).Scan(&tz)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", dbErr("org time zone", err)
	}
	return tz, nil
}

// UsageSkipped is how many usage windows the projection skipped as invalid, and the last one.
func (q *Queries) UsageSkipped(ctx context.Context) (n, lastPosition int64, lastReason string, err error) {
	err = q.db.QueryRow(ctx, `SELECT skipped, last_position, last_reason FROM usage_skipped`).Scan(&n, &lastPosition, &lastReason)
	if err == pgx.ErrNoRows {
		return 0, -1, "", nil
	}
	if err != nil {
		return 0, 0, "", dbErr("usage skipped", err)
	}
	return n, lastPosition, lastReason, nil
}

// PriceSheet is a chargeback price sheet (view price_sheets); prices are exact rationals.
type PriceSheet struct {
	EffectiveFrom   time.Time
	Currency        string
	PerGBIn         *big.Rat
	PerGBOut        *big.Rat
	Per1kRequests   *big.Rat
	PerStreamedHour *big.Rat
	PerTunnelDay    *big.Rat
	SetBy           string
	Position        int64
}

// PriceSheets are an organization's sheets that start before until, oldest first.
func (q *Queries) PriceSheets(ctx context.Context, orgID string, until time.Time) ([]PriceSheet, error) {
	const op = "price sheets"
	if !domain.ValidID(orgID) {
		return nil, fmt.Errorf("%s: %w", op, ErrBadFilter)
	}
	rows, err := q.db.Query(ctx, `SELECT effective_from, currency, per_gb_in::text, per_gb_out::text, per_1k_requests::text,
		per_streamed_hour::text, per_tunnel_day::text, set_by, position FROM price_sheets WHERE org_id = $1 AND effective_from < $2
		ORDER BY effective_from`, orgID, until)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PriceSheet, error) {
		var s PriceSheet
		var in, outp, req, hour, day string
		if err := r.Scan(&s.EffectiveFrom, &s.Currency, &in, &outp, &req, &hour, &day, &s.SetBy, &s.Position); err != nil {
			return s, err
		}
		var ok [5]bool
		s.PerGBIn, ok[0] = new(big.Rat).SetString(in)
		s.PerGBOut, ok[1] = new(big.Rat).SetString(outp)
		s.Per1kRequests, ok[2] = new(big.Rat).SetString(req)
		s.PerStreamedHour, ok[3] = new(big.Rat).SetString(hour)
		s.PerTunnelDay, ok[4] = new(big.Rat).SetString(day)
		for _, o := range ok {
			if !o {
				return s, fmt.Errorf("a price is not a decimal")
			}
		}
		return s, nil
	})
	if err != nil {
		return nil, dbErr(op, err)
	}
	return out, nil
}

// ChargeUsage is what one (tunnel, caller) used in one price period, summed exactly.
type ChargeUsage struct {
	UsageKey
	Period     int // index into the boundaries: 0 before the first one
	Requests   *big.Int
	BytesIn    *big.Int
	BytesOut   *big.Int
	StreamedMS *big.Int
}

// ChargeUsage sums an organization's per-caller usage in [from, to) by (tunnel, caller, period),
// where period counts the boundaries at or before each hour.
func (q *Queries) ChargeUsage(ctx context.Context, orgID string, from, to time.Time, boundaries []time.Time) ([]ChargeUsage, error) {
	const op = "charge usage"
	if !domain.ValidID(orgID) || !from.Before(to) {
		return nil, fmt.Errorf("%s: %w", op, ErrBadFilter)
	}
	rows, err := q.db.Query(ctx, `SELECT tunnel_id::text, caller_kind, caller_id,
		(SELECT count(*) FROM unnest($4::timestamptz[]) b WHERE b <= hour)::int AS period,
		sum(requests)::text, sum(bytes_in)::text, sum(bytes_out)::text, sum(streamed_ms)::text
		FROM usage_hourly WHERE org_id = $1 AND scope = 'caller' AND hour >= $2 AND hour < $3
		GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`, orgID, from, to, boundaries)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ChargeUsage, error) {
		var c ChargeUsage
		var req, in, outb, ms string
		if err := r.Scan(&c.TunnelID, &c.CallerKind, &c.CallerID, &c.Period, &req, &in, &outb, &ms); err != nil {
			return c, err
		}
		c.Requests, c.BytesIn, c.BytesOut, c.StreamedMS = bigInt(req), bigInt(in), bigInt(outb), bigInt(ms)
		return c, nil
	})
	if err != nil {
		return nil, dbErr(op, err)
	}
	return out, nil
}

// ActiveTunnelDay is a tunnel's first hour with a request in one day.
type ActiveTunnelDay struct {
	TunnelID  string
	Day       int // index into the day boundaries
	FirstHour time.Time
}

// ActiveTunnelDays lists, per tunnel and day, the first hour a tunnel served a request; days are
// given by their starts (the caller's local midnights), the last one ending at to.
func (q *Queries) ActiveTunnelDays(ctx context.Context, orgID string, dayStarts []time.Time, to time.Time) ([]ActiveTunnelDay, error) {
	const op = "active tunnel days"
	if !domain.ValidID(orgID) || len(dayStarts) == 0 {
		return nil, fmt.Errorf("%s: %w", op, ErrBadFilter)
	}
	rows, err := q.db.Query(ctx, `SELECT tunnel_id::text, (SELECT count(*) FROM unnest($2::timestamptz[]) b WHERE b <= hour)::int - 1 AS day, min(hour)
		FROM usage_hourly WHERE org_id = $1 AND scope = 'tunnel' AND hour >= $3 AND hour < $4 AND requests > 0
		GROUP BY 1, 2 ORDER BY 1, 2`, orgID, dayStarts, dayStarts[0], to)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ActiveTunnelDay, error) {
		var d ActiveTunnelDay
		err := r.Scan(&d.TunnelID, &d.Day, &d.FirstHour)
		return d, err
	})
	if err != nil {
		return nil, dbErr(op, err)
	}
	return out, nil
}

func bigInt(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return new(big.Int)
	}
	return n
}
