package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/servicetest"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// clock is a settable time.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time   { return time.Unix(0, c.ns.Load()) }
func (c *clock) Set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func newClock(t time.Time) *clock { c := &clock{}; c.Set(t); return c }
func quiet() *slog.Logger {
	if os.Getenv("TUNNELPLANE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
func root() context.Context {
	return commands.WithActor(context.Background(), commands.Actor{ID: "root"})
}
func within() (context.Context, func()) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

type harness struct {
	t     *testing.T
	env   *servicetest.Env
	clock *clock
	kinds map[string]Kind
}

func newHarness(t *testing.T, start time.Time) *harness {
	t.Helper()
	c := newClock(start)
	env := servicetest.Start(t, c.Now)
	if _, err := env.Service.GrantDirect(root(), commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	m, err := report.LoadMapping()
	if err != nil {
		t.Fatal(err)
	}
	st := env.Store
	gen := &report.Generator{Queries: readmodels.New(env.Pool), Log: st, Checkpoint: st.LatestCheckpoint, Mapping: m, Now: c.Now}
	catchUp := func(ctx context.Context) error {
		head, err := st.Head(ctx)
		if err != nil {
			return err
		}
		return env.Runner.WaitFor(ctx, head-1, projections.Compliance)
	}
	h := &harness{t: t, env: env, clock: c, kinds: map[string]Kind{"soc2": Compliance{Generator: gen, CatchUp: catchUp},
		domain.ReportKindForecast: Forecast{Log: st, Now: c.Now}}}
	return h
}

func (h *harness) manager() *Manager {
	h.t.Helper()
	m, err := New(Config{Log: h.env.Store, Pool: h.env.Pool, Kinds: h.kinds, Retry: 50 * time.Millisecond, Poll: 20 * time.Millisecond, Now: h.clock.Now, Logger: quiet()})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(m.Stop)
	return m
}

func (h *harness) start(m *Manager) {
	h.t.Helper()
	if err := m.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

// generated is the log's report.generated records of a schedule: due time → how many.
func (h *harness) generated(scheduleID string) map[time.Time][]domain.ReportGenerated {
	h.t.Helper()
	ctx, cancel := within()
	defer cancel()
	head, err := h.env.Store.Head(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	recs, err := h.env.Store.ReadType(ctx, domain.TypeReportGenerated, 0, head-1, 10_000)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[time.Time][]domain.ReportGenerated{}
	for _, r := range recs {
		var ev domain.ReportGenerated
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			h.t.Fatal(err)
		}
		if ev.ScheduleID == scheduleID {
			out[ev.DueAt.UTC()] = append(out[ev.DueAt.UTC()], ev)
		}
	}
	return out
}

// waitGenerated polls until the schedule's run due at due is in the log.
func (h *harness) waitGenerated(scheduleID string, due time.Time) domain.ReportGenerated {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if evs := h.generated(scheduleID)[due.UTC()]; len(evs) > 0 {
			return evs[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("the run of %s due at %s was not generated", scheduleID, due)
	return domain.ReportGenerated{}
}

func (h *harness) create(orgID string, spec domain.ReportScheduleSpec) string {
	h.t.Helper()
	res, err := h.env.Service.Handlers.CreateReportSchedule.Handle(root(), commands.CreateReportSchedule{OrgID: orgID, Spec: spec})
	if err != nil {
		h.t.Fatal(err)
	}
	return res.ID
}

var hourly = domain.ReportScheduleSpec{Kind: "soc2", Format: "json", Cadence: domain.Cadence{Every: domain.CadenceInterval, IntervalHours: 1}}

// A scheduled report is generated exactly once across control-plane restarts: a manager stopped
// before the due time and started after it makes the missed run at start; two managers started
// together make it once; a process that stored the file and died before the append leaves a run
// the next one records with that very file; a later manager never makes a recorded run again.
func TestAScheduledRunIsGeneratedExactlyOnceAcrossRestarts(t *testing.T) {
	t.Parallel()
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-10 * time.Hour)
	h := newHarness(t, t0.Add(5*time.Minute))
	id := h.create("", hourly)
	due1, due2, due3 := t0.Add(time.Hour), t0.Add(2*time.Hour), t0.Add(3*time.Hour)

	// Before the due time: nothing to make. Then the process is down while the run falls due.
	h.clock.Set(t0.Add(30 * time.Minute))
	a := h.manager()
	h.start(a)
	a.Stop()
	if n := len(h.generated(id)); n != 0 {
		t.Fatalf("%d runs before the first was due", n)
	}

	// Two control processes start after it: one record.
	h.clock.Set(due1.Add(5 * time.Minute))
	b, c := h.manager(), h.manager()
	var wg sync.WaitGroup
	for _, m := range []*Manager{b, c} {
		wg.Add(1)
		go func() { defer wg.Done(); h.start(m) }()
	}
	wg.Wait()
	first := h.waitGenerated(id, due1)
	if first.RequestedBy != "root" || first.Report != "soc2" || first.ReportID != ReportID(id, due1) {
		t.Fatalf("record: %+v", first)
	}
	wantFrom, wantTo := t0.Format(time.RFC3339Nano), due1.Format(time.RFC3339Nano)
	if first.From != wantFrom || first.To != wantTo {
		t.Fatalf("window %s..%s, want the hour before the due time %s..%s", first.From, first.To, wantFrom, wantTo)
	}
	// Both settle on the run (each's next run is the one after it) before they stop.
	h.clock.Set(due2.Add(5 * time.Minute))
	h.waitGenerated(id, due2)
	b.Stop()
	c.Stop()
	if b.Made()+c.Made() != 2 {
		t.Fatalf("the two managers recorded %d + %d runs, want 2 in all", b.Made(), c.Made())
	}

	// A crash between storing the file and appending its record.
	h.clock.Set(due3.Add(5 * time.Minute))
	d := h.manager()
	crashed := make(chan struct{})
	var once sync.Once
	d.crashAfterStore = func(string) bool { once.Do(func() { close(crashed) }); return true }
	h.start(d)
	select {
	case <-crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("the run was not stored")
	}
	d.Stop()
	if len(h.generated(id)[due3]) != 0 {
		t.Fatal("recorded although the process stopped before the append")
	}
	var storedFile []byte
	var storedSum string
	if err := h.env.Pool.QueryRow(context.Background(), `SELECT file, sha256 FROM report_files WHERE report_id = $1`, ReportID(id, due3)).Scan(&storedFile, &storedSum); err != nil {
		t.Fatal(err)
	}
	e := h.manager()
	h.start(e)
	third := h.waitGenerated(id, due3)
	if third.SHA256 != storedSum {
		t.Fatalf("the record names %s, the file stored before the crash is %s", third.SHA256, storedSum)
	}
	e.Stop()

	// Every run once, each download the file its record hashes.
	q := readmodels.New(h.env.Pool)
	for due, evs := range h.generated(id) {
		if len(evs) != 1 {
			t.Fatalf("the run due at %s was recorded %d times", due, len(evs))
		}
		ctx, cancel := within()
		if err := h.env.Runner.WaitFor(ctx, head(t, h)-1, projections.ReportSchedules); err != nil {
			t.Fatal(err)
		}
		cancel()
		r, file, err := q.GetStoredReport(context.Background(), evs[0].ReportID)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(file)
		if hex.EncodeToString(sum[:]) != evs[0].SHA256 || r.SHA256 != evs[0].SHA256 || r.ScheduleID == nil || *r.ScheduleID != id || r.Actor != Actor {
			t.Fatalf("download of %s: %+v, file hash %x, record %s", evs[0].ReportID, r, sum, evs[0].SHA256)
		}
	}
	if n := len(h.generated(id)); n != 3 {
		t.Fatalf("%d runs, want 3", n)
	}
}

func head(t *testing.T, h *harness) uint64 {
	t.Helper()
	n, err := h.env.Store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Paused, a schedule makes no run (not even later for what fell due meanwhile); resumed, it
// makes the next; deleted, none.
func TestPauseResumeAndDelete(t *testing.T) {
	t.Parallel()
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-10 * time.Hour)
	h := newHarness(t, t0.Add(5*time.Minute))
	id := h.create("", hourly)
	control := h.create("", hourly)
	target := func() commands.ReportScheduleTarget {
		return commands.ReportScheduleTarget{ScheduleID: id, Kind: "soc2"}
	}
	if _, err := h.env.Service.Handlers.PauseReportSchedule.Handle(root(), commands.PauseReportSchedule{ReportScheduleTarget: target()}); err != nil {
		t.Fatal(err)
	}
	// Another kind names no schedule of this id.
	if _, err := h.env.Service.Handlers.PauseReportSchedule.Handle(root(), commands.PauseReportSchedule{
		ReportScheduleTarget: commands.ReportScheduleTarget{ScheduleID: id, Kind: "forecast"}}); err == nil {
		t.Fatal("paused under another kind")
	}
	h.clock.Set(t0.Add(time.Hour + 5*time.Minute))
	m := h.manager()
	h.start(m)
	h.waitGenerated(control, t0.Add(time.Hour))
	m.Stop()
	if n := len(h.generated(id)); n != 0 {
		t.Fatalf("a paused schedule made %d runs", n)
	}

	h.clock.Set(t0.Add(time.Hour + 10*time.Minute))
	if _, err := h.env.Service.Handlers.ResumeReportSchedule.Handle(root(), commands.ResumeReportSchedule{ReportScheduleTarget: target()}); err != nil {
		t.Fatal(err)
	}
	h.clock.Set(t0.Add(2*time.Hour + 5*time.Minute))
	m = h.manager()
	h.start(m)
	h.waitGenerated(id, t0.Add(2*time.Hour))
	h.waitGenerated(control, t0.Add(2*time.Hour))
	m.Stop()
	if got := h.generated(id); len(got) != 1 {
		t.Fatalf("resumed: runs %v, want only the one due after the resume", got)
	}

	if _, err := h.env.Service.Handlers.DeleteReportSchedule.Handle(root(), commands.DeleteReportSchedule{ReportScheduleTarget: target()}); err != nil {
		t.Fatal(err)
	}
	h.clock.Set(t0.Add(3*time.Hour + 5*time.Minute))
	m = h.manager()
	h.start(m)
	h.waitGenerated(control, t0.Add(3*time.Hour))
	m.Stop()
	if got := h.generated(id); len(got) != 1 {
		t.Fatalf("deleted: runs %v", got)
	}
	if _, err := h.env.Service.Handlers.ResumeReportSchedule.Handle(root(), commands.ResumeReportSchedule{ReportScheduleTarget: target()}); err == nil {
		t.Fatal("a deleted schedule resumed")
	}
}

// A manager starts once, stops and waits, whatever the interleaving.
func TestStartStopStress(t *testing.T) {
	t.Parallel()
	h := newHarness(t, time.Now())
	h.create("", hourly)
	for range 20 {
		m := h.manager()
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(2)
			go func() { defer wg.Done(); _ = m.Start(context.Background()) }()
			go func() { defer wg.Done(); m.Stop() }()
		}
		wg.Wait()
		m.Stop()
		if err := m.Start(context.Background()); err == nil {
			t.Fatal("a stopped manager started again")
		}
	}
}
