package controlapp_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/scheduler"
)

type scheduleRig struct {
	log   *logtest.Log
	kinds map[string]scheduler.Kind
}

func newScheduleRig(t *testing.T) *scheduleRig {
	t.Helper()
	log := logtest.Start(t, 10*time.Millisecond)
	runner, err := projections.New(projections.Config{Store: log.Store, Projections: projections.All()})
	if err != nil {
		t.Fatal(err)
	}
	if err := runner.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runner.Stop)
	m, err := report.LoadMapping()
	if err != nil {
		t.Fatal(err)
	}
	gen := &report.Generator{Queries: readmodels.New(log.Pool), Log: log.Store, Checkpoint: log.Store.LatestCheckpoint, Mapping: m}
	analytics := &analyticsreport.Generator{Queries: readmodels.New(log.Pool), Log: log.Store}
	return &scheduleRig{log: log, kinds: controlapp.ReportKinds(log.Store, runner, gen, analytics)}
}

func (r *scheduleRig) schedules(t *testing.T, now func() time.Time) *controlapp.ReportSchedules {
	t.Helper()
	s, err := controlapp.NewReportSchedules(controlapp.ReportSchedulesConfig{Store: r.log.Store, Pool: r.log.Pool, Kinds: r.kinds, Poll: 20 * time.Millisecond, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// runs counts the log's report.generated records of a schedule by due time.
func (r *scheduleRig) runs(t *testing.T, scheduleID string) map[time.Time]int {
	t.Helper()
	head, err := r.log.Store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := r.log.Store.ReadType(context.Background(), domain.TypeReportGenerated, 0, head-1, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[time.Time]int{}
	for _, rec := range recs {
		var ev domain.ReportGenerated
		if err := json.Unmarshal(rec.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.ScheduleID == scheduleID {
			out[ev.DueAt.UTC()]++
		}
	}
	return out
}

// One instance makes the scheduled reports; when it stops the other takes over, and each run is
// made once.
func TestOneInstanceMakesScheduledReportsAndAnotherTakesOver(t *testing.T) {
	t.Parallel()
	r := newScheduleRig(t)
	ctx := context.Background()
	id := uuid.NewString()
	ev, err := domain.CreateReportSchedule(domain.NewReportSchedule{ScheduleID: id, CreatedBy: "root", Now: time.Now(),
		Spec: domain.ReportScheduleSpec{Kind: "soc2", Format: "json", Cadence: domain.Cadence{Every: domain.CadenceInterval, IntervalHours: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ev)
	if _, err := r.log.Store.Append(ctx, domain.ReportScheduleStream(id), eventstore.NoStream, eventstore.EventData{Type: domain.TypeReportScheduleCreated, Payload: b}); err != nil {
		t.Fatal(err)
	}
	due1 := ev.Since.Truncate(time.Hour).Add(time.Hour)
	var mu sync.Mutex
	now := due1.Add(time.Minute)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	first := r.schedules(t, clock)
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the first instance leads", first.Leading)
	second := r.schedules(t, clock)
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the first run", func() bool { return r.runs(t, id)[due1] > 0 })
	if second.Leading() {
		t.Fatal("both instances lead")
	}
	first.Stop()
	poll.Until(t, 10*time.Second, "the second instance takes over", second.Leading)
	mu.Lock()
	now = due1.Add(time.Hour + time.Minute)
	mu.Unlock()
	poll.Until(t, 30*time.Second, "the second run", func() bool { return r.runs(t, id)[due1.Add(time.Hour)] > 0 })
	second.Stop()
	for due, n := range r.runs(t, id) {
		if n != 1 {
			t.Fatalf("the run due at %s made %d times", due, n)
		}
	}
}

// Start and Stop in any interleaving: one goroutine at most, Stop waits, no restart.
func TestReportSchedulesStartStopStress(t *testing.T) {
	t.Parallel()
	r := newScheduleRig(t)
	for range 20 {
		s := r.schedules(t, nil)
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(2)
			go func() { defer wg.Done(); _ = s.Start(context.Background()) }()
			go func() { defer wg.Done(); s.Stop() }()
		}
		wg.Wait()
		s.Stop()
		if err := s.Start(context.Background()); err == nil {
			t.Fatal("a stopped instance started again")
		}
		if s.Leading() {
			t.Fatal("a stopped instance leads")
		}
	}
}

// A usage schedule of an organization makes the organization's usage report (analytics kinds
// plug into the scheduler like the compliance ones), recorded once as report.generated with the
// kind, the org and the window the run covered.
func TestAUsageScheduleMakesTheUsageReport(t *testing.T) {
	t.Parallel()
	r := newScheduleRig(t)
	ctx := context.Background()
	org, id := uuid.NewString(), uuid.NewString()
	ev, err := domain.CreateReportSchedule(domain.NewReportSchedule{ScheduleID: id, OrgID: org, CreatedBy: "root", Now: time.Now(),
		Spec: domain.ReportScheduleSpec{Kind: "usage", Format: "csv", Cadence: domain.Cadence{Every: domain.CadenceInterval, IntervalHours: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ev)
	if _, err := r.log.Store.Append(ctx, domain.ReportScheduleStream(id), eventstore.NoStream, eventstore.EventData{Type: domain.TypeReportScheduleCreated, Payload: b}); err != nil {
		t.Fatal(err)
	}
	due := ev.Since.Truncate(time.Hour).Add(time.Hour)
	s := r.schedules(t, func() time.Time { return due.Add(time.Minute) })
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 30*time.Second, "the usage run", func() bool { return r.runs(t, id)[due] > 0 })
	head, err := r.log.Store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := r.log.Store.ReadType(ctx, domain.TypeReportGenerated, 0, head-1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got domain.ReportGenerated
	for _, rec := range recs {
		var e domain.ReportGenerated
		if err := json.Unmarshal(rec.Payload, &e); err == nil && e.ScheduleID == id {
			got = e
		}
	}
	if got.Report != "usage" || got.OrgID != org || got.Format != "csv" || got.SHA256 == "" || got.To != due.UTC().Format(time.RFC3339Nano) {
		t.Fatalf("report.generated of the usage run: %+v (due %s)", got, due)
	}
	if n := r.runs(t, id)[due]; n != 1 {
		t.Fatalf("the usage run was made %d times", n)
	}
}

// A usage, chargeback or capacity schedule needs an organization.
func TestAnAnalyticsScheduleNeedsAnOrg(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"usage", "chargeback", "capacity"} {
		_, err := domain.CreateReportSchedule(domain.NewReportSchedule{ScheduleID: uuid.NewString(), CreatedBy: "root", Now: time.Now(),
			Spec: domain.ReportScheduleSpec{Kind: kind, Format: "csv", Cadence: domain.Cadence{Every: domain.CadenceDaily, Hour: 6}}})
		if err == nil || !strings.Contains(err.Error(), "of an organization") {
			t.Fatalf("%s schedule of the whole log: %v", kind, err)
		}
	}
}
