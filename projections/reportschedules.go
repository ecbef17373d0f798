package projections

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ReportSchedules is the view of report schedules (report_schedules) and of the reports the log
// recorded (reports), scheduled or asked for.
const ReportSchedules = "report_schedules"

type reportSchedulesProjection struct{}

func (reportSchedulesProjection) Name() string { return ReportSchedules }
func (reportSchedulesProjection) Tables() []string {
	return []string{"rm_report_schedules", "rm_reports"}
}
func (reportSchedulesProjection) Handles(t string) bool {
	switch t {
	case domain.TypeReportScheduleCreated, domain.TypeReportScheduleUpdated, domain.TypeReportSchedulePaused,
		domain.TypeReportScheduleResumed, domain.TypeReportScheduleDeleted, domain.TypeReportGenerated:
		return true
	}
	return false
}
func (reportSchedulesProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	pos, ver := int64(rec.Position), int64(rec.StreamVersion)
	switch ev := e.(type) {
	case *domain.ReportScheduleCreated:
		spec, err := json.Marshal(ev.ReportScheduleSpec)
		if err != nil {
			return fmt.Errorf("report schedule at %d: %w", rec.Position, err)
		}
		queue(b, rec, `INSERT INTO rm_report_schedules (generation, schedule_id, org_id, kind, spec, created_by, created_at, since, version, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, gen, ev.ScheduleID, ev.OrgID, ev.Kind, spec, ev.CreatedBy, rec.RecordedAt, ev.Since, ver, pos)
	case *domain.ReportScheduleUpdated:
		spec, err := json.Marshal(ev.ReportScheduleSpec)
		if err != nil {
			return fmt.Errorf("report schedule at %d: %w", rec.Position, err)
		}
		queue(b, rec, `UPDATE rm_report_schedules SET spec = $3, since = $4, version = $5, position = $6 WHERE generation = $1 AND schedule_id = $2`,
			gen, ev.ScheduleID, spec, ev.Since, ver, pos)
	case *domain.ReportSchedulePaused:
		queue(b, rec, `UPDATE rm_report_schedules SET paused = true, version = $3, position = $4 WHERE generation = $1 AND schedule_id = $2`,
			gen, ev.ScheduleID, ver, pos)
	case *domain.ReportScheduleResumed:
		queue(b, rec, `UPDATE rm_report_schedules SET paused = false, since = $3, version = $4, position = $5 WHERE generation = $1 AND schedule_id = $2`,
			gen, ev.ScheduleID, ev.Since, ver, pos)
	case *domain.ReportScheduleDeleted:
		queue(b, rec, `UPDATE rm_report_schedules SET deleted_at = $3, version = $4, position = $5 WHERE generation = $1 AND schedule_id = $2`,
			gen, ev.ScheduleID, rec.RecordedAt, ver, pos)
	case *domain.ReportGenerated:
		var schedule, requestedBy *string
		if ev.ScheduleID != "" {
			schedule = &ev.ScheduleID
		}
		if ev.RequestedBy != "" {
			requestedBy = &ev.RequestedBy
		}
		queue(b, rec, `INSERT INTO rm_reports (generation, report_id, org_id, kind, format, window_from, window_to, sha256, bytes, schedule_id,
			due_at, actor, requested_by, recorded_at, position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			gen, ev.ReportID, ev.OrgID, ev.Report, ev.Format, ev.From, ev.To, ev.SHA256, ev.Bytes, schedule, ev.DueAt, metadata(rec).Actor,
			requestedBy, rec.RecordedAt, pos)
	}
	return nil
}
