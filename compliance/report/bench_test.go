package report_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// BenchmarkYearReport measures a report over one year of a compliance read model holding
// TUNNELPLANE_REPORT_BENCH_EVENTS indexed events (default 100,000; the case is
// 1,000,000): the rows are written straight into the read model (the projection's own cost is
// the rebuild's, measured apart), spread over the year in the mix a busy installation shows.
//
//	TUNNELPLANE_REPORT_BENCH_EVENTS=1000000 go test -run - -bench YearReport -benchtime 1x ./compliance/report
func BenchmarkYearReport(b *testing.B) {
	n := 100_000
	if v := os.Getenv("TUNNELPLANE_REPORT_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	h := newHarness(b)
	h.caughtUp(b)
	// Not whole hours: the window's partial first and last hours come from the events.
	to := time.Now().UTC()
	from := to.AddDate(-1, 0, 0)
	seed := time.Now()
	const chunk = 100_000
	for lo := 0; lo < n; lo += chunk {
		h.seedEvents(b, from, to, n, lo, min(lo+chunk, n))
	}
	pgtest.Exec(b, h.url, `INSERT INTO rm_compliance_credentials (generation, kind, credential_id, org_id, issued_by, issued_at, expires_at, position)
		SELECT 1, CASE WHEN i % 2 = 0 THEN 'agent_token' ELSE 'access_key' END, 'cred-' || i, 'org-' || (i % 50), 'user-' || (i % 2000),
			$1::timestamptz + (i::float8 / $3) * ($2::timestamptz - $1::timestamptz),
			$1::timestamptz + (i::float8 / $3) * ($2::timestamptz - $1::timestamptz) + make_interval(days => 30 + i % 300), 1000000 + i
		FROM generate_series(0, $3 / 16 - 1) AS i`, from, to, n)
	pgtest.Exec(b, h.url, `INSERT INTO rm_compliance_exceptions (generation, position, rule, recorded_at, org_id, subject, detail)
		SELECT 1, 1000000 + i, 'access_after_withdrawal', $1::timestamptz + (i::float8 / $3) * ($2::timestamptz - $1::timestamptz), 'org-' || (i % 50),
			'user-' || (i % 2000), 'denied: create on tunnels ×1' FROM generate_series(0, $3 / 100 - 1) AS i`, from, to, n)
	pgtest.Exec(b, h.url, `ANALYZE`)
	b.Logf("seeded %d events in %s", n, time.Since(seed).Round(time.Millisecond))
	b.ResetTimer()
	for range b.N {
		for _, fw := range []string{"soc2", "hipaa", "iso27001"} {
			for _, f := range []render.Format{render.JSON, render.PDF} {
				start := time.Now()
				res, err := h.gen.Generate(context.Background(), report.Request{Framework: fw, From: from, To: to, Actor: "bench"}, f)
				if err != nil {
					b.Fatal(err)
				}
				b.Logf("%s %s over %d events: %s, %d bytes", fw, f, n, time.Since(start).Round(time.Millisecond), len(res.File))
			}
		}
	}
}

// seedEvents writes events lo..hi of n spread over [from, to) and their hourly rollup.
func (h *harness) seedEvents(b *testing.B, from, to time.Time, n, lo, hi int) {
	pgtest.Exec(b, h.url, `INSERT INTO rm_compliance_events (generation, position, recorded_at, type, org_id, actor, subject, detail, weight, attrs)
		SELECT 1, 1000000 + i, $1::timestamptz + (i::float8 / $3) * ($2::timestamptz - $1::timestamptz),
			(ARRAY['agent.connected','agent.connected','agent.connected','agent.connected','audit.access_denied','audit.access_denied',
			'audit.auth_failed','audit.auth_failed','role.assigned','role.unassigned','agent_token.issued','tunnel.updated','node.started',
			'audit.overflowed','siem.sink_updated','report.generated'])[1 + i % 16],
			'org-' || (i % 50), 'user-' || (i % 2000), 'subject-' || (i % 5000), 'detail ' || (i % 37), 1 + i % 3,
			CASE WHEN i % 16 < 4 THEN jsonb_build_object('node_id', 'node-' || (i % 20), 'protocol', CASE WHEN i % 97 = 0 THEN 'tunnelplane.v1' ELSE 'tunnelplane.v2' END,
				'cipher', CASE WHEN i % 101 = 0 THEN 'aes128-ctr' ELSE 'aes128-gcm@openssh.com' END, 'kex', 'curve25519-sha256') END
		FROM generate_series($4::int, $5::int - 1) AS i`, from, to, n, lo, hi)
	// The hourly rollup of the same rows, as the projection keeps it.
	pgtest.Exec(b, h.url, `INSERT INTO rm_compliance_hourly (generation, hour, org_id, type, subject, detail, events, weight, first_position, last_position)
		SELECT 1, date_trunc('hour', recorded_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', coalesce(org_id, ''), type,
		CASE type WHEN 'audit.auth_failed' THEN subject WHEN 'agent.connected' THEN coalesce(attrs->>'node_id', '') ELSE '' END,
		CASE type WHEN 'audit.auth_failed' THEN coalesce(detail, '')
			WHEN 'agent.connected' THEN coalesce(attrs->>'protocol', '') || '|' || coalesce(attrs->>'cipher', '') || '|' || coalesce(attrs->>'kex', '') ELSE '' END,
		count(*), sum(weight), min(position), max(position) FROM rm_compliance_events WHERE position >= 1000000 + $1::bigint AND position < 1000000 + $2::bigint
		GROUP BY 1, 2, 3, 4, 5, 6
		ON CONFLICT (generation, hour, org_id, type, subject, detail) DO UPDATE SET events = rm_compliance_hourly.events + excluded.events,
		weight = rm_compliance_hourly.weight + excluded.weight, first_position = least(rm_compliance_hourly.first_position, excluded.first_position),
		last_position = greatest(rm_compliance_hourly.last_position, excluded.last_position)`, lo, hi)
}

// BenchmarkComplianceRebuild measures the compliance projection applying the log: it appends
// TUNNELPLANE_REPORT_BENCH_RECORDS records (default 20,000: role grants and withdrawals, denials,
// failed logins and organizations, in batches of 500) and rebuilds the projection from position 0.
//
//	go test -run - -bench ComplianceRebuild -benchtime 1x ./compliance/report
func BenchmarkComplianceRebuild(b *testing.B) {
	n := 20_000
	if v := os.Getenv("TUNNELPLANE_REPORT_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	h := newHarness(b)
	ctx := context.Background()
	org := "01a236b7-490a-740b-ba25-996e2250773d"
	meta, _ := json.Marshal(domain.Metadata{Actor: "alice", OrgID: org})
	for lo := 0; lo < n; lo += 500 {
		var batch []eventstore.EventData
		for i := lo; i < min(lo+500, n); i++ {
			var ev domain.Event
			user := "user-" + strconv.Itoa(i/4%300) // granted, then withdrawn, then denied
			switch i % 4 {
			case 0:
				ev = domain.RoleAssigned{OrgID: org, UserID: user, Role: domain.RoleViewer}
			case 1:
				ev = domain.RoleUnassigned{OrgID: org, UserID: user, Role: domain.RoleViewer}
			case 2:
				ev = domain.AccessDenied{ActorID: user, OrgID: org, Action: "create", Resource: "tunnels", Count: 2}
			default:
				ev = domain.AuthFailed{Reason: "bad_signature", Subject: "user-" + strconv.Itoa(i%50), Count: 1, At: time.Now()}
			}
			p, _ := json.Marshal(ev)
			batch = append(batch, eventstore.EventData{Type: ev.EventType(), Payload: p, Metadata: meta})
		}
		if _, err := h.store.Append(ctx, "bench-"+strconv.Itoa(lo), eventstore.NoStream, batch...); err != nil {
			b.Fatal(err)
		}
	}
	h.caughtUp(b)
	b.ResetTimer()
	for range b.N {
		// The audit index (one row per record) is the baseline, rebuilt in the same run.
		rate := map[string]float64{}
		for _, name := range []string{projections.Audit, projections.Compliance} {
			start := time.Now()
			if _, err := h.runner.Rebuild(ctx, name, nil); err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			rate[name] = float64(n) / el.Seconds()
			b.Logf("rebuilt %s over %d records in %s: %.0f records/s", name, n, el.Round(time.Millisecond), rate[name])
		}
		b.ReportMetric(rate[projections.Compliance], "records/s")
		b.ReportMetric(rate[projections.Compliance]/rate[projections.Audit], "ratio_to_audit")
	}
}
