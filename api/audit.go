package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
)

// AuditEntry is one event of the log as the audit index holds it: who did what, where, when.
type AuditEntry struct {
	Position      int64     `json:"position" db:"position"`
	RecordedAt    time.Time `json:"recorded_at" db:"recorded_at"`
	EventID       string    `json:"event_id" db:"event_id"`
	Type          string    `json:"type" db:"type"`
	StreamID      string    `json:"stream_id" db:"stream_id"`
	Actor         *string   `json:"actor,omitempty" db:"actor"`
	OrgID         *string   `json:"org_id,omitempty" db:"org_id"`
	CorrelationID *string   `json:"correlation_id,omitempty" db:"correlation_id"`
	CausationID   *string   `json:"causation_id,omitempty" db:"causation_id"`
	RequestID     *string   `json:"request_id,omitempty" db:"request_id"`
	ClientIP      *string   `json:"client_ip,omitempty" db:"client_ip"`
	UserAgent     *string   `json:"user_agent,omitempty" db:"user_agent"`
}

const auditColumns = `SELECT position, recorded_at, event_id::text AS event_id, type, stream_id, actor, org_id, correlation_id, causation_id,
	request_id, client_ip, user_agent FROM audit`

// searchAudit searches the audit index, newest first. An organization's owners, admins and
// auditors see its events; org "*" (superadmins) searches everything.
func (s *Server) searchAudit(c echo.Context) error {
	q, err := newQuery(c, "org", "actor", "type", "stream", "correlation_id", "request_id", "since", "until", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("audit")
	if err != nil {
		return err
	}
	since, err := q.time("since")
	if err != nil {
		return err
	}
	until, err := q.time("until")
	if err != nil {
		return err
	}
	org, err := s.scope(c, q.str("org"), commands.ObjAudit, commands.ActRead)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Audit); err != nil {
		return err
	}
	var w where
	if org != domain.PlatformOrg {
		w.add("org_id = ?", org)
	}
	for param, column := range map[string]string{"actor": "actor", "type": "type", "stream": "stream_id", "correlation_id": "correlation_id", "request_id": "request_id"} {
		if v := q.str(param); v != "" {
			w.add(column+" = ?", v)
		}
	}
	if since != nil {
		w.add("recorded_at >= ?", *since)
	}
	if until != nil {
		w.add("recorded_at < ?", *until)
	}
	if p.cursor != nil {
		pos, err := p.cursorInt(0)
		if err != nil {
			return err
		}
		w.add("position < ?", pos)
	}
	rows, err := selectRows[AuditEntry](c.Request().Context(), s, "search audit", auditColumns+w.sql()+" ORDER BY position DESC"+w.limit(p), w.args...)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, rows, func(a AuditEntry) []any { return []any{a.Position} }))
}
