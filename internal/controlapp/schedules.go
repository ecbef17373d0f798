package controlapp

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/report/scheduler"
)

// reportLockKey is the advisory lock of the instance that makes scheduled reports. The
// scheduler is exactly-once without it (derived report ids, the NoStream append); the lock keeps
// a second replica from rendering every report again only to have its append refused.
const reportLockKey = 0x7470_5250_5453 // "tpRPTS"

// ReportKinds are the kinds of report schedules may make: the compliance frameworks (gen, with
// the compliance read model brought to the log's head first) and the usage forecast. Kinds built
// elsewhere (usage, chargeback, capacity) are added to the map by the assembly.
func ReportKinds(store *eventstore.Store, runner *projections.Runner, gen *report.Generator, analytics *analyticsreport.Generator) map[string]scheduler.Kind {
	catchUp := func(names ...string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			head, err := store.Head(ctx)
			if err != nil || head == 0 {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			return runner.WaitFor(wctx, head-1, names...)
		}
	}
	kinds := map[string]scheduler.Kind{domain.ReportKindForecast: scheduler.Forecast{Log: store}}
	for _, f := range gen.Mapping.FrameworkIDs() {
		kinds[f] = scheduler.Compliance{Generator: gen, CatchUp: catchUp(projections.Compliance)}
	}
	for _, k := range analyticsreport.Kinds() {
		kinds[k] = scheduler.Analytics{Generator: analytics, CatchUp: catchUp(projections.Usage, projections.Nodes)}
	}
	return kinds
}

// KindNames are a kinds map's names, sorted (what the API accepts).
func KindNames(kinds map[string]scheduler.Kind) []string {
	var out []string
	for k := range kinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ReportSchedulesConfig configures the scheduled reports' runner.
type ReportSchedulesConfig struct {
	Store *eventstore.Store
	Pool  *pgxpool.Pool
	Kinds map[string]scheduler.Kind
	// Poll is how often an instance that does not lead tries the lock (default 5s); the
	// scheduler reads its clock at most this far apart too.
	Poll   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// ReportSchedules runs the report scheduler in one control plane instance at a time (the one
// holding reportLockKey); another takes over within Poll when it stops or its lock's connection
// breaks.
type ReportSchedules struct {
	cfg     ReportSchedulesConfig
	life    lifecycle.Lifecycle
	lock    advisoryLock
	leading atomic.Bool
	mgr     *scheduler.Manager
}

// NewReportSchedules checks cfg.
func NewReportSchedules(cfg ReportSchedulesConfig) (*ReportSchedules, error) {
	if cfg.Store == nil || cfg.Pool == nil || len(cfg.Kinds) == 0 {
		return nil, errors.New("report schedules: a store, a pool and the kinds of report are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "report-scheduler")
	return &ReportSchedules{cfg: cfg, lock: advisoryLock{pool: cfg.Pool, key: reportLockKey, what: "report schedules", log: cfg.Logger}}, nil
}

// Start runs until Stop.
func (r *ReportSchedules) Start(ctx context.Context) error {
	return r.life.Start(ctx, "report schedules", func(context.Context) error {
		r.life.Go(r.run)
		return nil
	})
}

// Stop stops the scheduler (a run it was making is made by the next leader, once) and lets go
// of the lock. Safe to call twice.
func (r *ReportSchedules) Stop() { r.life.Stop() }

// Leading reports whether this instance makes the scheduled reports.
func (r *ReportSchedules) Leading() bool { return r.leading.Load() }

func (r *ReportSchedules) run(ctx context.Context) {
	defer r.release()
	for {
		if r.lead(ctx) && r.mgr == nil {
			r.startManager(ctx)
		}
		if !lifecycle.Sleep(ctx, r.cfg.Poll) {
			return
		}
	}
}

func (r *ReportSchedules) startManager(ctx context.Context) {
	m, err := scheduler.New(scheduler.Config{Log: r.cfg.Store, Pool: r.cfg.Pool, Kinds: r.cfg.Kinds, Poll: min(r.cfg.Poll, time.Minute),
		Now: r.cfg.Now, Logger: r.cfg.Logger})
	if err == nil {
		err = m.Start(ctx)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.cfg.Logger.Warn("report scheduler did not start; retrying", "error", err)
		}
		return
	}
	r.mgr = m
}

func (r *ReportSchedules) lead(ctx context.Context) bool {
	ok := r.lock.hold(ctx, r.stopManager)
	r.leading.Store(ok)
	return ok
}

// stopManager stops the scheduler (the lock was lost, or is let go).
func (r *ReportSchedules) stopManager() {
	if r.mgr != nil {
		r.mgr.Stop()
		r.mgr = nil
	}
}

// release stops the scheduler, then lets go of the lock.
func (r *ReportSchedules) release() {
	r.stopManager()
	r.leading.Store(false)
	r.lock.release()
}
