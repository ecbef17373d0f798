package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Usage is the analytics read model: hourly usage rollups per tunnel, per (tunnel, caller) and
// per org, with the org settings (time zone) and chargeback price sheets that read them.
const Usage = "usage"

// Scopes of the usage rollups.
const (
	ScopeTunnel = "tunnel"
	ScopeCaller = "caller"
	ScopeOrg    = "org"
)

// NilTunnel is the tunnel id of scope org rows.
const NilTunnel = "00000000-0000-0000-0000-000000000000"

// usageProjection folds usage.recorded windows into hourly rows. A window counts whole in the
// UTC hour its start falls in (windows are 10 s and aligned, so none spans an hour; a longer one
// is not split). A window that breaks its type's rules is skipped and counted in
// rm_usage_skipped, never applied and never a reason to stop: a node is outside input.
type usageProjection struct{}

func (usageProjection) Name() string { return Usage }
func (usageProjection) Tables() []string {
	return []string{"rm_usage_hourly", "rm_usage_skipped", "rm_org_settings", "rm_price_sheets"}
}
func (usageProjection) Handles(t string) bool {
	return t == domain.TypeUsageRecorded || t == domain.TypeOrgSettingsUpdated || t == domain.TypePriceSheetSet
}
func (p usageProjection) Apply(ctx context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	return p.ApplyBatch(ctx, b, gen, []eventstore.Record{rec})
}

type usageKey struct {
	org, scope, tunnel, kind, caller string
	hour                             time.Time
}

type usageRow struct {
	windows, requests, errors, bytesIn, bytesOut, streamsMax, streamedMS int64
	classes                                                              map[string]int64
	latency, ttfb                                                        *[domain.HistogramBuckets]int64
}

// ApplyBatch adds the batch's windows up per row in memory, then queues one upsert per row.
func (usageProjection) ApplyBatch(_ context.Context, b *pgx.Batch, gen int, recs []eventstore.Record) error {
	rows := map[usageKey]*usageRow{}
	var order []usageKey
	var skipped int64
	var lastSkipped int64
	var lastReason string
	for _, rec := range recs {
		if rec.StreamID == eventstore.LogStream {
			continue
		}
		switch rec.Type {
		case domain.TypeOrgSettingsUpdated, domain.TypePriceSheetSet:
			if err := queueSetting(b, gen, rec); err != nil {
				return err
			}
			continue
		}
		u, reason := usageWindow(rec)
		if reason != "" {
			skipped++
			lastSkipped, lastReason = int64(rec.Position), reason
			continue
		}
		hour := u.WindowStart.UTC().Truncate(time.Hour)
		for _, k := range []usageKey{
			{org: u.OrgID, scope: ScopeTunnel, tunnel: u.TunnelID, hour: hour},
			{org: u.OrgID, scope: ScopeCaller, tunnel: u.TunnelID, kind: u.CallerKind, caller: u.CallerID, hour: hour},
			{org: u.OrgID, scope: ScopeOrg, tunnel: NilTunnel, hour: hour},
		} {
			r := rows[k]
			if r == nil {
				r = &usageRow{}
				rows[k] = r
				order = append(order, k)
			}
			r.fold(u)
		}
	}
	for _, k := range order {
		r := rows[k]
		classes, err := json.Marshal(r.classes)
		if err != nil {
			return err
		}
		if r.classes == nil {
			classes = []byte("{}")
		}
		b.Queue(`INSERT INTO rm_usage_hourly AS h (generation, org_id, scope, tunnel_id, caller_kind, caller_id, hour, windows, requests, errors,
			error_classes, bytes_in, bytes_out, streams_max, streamed_ms, latency, ttfb)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
			ON CONFLICT (generation, org_id, scope, tunnel_id, caller_kind, caller_id, hour) DO UPDATE SET
			windows = usage_sat_add(h.windows, EXCLUDED.windows), requests = usage_sat_add(h.requests, EXCLUDED.requests),
			errors = usage_sat_add(h.errors, EXCLUDED.errors),
			error_classes = CASE WHEN EXCLUDED.error_classes = '{}' THEN h.error_classes ELSE usage_classes_add(h.error_classes, EXCLUDED.error_classes) END,
			bytes_in = usage_sat_add(h.bytes_in, EXCLUDED.bytes_in), bytes_out = usage_sat_add(h.bytes_out, EXCLUDED.bytes_out),
			streams_max = greatest(h.streams_max, EXCLUDED.streams_max), streamed_ms = usage_sat_add(h.streamed_ms, EXCLUDED.streamed_ms),
			latency = usage_hist_add(h.latency, EXCLUDED.latency), ttfb = usage_hist_add(h.ttfb, EXCLUDED.ttfb)`,
			gen, k.org, k.scope, k.tunnel, k.kind, k.caller, k.hour, r.windows, r.requests, r.errors, classes, r.bytesIn, r.bytesOut,
			r.streamsMax, r.streamedMS, histArray(r.latency), histArray(r.ttfb))
	}
	if skipped > 0 {
		b.Queue(`INSERT INTO rm_usage_skipped AS s (generation, skipped, last_position, last_reason) VALUES ($1, $2, $3, $4)
			ON CONFLICT (generation) DO UPDATE SET skipped = s.skipped + EXCLUDED.skipped, last_position = EXCLUDED.last_position,
			last_reason = EXCLUDED.last_reason`, gen, skipped, lastSkipped, lastReason)
	}
	return nil
}

