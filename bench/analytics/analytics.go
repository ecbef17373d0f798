// Package analytics is `bench analytics`: how fast the usage projection folds usage windows
// during a rebuild (rollup_eps), and how fast the analytics reads answer over 90 days × 1,000
// tunnels of hourly rollups (query_p99_ms). It works on a scratch database it drops.
package analytics

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/bench/stats"
	storebench "github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// ForecastHook measures forecasting with backtesting over the hourly series the bench loaded
// (analytics/forecast wires it): it returns milliseconds per series. Without a hook the result
// has no forecast_ms_per_series.
type ForecastHook func(ctx context.Context, pool *pgxpool.Pool, orgID string, tunnels []string) (msPerSeries float64, err error)

// Options configures a run.
type Options struct {
	// AdminURL points at the server's maintenance database; the scratch database is made there.
	AdminURL string
	// Windows are the usage windows signed into the scratch log and folded by the rebuild
	// (default 200,000): 10-second windows of WindowTunnels tunnels (default 100) × 3 callers.
	Windows, WindowTunnels int
	// Days × Tunnels of hourly rollups for the queries (default 90 × 1,000), inserted directly.
	Days, Tunnels int
	// Queries of each kind (default 100).
	Queries int
	// RebuildBatchSize of the projection runner (default: the runner's, 5,000).
	RebuildBatchSize int
	// Reports is how many times each analytics report is generated over the query data (0: none):
	// build (one snapshot of the read model) and render, without recording it in the log.
	Reports  int
	Forecast ForecastHook
	Progress io.Writer
	Logger   *slog.Logger
}

// Result is the outcome.
type Result struct {
	Windows    int     `json:"windows"`
	RollupEPS  float64 `json:"rollup_eps"` // usage windows folded per second by a rebuild of the usage projection
	RebuildSec float64 `json:"rebuild_seconds"`
	// The query data: hourly rows of one organization's tunnels (scope tunnel) and of the org.
	QueryDays    int     `json:"query_days"`
	QueryTunnels int     `json:"query_tunnels"`
	QueryRows    int64   `json:"query_rows"`
	QueryBytes   int64   `json:"query_table_bytes"`
	QueryP99MS   float64 `json:"query_p99_ms"` // over every query of the kinds below
	QueryP50MS   float64 `json:"query_p50_ms"`
	// Per kind: p50 and p99 in ms.
	Kinds map[string][2]float64 `json:"query_kinds_p50_p99_ms"`
	// ForecastMSPerSeries is set only when a ForecastHook measured it.
	ForecastMSPerSeries *float64 `json:"forecast_ms_per_series,omitempty"`
	// ReportMS is the median time to build each analytics report over the query data
	// ("kind_build") and to render it ("kind_format"); set only when Options.Reports > 0.
	ReportMS map[string]float64 `json:"report_ms,omitempty"`
	Notes    string             `json:"notes"`
}

const notes = "rollup_eps: signed usage.recorded windows appended to a scratch log, then the usage projection rebuilt from position 0 " +
	"(read, decode, validate, fold, upsert, swap), windows / seconds. query: hourly rows inserted directly with SQL (not through the log), " +
	"each row with 20-bucket latency and TTFB histograms; each query is the API's read (readmodels.UsageHours) plus the bucketing and " +
	"histogram merge (rollup.Aggregate), without HTTP."

