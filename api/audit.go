package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// AuditEntry is one event of the log as the audit index holds it: who did what, where, when.
type AuditEntry struct {
	Position      int64     `json:"position"`
	RecordedAt    time.Time `json:"recorded_at"`
	EventID       string    `json:"event_id"`
	Type          string    `json:"type"`
	StreamID      string    `json:"stream_id"`
	Actor         *string   `json:"actor,omitempty"`
	OrgID         *string   `json:"org_id,omitempty"`
	CorrelationID *string   `json:"correlation_id,omitempty"`
	CausationID   *string   `json:"causation_id,omitempty"`
	RequestID     *string   `json:"request_id,omitempty"`
	ClientIP      *string   `json:"client_ip,omitempty"`
	UserAgent     *string   `json:"user_agent,omitempty"`
}

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
	f := readmodels.AuditFilter{Actor: q.str("actor"), Type: q.str("type"), StreamID: q.str("stream"), CorrelationID: q.str("correlation_id"),
		RequestID: q.str("request_id"), Since: since, Until: until, Limit: p.limit + 1}
	if org == domain.PlatformOrg {
		f.AllOrgs = true
	} else {
		f.OrgID = org
	}
	if p.cursor != nil {
		pos, err := p.cursorInt(0)
		if err != nil {
			return err
		}
		f.After = &readmodels.AuditKey{Position: pos}
	}
	rows, err := s.cfg.ReadModels.SearchAudit(c.Request().Context(), f)
	if err != nil {
		return err
	}
	entries := convert(rows, func(a readmodels.AuditEntry) AuditEntry { return AuditEntry(a) })
	if err := s.openAudit(c.Request().Context(), entries); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, entries,
		func(a AuditEntry) []any { return []any{a.Position} }))
}
