package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/scheduler"
)

// A schedule made through the API runs in the report scheduler; its report is listed for the
// organization's readers and downloads as the file report.generated hashed; another
// organization's owner and the org's operator are refused the schedule, the list and the file.
func TestScheduledReportThroughTheAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withReports(t))
	root := e.superadmin()
	acme := e.createOrg(root, "acme", "alice")
	e.createOrg(root, "globex", "bob")
	e.grant(acme, "op", domain.RoleOperator)
	alice, bob, op := e.token("alice"), e.token("bob"), e.token("op")

	e.must(422, "POST", "/api/v1/report-schedules?org=acme", alice, map[string]any{"kind": "pci", "format": "json",
		"cadence": map[string]any{"every": "daily"}}).problem(t)
	e.must(422, "POST", "/api/v1/report-schedules?org=acme", alice, map[string]any{"kind": "soc2", "format": "json",
		"cadence": map[string]any{"every": "weekly", "hour": 25}}).problem(t)
	e.must(403, "POST", "/api/v1/report-schedules?org=acme", op, scheduleBody(1)).problem(t)
	id := e.write(201, "POST", "/api/v1/report-schedules?org=acme", alice, map[string]any{"kind": "soc2", "format": "json",
		"cadence": map[string]any{"every": "interval", "interval_hours": 1}}).ID
	var sched api.ReportSchedule
	e.must(200, "GET", "/api/v1/report-schedules/"+id+"?wait_for=latest", alice, nil).decode(t, &sched)
	if sched.State != "active" || sched.OrgID != acme || sched.CreatedBy != "alice" || sched.NextDueAt == nil || sched.TimeZone != "UTC" {
		t.Fatalf("schedule: %+v", sched)
	}
	e.must(403, "GET", "/api/v1/report-schedules/"+id, bob, nil).problem(t)
	e.must(403, "PATCH", "/api/v1/report-schedules/"+id, bob, map[string]any{"format": "pdf"}).problem(t)
	e.must(403, "POST", "/api/v1/report-schedules/"+id+"/pause", op, nil).problem(t)
	e.must(404, "GET", "/api/v1/report-schedules/"+id+"?org=globex", root, nil).problem(t)

	// The scheduler, two hours on: the run due after the schedule started is made.
	m, err := report.LoadMapping()
	if err != nil {
		t.Fatal(err)
	}
	gen := &report.Generator{Queries: readmodels.New(e.pool), Log: e.store, Checkpoint: e.store.LatestCheckpoint, Mapping: m}
	catchUp := func(ctx context.Context) error {
		return e.runner.WaitFor(ctx, head(t, e.store)-1, projections.Compliance)
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	mgr, err := scheduler.New(scheduler.Config{Log: e.store, Pool: e.pool, Kinds: map[string]scheduler.Kind{"soc2": scheduler.Compliance{Generator: gen, CatchUp: catchUp}},
		Now: later, Poll: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Stop)
	var list api.List[api.StoredReport]
	deadline := time.Now().Add(30 * time.Second)
	for len(list.Items) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no scheduled report listed")
		}
		e.must(200, "GET", "/api/v1/reports?org=acme&schedule_id="+id, alice, nil).decode(t, &list)
	}
	got := list.Items[0]
	if got.ScheduleID == nil || *got.ScheduleID != id || got.Actor != scheduler.Actor || got.RequestedBy == nil || *got.RequestedBy != "alice" {
		t.Fatalf("listed: %+v", got)
	}
	file := e.must(200, "GET", "/api/v1/reports/"+got.ID, alice, nil)
	sum := sha256.Sum256(file.body)
	// The log's record of the report names the same hash.
	recs, err := e.store.ReadStream(context.Background(), domain.ReportStream(got.ID), 1, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("report.generated of %s: %v %v", got.ID, recs, err)
	}
	ev, err := domain.Decode(recs[0].Type, recs[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	rg := ev.(*domain.ReportGenerated)
	if hex.EncodeToString(sum[:]) != rg.SHA256 || file.header.Get(api.HeaderReportSHA256) != rg.SHA256 || got.SHA256 != rg.SHA256 || rg.ScheduleID != id {
		t.Fatalf("downloaded %x; header %s; listed %s; recorded %+v", sum, file.header.Get(api.HeaderReportSHA256), got.SHA256, rg)
	}
	e.must(403, "GET", "/api/v1/reports/"+got.ID, bob, nil).problem(t)
	e.must(403, "GET", "/api/v1/reports/"+got.ID, op, nil).problem(t)
	e.must(403, "GET", "/api/v1/reports?org=acme", bob, nil).problem(t)
	e.must(200, "GET", "/api/v1/reports/"+got.ID, root, nil)
	e.must(404, "GET", "/api/v1/reports/"+"0190a6c4-0000-7000-8000-000000000000", alice, nil).problem(t)
	var none api.List[api.StoredReport]
	e.must(200, "GET", "/api/v1/reports?org=globex", bob, nil).decode(t, &none)
	if len(none.Items) != 0 {
		t.Fatalf("globex lists %+v", none.Items)
	}

	// Pause, resume and delete through the API.
	e.write(200, "POST", "/api/v1/report-schedules/"+id+"/pause", alice, nil)
	sched = api.ReportSchedule{}
	e.must(200, "GET", "/api/v1/report-schedules/"+id+"?wait_for=latest", alice, nil).decode(t, &sched)
	if sched.State != "paused" || sched.NextDueAt != nil {
		t.Fatalf("paused: %+v", sched)
	}
	e.write(200, "POST", "/api/v1/report-schedules/"+id+"/resume", alice, nil)
	e.write(200, "DELETE", "/api/v1/report-schedules/"+id, alice, nil)
	e.must(200, "GET", "/api/v1/report-schedules/"+id+"?wait_for=latest", alice, nil).decode(t, &sched)
	if sched.State != "deleted" {
		t.Fatalf("deleted: %+v", sched)
	}
	var left api.List[api.ReportSchedule]
	e.must(200, "GET", "/api/v1/report-schedules?org=acme", alice, nil).decode(t, &left)
	if len(left.Items) != 0 {
		t.Fatalf("listed after delete: %+v", left.Items)
	}
}
