package projections

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
)

// Apply (one record, merged by the SQL functions) and ApplyBatch (merged in memory) leave the
// same row: counts, error classes and histogram buckets.
func TestUsageApplyAndApplyBatchAgree(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := logtest.Start(t, time.Second)
	org, tunnel := uuid.NewString(), uuid.NewString()
	hour := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	var recs []eventstore.Record
	for i := range 4 {
		var lat [domain.HistogramBuckets]int64
		lat[80+i] = int64(i + 1)
		lat[200] = 1
		u := domain.UsageRecorded{OrgID: org, TunnelID: tunnel, CallerKind: domain.CallerAnonymous, WindowStart: hour.Add(time.Duration(i) * 10 * time.Second),
			WindowEnd: hour.Add(time.Duration(i+1) * 10 * time.Second), Requests: 10, BytesIn: 5, BytesOut: 7, StreamsMax: int64(i), StreamedMS: 100,
			Errors: map[string]int64{"upstream": 1, "timeout": int64(i)}, Latency: domain.HistogramOf(&lat)}
		raw, _ := json.Marshal(u)
		recs = append(recs, eventstore.Record{Position: uint64(i + 1), StreamID: domain.NodeFactsStream("n"), Type: domain.TypeUsageRecorded, Payload: raw})
	}
	p := usageProjection{}
	for _, gen := range []int{1, 2} {
		if err := pgx.BeginFunc(ctx, log.Pool, func(tx pgx.Tx) error {
			for _, part := range [][]eventstore.Record{recs[:1], recs[1:3], recs[3:]} {
				b := &pgx.Batch{}
				if gen == 1 {
					for _, r := range part {
						if err := p.Apply(ctx, b, gen, r); err != nil {
							return err
						}
					}
				} else if err := p.ApplyBatch(ctx, tx, b, gen, part); err != nil {
					return err
				}
				if err := tx.SendBatch(ctx, b).Close(); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := log.Pool.Query(ctx, `SELECT generation, scope, windows, requests, errors, error_classes::text, bytes_in, bytes_out, streams_max,
		streamed_ms, latency::text FROM rm_usage_hourly ORDER BY scope, generation`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		gen                                    int
		scope                                  string
		windows, req, errs, in, out, smax, sms int64
		classes, latency                       string
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.gen, &x.scope, &x.windows, &x.req, &x.errs, &x.classes, &x.in, &x.out, &x.smax, &x.sms, &x.latency)
		return x, err
	})
	if err != nil || len(got) != 6 {
		t.Fatalf("%d rows: %v", len(got), err)
	}
	for i := 0; i < 6; i += 2 {
		a, b := got[i], got[i+1]
		a.gen, b.gen = 0, 0
		if a != b {
			t.Errorf("%s: Apply %+v, ApplyBatch %+v", a.scope, a, b)
		}
		want := row{scope: a.scope, windows: 4, req: 40, errs: 10, in: 20, out: 28, smax: 3, sms: 400, classes: `{"timeout": 6, "upstream": 4}`}
		a.latency = ""
		if a != want {
			t.Errorf("%s: %+v, want %+v", a.scope, a, want)
		}
	}
	if got[0].latency[:8] != "[80:200]" {
		t.Errorf("latency stored as %s", got[0].latency[:20])
	}
}
