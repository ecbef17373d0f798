package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Actor is the record's actor of every scheduled report; the schedule's creator is named in
// report.generated's requested_by.
const Actor = "system:report-scheduler"

// MaxFileBytes bounds a stored report (report_files checks it too).
const MaxFileBytes = 64 << 20

// ErrTooLarge: a report's file is larger than MaxFileBytes.
var ErrTooLarge = errors.New("report file too large to store")

// Run is one scheduled run to make.
type Run struct {
	// ReportID is derived from the schedule and the due time: the kind must use it.
	ReportID   string
	ScheduleID string
	OrgID      string // "" the whole log
	Spec       domain.ReportScheduleSpec
	// Due is when the run was due; From and To the window it covers (the previous period).
	Due, From, To time.Time
}

// Prepared is a rendered report and the record that describes it. The scheduler fills in the
// run's fields (report id, schedule, due time, requester) and the file's hash and size.
type Prepared struct {
	File  []byte
	Event domain.ReportGenerated
}

// Kind makes one kind of report for a run. Prepare renders the report and records nothing of
// it (a kind may record other events, such as a capacity warning, under ids derived from
// Run.ReportID, so that a second call appends nothing new).
type Kind interface {
	Prepare(ctx context.Context, run Run) (Prepared, error)
}

// Log is what the scheduler reads and appends (an *eventstore.Store).
type Log interface {
	ReadAndFollow(ctx context.Context, types []string, retry time.Duration, onRetry func(err error, from uint64),
		fold func([]eventstore.Record) error) (func(context.Context), error)
	Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error)
}

// Config wires the manager.
type Config struct {
	Log  Log
	Pool *pgxpool.Pool
	// Kinds maps a schedule's kind to what makes it. A schedule of a kind not here waits (and
	// is logged) until a process that has it runs.
	Kinds map[string]Kind
	// Retry is how long a failed run waits before it is tried again. Default 30s.
	Retry time.Duration
	// Poll is the longest the manager sleeps before it reads the clock again (a clock that
	// jumps, a test's clock). Default 1m.
	Poll time.Duration
	// KeepRuns is how many of each schedule's newest files are kept. Default 100.
	KeepRuns int
	Now      func() time.Time
	Logger   *slog.Logger
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Log == nil {
		errs = append(errs, errors.New("report scheduler: Log is required"))
	}
	if c.Pool == nil {
		errs = append(errs, errors.New("report scheduler: Pool is required"))
	}
	if c.Retry < 0 {
		errs = append(errs, errors.New("report scheduler: Retry is negative"))
	}
	if c.Poll < 0 {
		errs = append(errs, errors.New("report scheduler: Poll is negative"))
	}
	if c.KeepRuns < 0 {
		errs = append(errs, errors.New("report scheduler: KeepRuns is negative"))
	}
	for k, v := range c.Kinds {
		if v == nil {
			errs = append(errs, fmt.Errorf("report scheduler: kind %q has no generator", k))
		}
	}
	return errors.Join(errs...)
}

// Manager makes scheduled reports.
type Manager struct {
	cfg  Config
	life lifecycle.Lifecycle

	mu        sync.Mutex
	schedules map[string]*domain.ReportSchedule // not deleted, as far as read
	lastDue   map[string]time.Time              // schedule id → newest run the log recorded
	failed    map[string]time.Time              // schedule id → not before (a failed run)
	warned    map[string]bool                   // kinds missing, logged once
	wake      chan struct{}
	made      int

	// crashAfterStore, set only by tests, is asked after a run's file is stored whether to stop
	// there as a crashed process would (no append).
	crashAfterStore func(reportID string) bool
}

// New validates cfg.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Retry == 0 {
		cfg.Retry = 30 * time.Second
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Minute
	}
	if cfg.KeepRuns == 0 {
		cfg.KeepRuns = 100
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, schedules: map[string]*domain.ReportSchedule{}, lastDue: map[string]time.Time{},
		failed: map[string]time.Time{}, warned: map[string]bool{}, wake: make(chan struct{}, 1)}, nil
}

var types = []string{domain.TypeReportScheduleCreated, domain.TypeReportScheduleUpdated, domain.TypeReportSchedulePaused,
	domain.TypeReportScheduleResumed, domain.TypeReportScheduleDeleted, domain.TypeReportGenerated}

