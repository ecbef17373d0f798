package projections_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/servicetest"
	"github.com/tunnelplane/tunnelplane/projections"
)

// A BI tool's login with the role tunnelplane_bi reads the analytics views (usage by hour with
// percentiles from the merged buckets, settings, prices) and nothing else: not the log, not the
// read models behind the views, and it cannot write.
func TestTheBIRoleReadsTheAnalyticsViewsAndNothingElse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := servicetest.Start(t, nil)
	org, tunnel := uuid.NewString(), uuid.NewString()
	hour := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	var latency [domain.HistogramBuckets]int64
	latency[domain.HistogramIndex(10*time.Millisecond)] = 9
	latency[domain.HistogramIndex(time.Second)] = 1
	var evs []eventstore.EventData
	for i := range 2 {
		p, _ := json.Marshal(domain.UsageRecorded{NodeID: "n", OrgID: org, TunnelID: tunnel, CallerKind: domain.CallerUser, CallerID: "alice",
			WindowStart: hour.Add(time.Duration(i) * time.Minute), WindowEnd: hour.Add(time.Duration(i)*time.Minute + 10*time.Second),
			Requests: 10, BytesOut: 1000, Latency: domain.HistogramOf(&latency)})
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: p})
	}
	res, err := e.Store.Append(ctx, domain.NodeFactsStream("n"), eventstore.AnyVersion, evs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Runner.WaitFor(ctx, res.LastPosition, projections.Usage); err != nil {
		t.Fatal(err)
	}

	// A login as an operator would make for the BI tool (roles are cluster-wide: a name of its own).
	super := pgtest.SuperPool(t, e.URL)
	login, password := "tp_bi_"+hex.EncodeToString(binaryRand()), hex.EncodeToString(binaryRand())
	if _, err := super.Exec(ctx, `CREATE ROLE `+login+` LOGIN PASSWORD '`+password+`' IN ROLE tunnelplane_bi`); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(e.URL)
	u.User = url.UserPassword(login, password)
	bi, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bi.Close(context.Background())
		_, _ = super.Exec(context.Background(), `DROP ROLE IF EXISTS `+login)
	})

	var requests, bytesOut int64
	var p50, p99 float64
	if err := bi.QueryRow(ctx, `SELECT requests, bytes_out, latency_p50_ms, latency_p99_ms FROM analytics.usage_hourly
		WHERE scope = 'tunnel' AND tunnel_id = $1 AND hour = $2`, tunnel, hour).Scan(&requests, &bytesOut, &p50, &p99); err != nil {
		t.Fatal(err)
	}
	if requests != 20 || bytesOut != 2000 || math.Abs(p50-10)/10 > domain.HistogramRelativeError+1e-9 || math.Abs(p99-1000)/1000 > domain.HistogramRelativeError+1e-9 {
		t.Fatalf("requests %d, bytes out %d, latency p50 %v ms, p99 %v ms", requests, bytesOut, p50, p99)
	}
	for _, q := range []string{`SELECT count(*) FROM analytics.org_settings`, `SELECT count(*) FROM analytics.price_sheets`} {
		if _, err := bi.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, q := range []string{
		`SELECT count(*) FROM events`, `SELECT count(*) FROM checkpoints`, `SELECT count(*) FROM public.rm_usage_hourly`,
		`SELECT count(*) FROM public.usage_hourly`, `SELECT count(*) FROM rm_audit`, `SELECT count(*) FROM projection_state`,
		`INSERT INTO analytics.org_settings (org_id, time_zone, updated_at) VALUES (gen_random_uuid(), 'UTC', now())`,
		`DELETE FROM analytics.usage_hourly`, `CREATE TABLE analytics.mine (x int)`,
	} {
		_, err := bi.Exec(ctx, q)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("%s: %v, want permission denied", q, err)
		}
	}
}

func binaryRand() []byte {
	b := make([]byte, 6)
	for i := range b {
		b[i] = byte(rand.IntN(256))
	}
	return b
}