// usageWindow decodes a window and says why it is skipped ("" when it is applied).
func usageWindow(rec eventstore.Record) (*domain.UsageRecorded, string) {
	e, err := decode(rec)
	if err != nil {
		return nil, "undecodable"
	}
	u, ok := e.(*domain.UsageRecorded)
	if !ok {
		return nil, "undecodable"
	}
	if err := u.Validate(); err != nil {
		return nil, "invalid: " + err.Error()
	}
	// What the tables refuse would stop the projection: keys that are not UUIDs, NUL bytes in
	// text, times PostgreSQL cannot hold.
	switch {
	case !domain.ValidID(u.OrgID) || !domain.ValidID(u.TunnelID):
		return nil, "invalid: org or tunnel id is not a UUID"
	case strings.ContainsRune(u.CallerID, 0):
		return nil, "invalid: NUL in caller id"
	case u.WindowStart.Year() < 2000 || u.WindowEnd.Year() > 9999:
		return nil, "invalid: window outside years 2000..9999"
	}
	for class := range u.Errors {
		if class == "" || len(class) > 64 || strings.ContainsRune(class, 0) {
			return nil, "invalid: error class name"
		}
	}
	return u, ""
}

func (r *usageRow) fold(u *domain.UsageRecorded) {
	r.windows = satAdd(r.windows, 1)
	r.requests = satAdd(r.requests, u.Requests)
	r.bytesIn = satAdd(r.bytesIn, u.BytesIn)
	r.bytesOut = satAdd(r.bytesOut, u.BytesOut)
	r.streamsMax = max(r.streamsMax, u.StreamsMax)
	r.streamedMS = satAdd(r.streamedMS, u.StreamedMS)
	for class, n := range u.Errors {
		if n == 0 {
			continue
		}
		if r.classes == nil {
			r.classes = map[string]int64{}
		}
		r.classes[class] = satAdd(r.classes[class], n)
		r.errors = satAdd(r.errors, n)
	}
	r.latency = addHist(r.latency, u.Latency)
	r.ttfb = addHist(r.ttfb, u.TTFB)
}

func addHist(dst *[domain.HistogramBuckets]int64, h *domain.Histogram) *[domain.HistogramBuckets]int64 {
	if h.Count() == 0 {
		return dst
	}
	if dst == nil {
		dst = new([domain.HistogramBuckets]int64)
	}
	for i, c := range h.Counts {
		dst[h.Offset+i] = satAdd(dst[h.Offset+i], c)
	}
	return dst
}

// histArray is the stored form: the used buckets, subscripted by bucket index.
func histArray(counts *[domain.HistogramBuckets]int64) pgtype.Array[int64] {
	if counts == nil {
		return pgtype.Array[int64]{}
	}
	h := domain.HistogramOf(counts)
	if h == nil {
		return pgtype.Array[int64]{}
	}
	return pgtype.Array[int64]{Elements: h.Counts, Dims: []pgtype.ArrayDimension{{Length: int32(len(h.Counts)), LowerBound: int32(h.Offset)}}, Valid: true}
}

func satAdd(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func queueSetting(b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	switch ev := e.(type) {
	case *domain.OrgSettingsUpdated:
		b.Queue(`INSERT INTO rm_org_settings (generation, org_id, time_zone, updated_at, position) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (generation, org_id) DO UPDATE SET time_zone = EXCLUDED.time_zone, updated_at = EXCLUDED.updated_at, position = EXCLUDED.position`,
			gen, ev.OrgID, ev.TimeZone, rec.RecordedAt, int64(rec.Position))
	case *domain.PriceSheetSet:
		// A sheet set again for the same (future) start replaces the one not yet in force.
		b.Queue(`INSERT INTO rm_price_sheets (generation, org_id, effective_from, currency, per_gb_in, per_gb_out, per_1k_requests,
			per_streamed_hour, per_tunnel_day, set_by, set_at, position)
			VALUES ($1, $2, $3, $4, $5::numeric, $6::numeric, $7::numeric, $8::numeric, $9::numeric, $10, $11, $12)
			ON CONFLICT (generation, org_id, effective_from) DO UPDATE SET currency = EXCLUDED.currency, per_gb_in = EXCLUDED.per_gb_in,
			per_gb_out = EXCLUDED.per_gb_out, per_1k_requests = EXCLUDED.per_1k_requests, per_streamed_hour = EXCLUDED.per_streamed_hour,
			per_tunnel_day = EXCLUDED.per_tunnel_day, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at, position = EXCLUDED.position`,
			gen, ev.OrgID, ev.EffectiveFrom, ev.Currency, ev.PerGBIn, ev.PerGBOut, ev.Per1kRequests, ev.PerStreamedHour, ev.PerTunnelDay,
			metadata(rec).Actor, rec.RecordedAt, int64(rec.Position))
	default:
		return fmt.Errorf("usage: unexpected %T", e)
	}
	return nil
}
