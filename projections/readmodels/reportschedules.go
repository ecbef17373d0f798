package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// ReportSchedule is a report schedule (view report_schedules).
type ReportSchedule struct {
	ID        string                    `db:"schedule_id"`
	OrgID     string                    `db:"org_id"` // "" the whole log
	Kind      string                    `db:"kind"`
	Spec      domain.ReportScheduleSpec `db:"spec"`
	CreatedBy string                    `db:"created_by"`
	CreatedAt time.Time                 `db:"created_at"`
	Since     time.Time                 `db:"since"`
	Paused    bool                      `db:"paused"`
	DeletedAt *time.Time                `db:"deleted_at"`
	Version   int64                     `db:"version"`
	Position  int64                     `db:"position"`
}

// ReportScheduleFilter selects schedules of scopes, by id.
type ReportScheduleFilter struct {
	// OrgIDs are the scopes listed ("" the whole log's); none lists nothing.
	OrgIDs []string
	// Kinds, when set, narrows the list; NotKinds leaves kinds out.
	Kinds, NotKinds []string
	IncludeDeleted  bool
	After           string // a schedule id: the page starts after it
	Limit           int
}

const reportScheduleColumns = `SELECT schedule_id::text AS schedule_id, org_id, kind, spec, created_by, created_at, since, paused, deleted_at,
	version, position FROM report_schedules`

// ListReportSchedules lists schedules of the filter's scopes.
func (q *Queries) ListReportSchedules(ctx context.Context, f ReportScheduleFilter) ([]ReportSchedule, error) {
	const op = "list report schedules"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	var w where
	w.add("org_id = ANY(?)", f.OrgIDs)
	if len(f.Kinds) > 0 {
		w.add("kind = ANY(?)", f.Kinds)
	}
	if len(f.NotKinds) > 0 {
		w.add("NOT kind = ANY(?)", f.NotKinds)
	}
	if !f.IncludeDeleted {
		w.add("deleted_at IS NULL")
	}
	if f.After != "" {
		if err := checkID(op, "cursor", f.After); err != nil {
			return nil, err
		}
		w.add("schedule_id > ?::uuid", f.After)
	}
	return selectRows[ReportSchedule](ctx, q, op, reportScheduleColumns+w.sql()+" ORDER BY schedule_id"+w.limit(f.Limit), w.args...)
}

// GetReportSchedule reads one schedule, deleted ones included; an id that is not one is
// domain.ErrNotFound.
func (q *Queries) GetReportSchedule(ctx context.Context, id string) (ReportSchedule, error) {
	if !domain.ValidID(id) {
		return ReportSchedule{}, fmt.Errorf("report schedule %q: %w", id, domain.ErrNotFound)
	}
	return selectOne[ReportSchedule](ctx, q, "get report schedule", "report schedule "+id, reportScheduleColumns+" WHERE schedule_id = $1::uuid", id)
}

// Report is a report the log recorded (view reports), with whether its file is stored here.
type Report struct {
	ID          string     `db:"report_id"`
	OrgID       string     `db:"org_id"`
	Kind        string     `db:"kind"`
	Format      string     `db:"format"`
	From        string     `db:"window_from"`
	To          string     `db:"window_to"`
	SHA256      string     `db:"sha256"`
	Bytes       int64      `db:"bytes"`
	ScheduleID  *string    `db:"schedule_id"`
	DueAt       *time.Time `db:"due_at"`
	Actor       string     `db:"actor"`
	RequestedBy *string    `db:"requested_by"`
	RecordedAt  time.Time  `db:"recorded_at"`
	Position    int64      `db:"position"`
}

// ReportFilter selects stored reports (those whose file report_files holds) of scopes, newest
// first.
type ReportFilter struct {
	OrgIDs []string
	// Kinds, when set, narrows the list; NotKinds leaves kinds out.
	Kinds, NotKinds []string
	ScheduleID      string
	// Before is a report's (recorded_at, id): the page starts after it.
	Before *ReportKey
	Limit  int
}

// ReportKey orders reports.
type ReportKey struct {
	RecordedAt time.Time
	ID         string
}

const reportColumns = `SELECT r.report_id::text AS report_id, r.org_id, r.kind, r.format, r.window_from, r.window_to, r.sha256, r.bytes,
	r.schedule_id::text AS schedule_id, r.due_at, r.actor, r.requested_by, r.recorded_at, r.position
	FROM reports r JOIN report_files f ON f.report_id = r.report_id`

// ListReports lists stored reports of the filter's scopes, newest first.
func (q *Queries) ListReports(ctx context.Context, f ReportFilter) ([]Report, error) {
	const op = "list reports"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	var w where
	w.add("r.org_id = ANY(?)", f.OrgIDs)
	if len(f.Kinds) > 0 {
		w.add("r.kind = ANY(?)", f.Kinds)
	}
	if len(f.NotKinds) > 0 {
		w.add("NOT r.kind = ANY(?)", f.NotKinds)
	}
	if f.ScheduleID != "" {
		if err := checkID(op, "schedule", f.ScheduleID); err != nil {
			return nil, err
		}
		w.add("r.schedule_id = ?::uuid", f.ScheduleID)
	}
	if f.Before != nil {
		if err := checkID(op, "cursor", f.Before.ID); err != nil {
			return nil, err
		}
		w.add("(r.recorded_at, r.report_id) < (?, ?::uuid)", f.Before.RecordedAt, f.Before.ID)
	}
	return selectRows[Report](ctx, q, op, reportColumns+w.sql()+" ORDER BY r.recorded_at DESC, r.report_id DESC"+w.limit(f.Limit), w.args...)
}

// GetStoredReport reads a stored report's record and file: only a report the log recorded and
// whose file is stored; else domain.ErrNotFound.
func (q *Queries) GetStoredReport(ctx context.Context, id string) (Report, []byte, error) {
	if !domain.ValidID(id) {
		return Report{}, nil, fmt.Errorf("report %q: %w", id, domain.ErrNotFound)
	}
	r, err := selectOne[Report](ctx, q, "get report", "report "+id, reportColumns+" WHERE r.report_id = $1::uuid", id)
	if err != nil {
		return Report{}, nil, err
	}
	var file []byte
	if err := q.pool.QueryRow(ctx, `SELECT file FROM report_files WHERE report_id = $1::uuid`, id).Scan(&file); err != nil {
		return Report{}, nil, dbErr("get report", err)
	}
	return r, file, nil
}
