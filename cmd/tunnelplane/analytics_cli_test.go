package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// admin analytics: the time zone and a price sheet set from the CLI, usage read back as a table
// and as JSON with the exact counts the log holds, and the month's chargeback.
func TestAdminAnalyticsCommands(t *testing.T) {
	t.Parallel()
	env := startAdminEnv(t)
	cp := env.cp
	as := func(args ...string) result { return env.must(t, args...) }
	created := as("admin", "orgs", "create", "acme", "--owner", "alice")
	org := strings.Fields(created.stdout)[2]
	as("admin", "analytics", "time-zone", "Europe/Berlin", "--org", "acme")
	next := time.Now().UTC().AddDate(0, 2, 0)
	month := time.Date(next.Year(), next.Month(), 1, 0, 0, 0, 0, time.UTC)
	as("admin", "analytics", "price-sheet", "--org", "acme", "--effective-from", month.Add(-24*time.Hour).Format(time.RFC3339),
		"--per-1k-requests", "0.5", "--per-gb-out", "0.125")

	tunnel := uuid.NewString()
	var evs []eventstore.EventData
	for h := range 30 {
		raw, _ := json.Marshal(domain.UsageRecorded{NodeID: "n", OrgID: org, TunnelID: tunnel, CallerKind: domain.CallerUser, CallerID: "alice",
			WindowStart: month.Add(time.Duration(h) * time.Hour), WindowEnd: month.Add(time.Duration(h)*time.Hour + 10*time.Second), Requests: 1000, BytesOut: 1_000_000_000})
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: raw})
	}
	res, err := cp.Log.Store.Append(context.Background(), domain.NodeFactsStream(uuid.NewString()), eventstore.AnyVersion, evs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Runner.WaitFor(context.Background(), res.LastPosition, "usage"); err != nil {
		t.Fatal(err)
	}
	rng := []string{"--org", "acme", "--from", month.Format(time.RFC3339), "--to", month.Add(48 * time.Hour).Format(time.RFC3339)}
	var rep api.UsageReport
	js := as(append([]string{"admin", "analytics", "usage", "--granularity", "month", "--json"}, rng...)...)
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil || len(rep.Items) != 1 || rep.Items[0].Requests != 30_000 || rep.Items[0].BytesOut != 30_000_000_000 {
		t.Fatalf("usage --json: %v %s", err, js.stdout)
	}
	table := as(append([]string{"admin", "analytics", "usage", "--group-by", "caller", "--granularity", "day"}, rng...)...)
	if !strings.Contains(table.stdout, "user:alice") || !strings.Contains(table.stdout, "Europe/Berlin") {
		t.Fatalf("usage table:\n%s", table.stdout)
	}
	charge := as("admin", "analytics", "chargeback", "--org", "acme", "--month", month.Format("2006-01"))
	// 30,000 requests at 0.5 per 1,000 and 30 GB out at 0.125: 15 + 3.75.
	if !strings.Contains(charge.stdout, "18.75") || !strings.Contains(charge.stdout, "half to even") {
		t.Fatalf("chargeback:\n%s", charge.stdout)
	}
	as("admin", "analytics", "capacity", "--group-by", "org", "--org", "acme", "--from", month.Format(time.RFC3339), "--to", month.Add(48*time.Hour).Format(time.RFC3339))
}
