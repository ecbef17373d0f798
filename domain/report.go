package domain

import "time"

// ReportGenerated records that a report was made from the log: who asked (the record's metadata
// actor), which report, over which window, for which organization ("" the whole log), in which
// format, from which log positions and checkpoint, and the SHA-256 of the file, so a report
// handed to an auditor can be matched with the record of its making.
type ReportGenerated struct {
	ReportID string `json:"report_id"`
	// Report names the report ("soc2", "hipaa", "iso27001", …).
	Report string `json:"report"`
	OrgID  string `json:"org_id,omitempty"`
	// From and To are the window's bounds as the caller gave them (RFC 3339, UTC).
	From   string `json:"from"`
	To     string `json:"to"`
	Format string `json:"format"`
	// Position is the last log position the report's read model had applied; CheckpointSize is
	// the size of the signed checkpoint that covers it.
	Position       uint64 `json:"position"`
	CheckpointSize uint64 `json:"checkpoint_size"`
	SHA256         string `json:"sha256"`
	Bytes          int64  `json:"bytes"`
	// ScheduleID and DueAt name the scheduled run that made the report (none: asked for);
	// RequestedBy is then the schedule's creator (the record's actor is the scheduler).
	ScheduleID  string     `json:"schedule_id,omitempty"`
	DueAt       *time.Time `json:"due_at,omitempty"`
	RequestedBy string     `json:"requested_by,omitempty"`
}

func (ReportGenerated) EventType() string { return TypeReportGenerated }

// ReportStream is the stream of a generated report.
func ReportStream(reportID string) string { return "report-" + reportID }