// Start reads the schedules and recorded runs up to the log's head, then follows the log and
// makes runs until Stop. Runs due while no process ran are made at once, each once.
func (m *Manager) Start(ctx context.Context) error {
	return m.life.Start(ctx, "report scheduler", func(runCtx context.Context) error {
		follow, err := m.cfg.Log.ReadAndFollow(ctx, types, m.cfg.Retry, func(err error, from uint64) {
			m.cfg.Logger.Warn("report scheduler: following the log failed; resuming", "error", err, "from", from)
		}, m.fold)
		if err != nil {
			return fmt.Errorf("report scheduler: %w", err)
		}
		m.life.Go(follow)
		m.life.Go(m.fire)
		return nil
	})
}

// Stop ends the manager and waits for it. Safe to call twice.
func (m *Manager) Stop() { m.life.Stop() }

// Made is how many runs this manager recorded (a run another process recorded first is not
// counted).
func (m *Manager) Made() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.made
}

// fold takes schedule events and recorded reports in log order.
func (m *Manager) fold(recs []eventstore.Record) error {
	if len(recs) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		e, err := domain.Decode(r.Type, r.Payload)
		if err != nil {
			return fmt.Errorf("report scheduler at %d: %w", r.Position, err)
		}
		switch ev := e.(type) {
		case *domain.ReportGenerated:
			if ev.ScheduleID != "" && ev.DueAt != nil && ev.DueAt.After(m.lastDue[ev.ScheduleID]) {
				m.lastDue[ev.ScheduleID] = *ev.DueAt
				delete(m.failed, ev.ScheduleID)
			}
		case *domain.ReportScheduleCreated:
			k := &domain.ReportSchedule{}
			if err := k.Apply(ev, r.StreamVersion); err != nil {
				return err
			}
			m.schedules[ev.ScheduleID] = k
		default:
			id := scheduleIDOf(e)
			k, ok := m.schedules[id]
			if !ok {
				continue
			}
			if err := k.Apply(e, r.StreamVersion); err != nil {
				return err
			}
			delete(m.failed, id) // a changed schedule is tried at once
			if k.Deleted() {
				delete(m.schedules, id)
				delete(m.lastDue, id)
			}
		}
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return nil
}

func scheduleIDOf(e domain.Event) string {
	switch ev := e.(type) {
	case *domain.ReportScheduleUpdated:
		return ev.ScheduleID
	case *domain.ReportSchedulePaused:
		return ev.ScheduleID
	case *domain.ReportScheduleResumed:
		return ev.ScheduleID
	case *domain.ReportScheduleDeleted:
		return ev.ScheduleID
	}
	return ""
}

type dueRun struct {
	sched *domain.ReportSchedule
	due   time.Time
}

