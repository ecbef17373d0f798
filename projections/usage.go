package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
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

type usageKey struct {
	org, scope, tunnel, kind, caller string
	hour                             time.Time
}

type usageRow struct {
	windows, requests, errors, bytesIn, bytesOut, streamsMax, streamedMS int64
	classes                                                              map[string]int64
	latency, ttfb                                                        *[domain.HistogramBuckets]int64
}

// Apply folds one record with the merge done by SQL functions (usage_hist_add …); the runner
// and rebuilds use ApplyBatch, which merges in memory.
func (usageProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	f, err := foldUsage(b, gen, []eventstore.Record{rec})
	if err != nil {
		return err
	}
	for _, k := range f.order {
		r := f.rows[k]
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
			gen, k.org, k.scope, k.tunnel, k.kind, k.caller, k.hour, r.windows, r.requests, r.errors, r.classesJSON(), r.bytesIn, r.bytesOut,
			r.streamsMax, r.streamedMS, histArray(r.latency), histArray(r.ttfb))
	}
	f.queueSkipped(b, gen)
	return nil
}

// ApplyBatch adds the batch's windows up per row in memory, reads the rows they land in (one
// query), merges, and writes every row back with one statement: a batch costs two round trips
// however many windows it holds.
func (usageProjection) ApplyBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch, gen int, recs []eventstore.Record) error {
	f, err := foldUsage(b, gen, recs)
	if err != nil {
		return err
	}
	f.queueSkipped(b, gen)
	if len(f.order) == 0 {
		return nil
	}
	n := len(f.order)
	orgs, scopes, tunnels, kinds, callers := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	hours := make([]time.Time, n)
	for i, k := range f.order {
		orgs[i], scopes[i], tunnels[i], kinds[i], callers[i], hours[i] = k.org, k.scope, k.tunnel, k.kind, k.caller, k.hour
	}
	rows, err := tx.Query(ctx, `SELECT h.org_id::text, h.scope, h.tunnel_id::text, h.caller_kind, h.caller_id, h.hour, h.windows, h.requests, h.errors,
		h.error_classes, h.bytes_in, h.bytes_out, h.streams_max, h.streamed_ms, h.latency, h.ttfb
		FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::timestamptz[]) AS k(org_id, scope, tunnel_id, caller_kind, caller_id, hour)
		JOIN rm_usage_hourly h ON h.generation = $1 AND h.org_id = k.org_id AND h.scope = k.scope AND h.tunnel_id = k.tunnel_id
			AND h.caller_kind = k.caller_kind AND h.caller_id = k.caller_id AND h.hour = k.hour`, gen, orgs, scopes, tunnels, kinds, callers, hours)
	if err != nil {
		return err
	}
	for rows.Next() {
		var k usageKey
		var old usageRow
		var lat, ttfb pgtype.Array[int64]
		if err := rows.Scan(&k.org, &k.scope, &k.tunnel, &k.kind, &k.caller, &k.hour, &old.windows, &old.requests, &old.errors, &old.classes,
			&old.bytesIn, &old.bytesOut, &old.streamsMax, &old.streamedMS, &lat, &ttfb); err != nil {
			rows.Close()
			return err
		}
		k.hour = k.hour.UTC()
		r := f.rows[k]
		if r == nil {
			rows.Close()
			return fmt.Errorf("usage: read back a row of key %v the batch has not", k)
		}
		r.merge(&old, lat, ttfb)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var windows, requests, errs, bytesIn, bytesOut, streamsMax, streamedMS = make([]int64, n), make([]int64, n), make([]int64, n),
		make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	classes, latency, ttfb := make([]string, n), make([]*string, n), make([]*string, n)
	for i, k := range f.order {
		r := f.rows[k]
		windows[i], requests[i], errs[i], bytesIn[i], bytesOut[i], streamsMax[i], streamedMS[i] = r.windows, r.requests, r.errors, r.bytesIn,
			r.bytesOut, r.streamsMax, r.streamedMS
		classes[i], latency[i], ttfb[i] = string(r.classesJSON()), histText(r.latency), histText(r.ttfb)
	}
	b.Queue(`INSERT INTO rm_usage_hourly (generation, org_id, scope, tunnel_id, caller_kind, caller_id, hour, windows, requests, errors,
		error_classes, bytes_in, bytes_out, streams_max, streamed_ms, latency, ttfb)
		SELECT $1, org_id, scope, tunnel_id, caller_kind, caller_id, hour, windows, requests, errors, classes::jsonb, bytes_in, bytes_out,
			streams_max, streamed_ms, latency::bigint[], ttfb::bigint[]
		FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::timestamptz[], $8::bigint[], $9::bigint[], $10::bigint[],
			$11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], $17::text[])
			AS u(org_id, scope, tunnel_id, caller_kind, caller_id, hour, windows, requests, errors, classes, bytes_in, bytes_out, streams_max,
				streamed_ms, latency, ttfb)
		ON CONFLICT (generation, org_id, scope, tunnel_id, caller_kind, caller_id, hour) DO UPDATE SET
		windows = EXCLUDED.windows, requests = EXCLUDED.requests, errors = EXCLUDED.errors, error_classes = EXCLUDED.error_classes,
		bytes_in = EXCLUDED.bytes_in, bytes_out = EXCLUDED.bytes_out, streams_max = EXCLUDED.streams_max, streamed_ms = EXCLUDED.streamed_ms,
		latency = EXCLUDED.latency, ttfb = EXCLUDED.ttfb`,
		gen, orgs, scopes, tunnels, kinds, callers, hours, windows, requests, errs, classes, bytesIn, bytesOut, streamsMax, streamedMS, latency, ttfb)
	return nil
}

// folded is a batch's windows added up per row, and what it skipped.
type folded struct {
	rows        map[usageKey]*usageRow
	order       []usageKey
	skipped     int64
	lastSkipped int64
	lastReason  string
}

// foldUsage adds up the batch's windows per row and queues its settings and price sheets.
func foldUsage(b *pgx.Batch, gen int, recs []eventstore.Record) (*folded, error) {
	f := &folded{rows: map[usageKey]*usageRow{}}
	for _, rec := range recs {
		if rec.StreamID == eventstore.LogStream {
			continue
		}
		switch rec.Type {
		case domain.TypeOrgSettingsUpdated, domain.TypePriceSheetSet:
			if err := queueSetting(b, gen, rec); err != nil {
				return nil, err
			}
			continue
		}
		u, reason := usageWindow(rec)
		if reason != "" {
			f.skipped++
			f.lastSkipped, f.lastReason = int64(rec.Position), reason
			continue
		}
		hour := u.WindowStart.UTC().Truncate(time.Hour)
		for _, k := range []usageKey{
			{org: u.OrgID, scope: ScopeTunnel, tunnel: u.TunnelID, hour: hour},
			{org: u.OrgID, scope: ScopeCaller, tunnel: u.TunnelID, kind: u.CallerKind, caller: u.CallerID, hour: hour},
			{org: u.OrgID, scope: ScopeOrg, tunnel: NilTunnel, hour: hour},
		} {
			r := f.rows[k]
			if r == nil {
				r = &usageRow{}
				f.rows[k] = r
				f.order = append(f.order, k)
			}
			r.fold(u)
		}
	}
	return f, nil
}

func (f *folded) queueSkipped(b *pgx.Batch, gen int) {
	if f.skipped == 0 {
		return
	}
	b.Queue(`INSERT INTO rm_usage_skipped AS s (generation, skipped, last_position, last_reason) VALUES ($1, $2, $3, $4)
		ON CONFLICT (generation) DO UPDATE SET skipped = s.skipped + EXCLUDED.skipped, last_position = EXCLUDED.last_position,
		last_reason = EXCLUDED.last_reason`, gen, f.skipped, f.lastSkipped, f.lastReason)
}

func (r *usageRow) classesJSON() []byte {
	if len(r.classes) == 0 {
		return []byte("{}")
	}
	b, _ := json.Marshal(r.classes) // map[string]int64 always encodes
	return b
}

// merge adds a stored row into r.
func (r *usageRow) merge(old *usageRow, lat, ttfb pgtype.Array[int64]) {
	r.windows = satAdd(r.windows, old.windows)
	r.requests = satAdd(r.requests, old.requests)
	r.errors = satAdd(r.errors, old.errors)
	r.bytesIn = satAdd(r.bytesIn, old.bytesIn)
	r.bytesOut = satAdd(r.bytesOut, old.bytesOut)
	r.streamsMax = max(r.streamsMax, old.streamsMax)
	r.streamedMS = satAdd(r.streamedMS, old.streamedMS)
	for c, n := range old.classes {
		if r.classes == nil {
			r.classes = map[string]int64{}
		}
		r.classes[c] = satAdd(r.classes[c], n)
	}
	r.latency = addStored(r.latency, lat)
	r.ttfb = addStored(r.ttfb, ttfb)
}

func addStored(dst *[domain.HistogramBuckets]int64, a pgtype.Array[int64]) *[domain.HistogramBuckets]int64 {
	if !a.Valid || len(a.Elements) == 0 || len(a.Dims) != 1 {
		return dst
	}
	if dst == nil {
		dst = new([domain.HistogramBuckets]int64)
	}
	lo := int(a.Dims[0].LowerBound)
	for i, c := range a.Elements {
		if j := lo + i; j >= 0 && j < domain.HistogramBuckets {
			dst[j] = satAdd(dst[j], c)
		}
	}
	return dst
}

// histText is the stored form as PostgreSQL array text with the first bucket as lower bound
// ('[80:82]={3,0,1}'), nil for none: arrays of such arrays cannot be sent as one parameter.
func histText(counts *[domain.HistogramBuckets]int64) *string {
	if counts == nil {
		return nil
	}
	h := domain.HistogramOf(counts)
	if h == nil {
		return nil
	}
	buf := make([]byte, 0, 16+len(h.Counts)*4)
	buf = append(buf, '[')
	buf = strconv.AppendInt(buf, int64(h.Offset), 10)
	buf = append(buf, ':')
	buf = strconv.AppendInt(buf, int64(h.Offset+len(h.Counts)-1), 10)
	buf = append(buf, "]={"...)
	for i, c := range h.Counts {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, c, 10)
	}
	buf = append(buf, '}')
	s := string(buf)
	return &s
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
