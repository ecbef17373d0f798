package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// ReportGenerator makes compliance reports and records them in the log (a *report.Generator).
type ReportGenerator interface {
	Generate(ctx context.Context, req report.Request, format render.Format) (report.Result, error)
}

// Headers of a report response: what report.generated recorded about the file.
const (
	HeaderReportID     = "X-Report-ID"
	HeaderReportSHA256 = "X-Report-SHA256"
	HeaderLogPosition  = "X-Log-Position"
)

// getReport generates a compliance report (soc2, hipaa, iso27001) of a window as a file. Who may
// ask is who may read the audit log: an organization's owners, admins and auditors for it; org
// "*" (the whole log) superadmins. Each report appends report.generated.
func (s *Server) getReport(c echo.Context) error {
	if domain.ValidID(c.Param("report")) {
		return s.downloadReport(c) // a stored report's id, not a kind
	}
	q, err := newQuery(c, "org", "from", "to", "format")
	if err != nil {
		return err
	}
	if s.cfg.Reports == nil {
		return fmt.Errorf("reports: %w", domain.ErrNotFound)
	}
	name := c.Param("report")
	f := q.str("format")
	if f == "" {
		f = string(render.JSON)
	}
	format, err := render.ParseFormat(f)
	if err != nil {
		return badRequest("format", "must be one of html, pdf, xlsx, csv, json")
	}
	var req report.Request
	for field, dst := range map[string]*time.Time{"from": &req.From, "to": &req.To} {
		v := q.str(field)
		if v == "" {
			return invalid(field, "is required: an RFC 3339 time or a date (YYYY-MM-DD)")
		}
		if *dst, err = report.ParseBound(v); err != nil {
			return badRequest(field, "must be an RFC 3339 time or a date (YYYY-MM-DD)")
		}
	}
	if !req.From.Before(req.To) {
		return invalid("to", "must be after from")
	}
	if req.To.Sub(req.From) > report.MaxWindow {
		return invalid("to", "the window is at most %d days", int(report.MaxWindow.Hours()/24))
	}
	org, err := s.scope(c, q.str("org"), commands.ObjAudit, commands.ActRead)
	if err != nil {
		return err
	}
	if org != domain.PlatformOrg {
		req.OrgID = org
	}
	if err := s.catchUp(c.Request().Context(), projections.Compliance); err != nil {
		return err
	}
	req.Framework = name
	req.Actor = commands.ActorFrom(c.Request().Context()).ID
	res, err := s.cfg.Reports.Generate(c.Request().Context(), req, format)
	switch {
	case errors.Is(err, report.ErrUnknownFramework):
		return fmt.Errorf("report %q: %w", truncated(name), domain.ErrNotFound)
	case errors.Is(err, report.ErrNotReady):
		return fmt.Errorf("%w: %w", ErrNotCaughtUp, err)
	case err != nil:
		return err
	}
	h := c.Response().Header()
	h.Set(HeaderReportID, res.ReportID)
	h.Set(HeaderReportSHA256, res.SHA256)
	h.Set(HeaderLogPosition, strconv.FormatInt(res.Provenance.Position, 10))
	h.Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="%s-%s.%s"`, name, res.ReportID, format))
	return c.Blob(http.StatusOK, format.ContentType(), res.File)
}

func truncated(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