// Run performs the benchmark.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Windows <= 0 {
		o.Windows = 200_000
	}
	if o.WindowTunnels <= 0 {
		o.WindowTunnels = 100
	}
	if o.Days <= 0 {
		o.Days = 90
	}
	if o.Tunnels <= 0 {
		o.Tunnels = 1000
	}
	if o.Queries <= 0 {
		o.Queries = 100
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l, closeLog, err := storebench.NewScratchLog(ctx, o.AdminURL, "tunnelplane_bench_analytics", "bench analytics", o.Logger)
	if err != nil {
		return nil, err
	}
	defer closeLog()
	pool, store := l.Pool, l.Store

	res := &Result{Windows: o.Windows, QueryDays: o.Days, QueryTunnels: o.Tunnels, Notes: notes, Kinds: map[string][2]float64{}}
	t0 := time.Now()
	if err := appendWindows(ctx, store, o.Windows, o.WindowTunnels); err != nil {
		return nil, fmt.Errorf("bench analytics: %w", err)
	}
	fmt.Fprintf(o.Progress, "bench analytics: %d usage windows in the log (%.1fs)\n", o.Windows, time.Since(t0).Seconds())
	runner, err := projections.New(projections.Config{Store: store, Projections: projections.All(), RebuildBatchSize: o.RebuildBatchSize, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	t0 = time.Now()
	if _, err := runner.Rebuild(ctx, projections.Usage, nil); err != nil {
		return nil, fmt.Errorf("bench analytics: rebuild: %w", err)
	}
	res.RebuildSec = time.Since(t0).Seconds()
	res.RollupEPS = float64(o.Windows) / res.RebuildSec
	var folded int64
	if err := pool.QueryRow(ctx, `SELECT coalesce(sum(windows), 0) FROM usage_hourly WHERE scope = 'org'`).Scan(&folded); err != nil {
		return nil, err
	}
	if folded != int64(o.Windows) {
		return nil, fmt.Errorf("bench analytics: the rollups hold %d windows, %d were appended", folded, o.Windows)
	}
	fmt.Fprintf(o.Progress, "bench analytics: rebuild folded %d windows in %.1fs: %.0f windows/s\n", o.Windows, res.RebuildSec, res.RollupEPS)

	org, tunnels, err := loadHours(ctx, pool, o.Days, o.Tunnels, o.Progress)
	if err != nil {
		return nil, fmt.Errorf("bench analytics: %w", err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*), pg_total_relation_size('rm_usage_hourly') FROM rm_usage_hourly WHERE org_id = $1`, org).Scan(&res.QueryRows, &res.QueryBytes); err != nil {
		return nil, err
	}
	if err := queries(ctx, pool, org, tunnels, o, res); err != nil {
		return nil, fmt.Errorf("bench analytics: %w", err)
	}
	if o.Reports > 0 {
		if res.ReportMS, err = reports(ctx, pool, org, o); err != nil {
			return nil, fmt.Errorf("bench analytics: %w", err)
		}
	}
	if o.Forecast != nil {
		ms, err := o.Forecast(ctx, pool, org, tunnels)
		if err != nil {
			return nil, fmt.Errorf("bench analytics: forecast: %w", err)
		}
		res.ForecastMSPerSeries = &ms
	}
	return res, nil
}

// appendWindows signs n 10-second windows into the log, 500 a transaction, in time order.
func appendWindows(ctx context.Context, st *eventstore.Store, n, tunnels int) error {
	org := uuid.NewString()
	ids := make([]string, tunnels)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	callers := [][2]string{{domain.CallerUser, "alice"}, {domain.CallerAccessKey, uuid.NewString()}, {domain.CallerAnonymous, ""}}
	r := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	node := uuid.NewString()
	for done := 0; done < n; {
		k := min(500, n-done)
		evs := make([]eventstore.EventData, k)
		for i := range evs {
			j := done + i
			var lat [domain.HistogramBuckets]int64
			for range 8 {
				lat[70+r.IntN(20)] += int64(1 + r.IntN(5))
			}
			c := callers[j%3]
			ws := start.Add(time.Duration(j/(tunnels*3)) * 10 * time.Second)
			b, err := json.Marshal(domain.UsageRecorded{NodeID: node, OrgID: org, TunnelID: ids[(j/3)%tunnels], WindowStart: ws, WindowEnd: ws.Add(10 * time.Second),
				CallerKind: c[0], CallerID: c[1], Requests: int64(1 + r.IntN(100)), BytesIn: r.Int64N(1 << 20), BytesOut: r.Int64N(1 << 24),
				Errors: map[string]int64{"upstream": int64(r.IntN(2))}, StreamsMax: int64(r.IntN(8)), StreamedMS: r.Int64N(40_000),
				Latency: domain.HistogramOf(&lat), TTFB: domain.HistogramOf(&lat)})
			if err != nil {
				return err
			}
			evs[i] = eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: b}
		}
		if _, err := st.Append(ctx, domain.NodeFactsStream(node), eventstore.AnyVersion, evs...); err != nil {
			return fmt.Errorf("append usage: %w", err)
		}
		done += k
	}
	return nil
}

// loadHours inserts days × tunnels hourly rows of scope tunnel for one org, and the org's own
// hourly rows, straight into the current generation.
func loadHours(ctx context.Context, pool *pgxpool.Pool, days, tunnels int, progress io.Writer) (string, []string, error) {
	org := uuid.NewString()
	ids := make([]string, tunnels)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	slices.Sort(ids) // in key order, so that a page after ids[i] starts at ids[i+1]
	t0 := time.Now()
	end := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	from := end.Add(-time.Duration(days) * 24 * time.Hour)
	const hist = `('[70:89]={' || array_to_string(ARRAY(SELECT (random() * 50)::int FROM generate_series(1, 20)), ',') || '}')::bigint[]`
	// One histogram value per statement keeps the insert fast; the counts differ per row anyway.
	for i := 0; i < len(ids); i += 50 {
		chunk := ids[i:min(i+50, len(ids))]
		if _, err := pool.Exec(ctx, `INSERT INTO rm_usage_hourly (generation, org_id, scope, tunnel_id, caller_kind, caller_id, hour, windows, requests, errors,
			error_classes, bytes_in, bytes_out, streams_max, streamed_ms, latency, ttfb)
			SELECT (SELECT generation FROM projection_state WHERE name = 'usage'), $1, 'tunnel', t, '', '', h, 360, (random() * 10000)::bigint,
				(random() * 10)::bigint, '{}', (random() * 1e9)::bigint, (random() * 1e10)::bigint, (random() * 50)::bigint, (random() * 1e7)::bigint,
				`+hist+`, `+hist+`
			FROM unnest($2::uuid[]) t, generate_series($3::timestamptz, $4::timestamptz - interval '1 hour', interval '1 hour') h`,
			org, chunk, from, end); err != nil {
			return "", nil, err
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO rm_usage_hourly (generation, org_id, scope, tunnel_id, caller_kind, caller_id, hour, windows, requests, errors,
		error_classes, bytes_in, bytes_out, streams_max, streamed_ms, latency, ttfb)
		SELECT generation, org_id, 'org', '00000000-0000-0000-0000-000000000000', '', '', hour, sum(windows), sum(requests), sum(errors), '{}',
			sum(bytes_in), sum(bytes_out), max(streams_max), sum(streamed_ms), `+hist+`, `+hist+`
		FROM rm_usage_hourly WHERE org_id = $1 AND scope = 'tunnel' GROUP BY generation, org_id, hour`, org); err != nil {
		return "", nil, err
	}
	if _, err := pool.Exec(ctx, `ANALYZE rm_usage_hourly`); err != nil {
		return "", nil, err
	}
	fmt.Fprintf(progress, "bench analytics: %d days × %d tunnels of hourly rows loaded (%.1fs)\n", days, tunnels, time.Since(t0).Seconds())
	return org, ids, nil
}

// queries runs the API's reads: one tunnel by day over the whole range; the org by day over the
// whole range; a page of 20 tunnels by hour over the last 7 days; the org by ISO week.
func queries(ctx context.Context, pool *pgxpool.Pool, org string, tunnels []string, o Options, res *Result) error {
	q := readmodels.New(pool)
	end := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	from := end.Add(-time.Duration(o.Days) * 24 * time.Hour)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(3, 4))
	kinds := []struct {
		name string
		f    func() (readmodels.UsageFilter, rollup.Granularity)
	}{
		{"tunnel_90d_by_day", func() (readmodels.UsageFilter, rollup.Granularity) {
			return readmodels.UsageFilter{OrgID: org, Scope: readmodels.UsageScopeTunnel, TunnelID: tunnels[r.IntN(len(tunnels))], From: from, To: end, Limit: 1}, rollup.Day
		}},
		{"org_90d_by_day", func() (readmodels.UsageFilter, rollup.Granularity) {
			return readmodels.UsageFilter{OrgID: org, Scope: readmodels.UsageScopeOrg, From: from, To: end, Limit: 1}, rollup.Day
		}},
		{"org_90d_by_week", func() (readmodels.UsageFilter, rollup.Granularity) {
			return readmodels.UsageFilter{OrgID: org, Scope: readmodels.UsageScopeOrg, From: from, To: end, Limit: 1}, rollup.Week
		}},
		{"20_tunnels_7d_by_hour", func() (readmodels.UsageFilter, rollup.Granularity) {
			i := r.IntN(len(tunnels) - 1)
			return readmodels.UsageFilter{OrgID: org, Scope: readmodels.UsageScopeTunnel, From: end.Add(-7 * 24 * time.Hour), To: end, Limit: 20,
				After: &readmodels.UsageKey{TunnelID: tunnels[i]}}, rollup.Hour
		}},
	}
	var all []float64
	for _, k := range kinds {
		var ms []float64
		for range o.Queries {
			f, g := k.f()
			t0 := time.Now()
			rows, _, err := q.UsageHours(ctx, f)
			if err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			if _, err := rollup.Aggregate(rows, g, berlin); err != nil {
				return err
			}
			if len(rows) == 0 {
				return fmt.Errorf("%s: no rows", k.name)
			}
			ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
		}
		all = append(all, ms...)
		s := stats.Sorted(ms)
		res.Kinds[k.name] = [2]float64{stats.Percentile(s, 0.50), stats.Percentile(s, 0.99)}
	}
	s := stats.Sorted(all)
	res.QueryP50MS, res.QueryP99MS = stats.Percentile(s, 0.50), stats.Percentile(s, 0.99)
	return nil
}

// reports times each analytics report of the org over the whole range (usage by ISO week,
// chargeback by local day, capacity by hour, each table with every tunnel): the build (one
// snapshot of the read model, "kind_build") and each rendering ("kind_format"), medians.
func reports(ctx context.Context, pool *pgxpool.Pool, org string, o Options) (map[string]float64, error) {
	q := readmodels.New(pool)
	end := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	from := end.Add(-time.Duration(o.Days) * 24 * time.Hour)
	runs := map[string][]float64{}
	for _, kind := range analyticsreport.Kinds() {
		for range o.Reports {
			t0 := time.Now()
			b, err := analyticsreport.Build(ctx, q, analyticsreport.Settings{NodeStreamCapacity: 1000},
				analyticsreport.Request{Kind: kind, From: from, To: end, OrgID: org, Actor: "bench"}, uuid.NewString(), t0)
			if err != nil {
				return nil, fmt.Errorf("%s report: %w", kind, err)
			}
			runs[kind+"_build"] = append(runs[kind+"_build"], float64(time.Since(t0).Microseconds())/1000)
			for _, format := range []render.Format{render.JSON, render.PDF, render.XLSX} {
				t0 := time.Now()
				if err := render.Write(io.Discard, format, b.Doc); err != nil {
					return nil, fmt.Errorf("%s report as %s: %w", kind, format, err)
				}
				runs[kind+"_"+string(format)] = append(runs[kind+"_"+string(format)], float64(time.Since(t0).Microseconds())/1000)
			}
			fmt.Fprintf(o.Progress, "bench analytics: %s report built in %.0f ms\n", kind, runs[kind+"_build"][len(runs[kind+"_build"])-1])
		}
	}
	out := map[string]float64{}
	for k, ms := range runs {
		out[k] = stats.Percentile(stats.Sorted(ms), 0.50)
	}
	return out, nil
}