// fire waits for the next due run and makes every run due, oldest first.
func (m *Manager) fire(ctx context.Context) {
	for {
		now := m.cfg.Now()
		var due []dueRun
		next := time.Time{}
		m.mu.Lock()
		for id, k := range m.schedules {
			d := k.NextDue(m.lastDue[id])
			if d.IsZero() {
				continue
			}
			if nb := m.failed[id]; nb.After(now) {
				d = nb
			} else if !d.After(now) {
				if _, ok := m.cfg.Kinds[k.Spec().Kind]; ok {
					due = append(due, dueRun{k, d})
					continue
				}
				if !m.warned[k.Spec().Kind] {
					m.warned[k.Spec().Kind] = true
					m.cfg.Logger.Warn("report scheduler: no generator for this kind here; its runs wait", "kind", k.Spec().Kind, "schedule_id", id)
				}
				continue
			}
			if next.IsZero() || d.Before(next) {
				next = d
			}
		}
		m.mu.Unlock()
		sort.Slice(due, func(i, j int) bool { return due[i].due.Before(due[j].due) })
		for _, r := range due {
			if ctx.Err() != nil {
				return
			}
			m.run(ctx, r.sched, r.due)
		}
		if len(due) > 0 {
			continue // made runs may have made the next ones due
		}
		wait := m.cfg.Poll
		if !next.IsZero() {
			wait = min(wait, next.Sub(m.cfg.Now()))
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-m.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// ReportID is the id of a schedule's run due at due.
func ReportID(scheduleID string, due time.Time) string {
	return uuid.NewSHA1(runNamespace, []byte(scheduleID+"\x00"+due.UTC().Format(time.RFC3339Nano))).String()
}

var runNamespace = uuid.MustParse("5b0e7f0e-2d0c-4c59-9d8e-3c1f4a7b6a21")

// run makes one run: the stored file if a process stored it already, else a new rendering
// stored now; then its record.
func (m *Manager) run(ctx context.Context, k *domain.ReportSchedule, due time.Time) {
	id := ReportID(k.ID(), due)
	log := m.cfg.Logger.With("schedule_id", k.ID(), "report_id", id, "due_at", due, "correlation_id", k.ID())
	err := m.make(ctx, k, due, id)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err == nil:
		if due.After(m.lastDue[k.ID()]) {
			m.lastDue[k.ID()] = due
		}
	case ctx.Err() != nil:
	default:
		m.failed[k.ID()] = m.cfg.Now().Add(m.cfg.Retry)
		log.Warn("scheduled report failed; retrying", "error", err, "retry_in", m.cfg.Retry.String())
	}
}

var errCrashed = errors.New("stopped after storing, as a test asked")

func (m *Manager) make(ctx context.Context, k *domain.ReportSchedule, due time.Time, id string) error {
	event, err := m.stored(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		if event, err = m.render(ctx, k, due, id); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("read stored report: %w", err)
	}
	if m.crashAfterStore != nil && m.crashAfterStore(id) {
		return errCrashed
	}
	meta, err := json.Marshal(domain.Metadata{Actor: Actor, OrgID: k.OrgID(), Command: "GenerateScheduledReport", CorrelationID: k.ID(),
		OccurredAt: m.cfg.Now().UTC()})
	if err != nil {
		return err
	}
	res, err := m.cfg.Log.Append(ctx, domain.ReportStream(id), eventstore.NoStream,
		eventstore.EventData{ID: uuid.MustParse(id), Type: domain.TypeReportGenerated, Payload: event, Metadata: meta})
	switch {
	case errors.Is(err, eventstore.ErrWrongExpectedVersion) || errors.Is(err, eventstore.ErrDuplicateEventID):
		return nil // recorded already, by another process or before a crash
	case err != nil:
		return fmt.Errorf("record the report: %w", err)
	}
	m.mu.Lock()
	m.made++
	m.mu.Unlock()
	m.cfg.Logger.Info("scheduled report generated", "schedule_id", k.ID(), "report_id", id, "due_at", due, "kind", k.Spec().Kind,
		"position", res.LastPosition, "correlation_id", k.ID())
	m.prune(ctx, k.ID())
	return nil
}

// stored is the record payload of a run's stored file (pgx.ErrNoRows: none).
func (m *Manager) stored(ctx context.Context, id string) ([]byte, error) {
	var event []byte
	err := m.cfg.Pool.QueryRow(ctx, `SELECT event FROM report_files WHERE report_id = $1`, id).Scan(&event)
	return event, err
}

// render makes the run's report and stores it unless another process stored one first; it
// returns the stored record's payload, whichever rendering it describes.
func (m *Manager) render(ctx context.Context, k *domain.ReportSchedule, due time.Time, id string) ([]byte, error) {
	spec := k.Spec()
	loc, err := domain.LoadTimeZone(spec.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", spec.TimeZone, err)
	}
	from, to := spec.Cadence.Window(due, loc)
	run := Run{ReportID: id, ScheduleID: k.ID(), OrgID: k.OrgID(), Spec: spec, Due: due, From: from, To: to}
	p, err := m.cfg.Kinds[spec.Kind].Prepare(ctx, run)
	if err != nil {
		return nil, fmt.Errorf("make %s report: %w", spec.Kind, err)
	}
	if len(p.File) > MaxFileBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(p.File), MaxFileBytes)
	}
	sum := sha256.Sum256(p.File)
	ev := p.Event
	dueUTC := due.UTC()
	ev.ReportID, ev.Report, ev.OrgID, ev.Format = id, spec.Kind, k.OrgID(), spec.Format
	ev.ScheduleID, ev.DueAt, ev.RequestedBy = k.ID(), &dueUTC, k.CreatedBy()
	ev.SHA256, ev.Bytes = hex.EncodeToString(sum[:]), int64(len(p.File))
	event, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	if _, err := m.cfg.Pool.Exec(ctx, `INSERT INTO report_files (report_id, schedule_id, due_at, org_id, kind, format, sha256, event, file)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
		id, k.ID(), dueUTC, k.OrgID(), spec.Kind, spec.Format, ev.SHA256, event, p.File); err != nil {
		return nil, fmt.Errorf("store the report: %w", err)
	}
	return m.stored(ctx, id)
}

// prune keeps the newest KeepRuns files of a schedule (the log keeps every record).
func (m *Manager) prune(ctx context.Context, scheduleID string) {
	if _, err := m.cfg.Pool.Exec(ctx, `DELETE FROM report_files WHERE schedule_id = $1 AND report_id NOT IN
		(SELECT report_id FROM report_files WHERE schedule_id = $1 ORDER BY due_at DESC LIMIT $2)`, scheduleID, m.cfg.KeepRuns); err != nil && ctx.Err() == nil {
		m.cfg.Logger.Warn("report scheduler: pruning old files failed", "schedule_id", scheduleID, "error", err)
	}
}
