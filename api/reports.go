package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/report/record"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// AnalyticsReportGenerator makes usage, chargeback and capacity reports and records them in the
// log (an *analyticsreport.Generator).
type AnalyticsReportGenerator interface {
	Generate(ctx context.Context, req analyticsreport.Request, format render.Format) (record.Result, error)
}

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

// getReport generates a report of a window as a file: a compliance report (soc2, hipaa,
// iso27001) or an analytics report (usage, chargeback, capacity: getAnalyticsReport). Who may
// ask for a compliance report is who may read the audit log: an organization's owners, admins
// and auditors for it; org "*" (the whole log) superadmins. Each report appends
// report.generated.
func (s *Server) getReport(c echo.Context) error {
	if domain.ValidID(c.Param("report")) {
		return s.downloadReport(c) // a stored report's id, not a kind
	}
	name := c.Param("report")
	if analyticsreport.IsKind(name) {
		return s.getAnalyticsReport(c, name)
	}
	q, err := newQuery(c, "org", "from", "to", "format")
	if err != nil {
		return err
	}
	if s.cfg.Reports == nil {
		return fmt.Errorf("reports: %w", domain.ErrNotFound)
	}
	format, err := reportFormat(q)
	if err != nil {
		return err
	}
	var req report.Request
	if req.From, req.To, err = reportWindow(q, report.MaxWindow); err != nil {
		return err
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
	return sendReport(c, name, format, res)
}

// getAnalyticsReport generates a usage, chargeback or capacity report of an organization's
// window (a chargeback report: or of a local month). Who may ask is who may read its analytics:
// its owners, admins and auditors; superadmins for any organization.
func (s *Server) getAnalyticsReport(c echo.Context, kind string) error {
	params := []string{"org", "from", "to", "format"}
	if kind == analyticsreport.KindChargeback {
		params = append(params, "month")
	}
	q, err := newQuery(c, params...)
	if err != nil {
		return err
	}
	if s.cfg.AnalyticsReports == nil {
		return fmt.Errorf("reports: %w", domain.ErrNotFound)
	}
	format, err := reportFormat(q)
	if err != nil {
		return err
	}
	req := analyticsreport.Request{Kind: kind, Month: q.str("month")}
	if req.Month != "" {
		if q.str("from") != "" || q.str("to") != "" {
			return invalid("month", "month or from and to, not both")
		}
		if t, err := time.Parse("2006-01", req.Month); err != nil || t.Year() < 2000 || t.Year() > 9998 {
			return badRequest("month", "must be a month like 2026-03")
		}
	} else if req.From, req.To, err = reportWindow(q, analyticsreport.MaxWindow); err != nil {
		return err
	}
	if req.OrgID, err = s.orgFor(c, q.str("org"), commands.ObjAnalytics, commands.ActRead, true); err != nil {
		return err
	}
	if err := s.catchUp(c.Request().Context(), projections.Usage, projections.Nodes); err != nil {
		return err
	}
	req.Actor = commands.ActorFrom(c.Request().Context()).ID
	res, err := s.cfg.AnalyticsReports.Generate(c.Request().Context(), req, format)
	switch {
	case errors.Is(err, analyticsreport.ErrNotReady):
		return fmt.Errorf("%w: %w", ErrNotCaughtUp, err)
	case errors.Is(err, analyticsreport.ErrRequest):
		return invalid("to", "the window cannot be reported: from before to, at most %d days, within the years 2000..9998", int(analyticsreport.MaxWindow.Hours()/24))
	case err != nil:
		return err
	}
	return sendReport(c, kind, format, res)
}

// reportFormat is the format parameter (default json).
func reportFormat(q *query) (render.Format, error) {
	f := q.str("format")
	if f == "" {
		f = string(render.JSON)
	}
	format, err := render.ParseFormat(f)
	if err != nil {
		return "", badRequest("format", "must be one of html, pdf, xlsx, csv, json")
	}
	return format, nil
}

// reportWindow is the from and to parameters, required, from before to, at most longest apart.
func reportWindow(q *query, longest time.Duration) (from, to time.Time, err error) {
	for field, dst := range map[string]*time.Time{"from": &from, "to": &to} {
		v := q.str(field)
		if v == "" {
			return from, to, invalid(field, "is required: an RFC 3339 time or a date (YYYY-MM-DD)")
		}
		if *dst, err = report.ParseBound(v); err != nil {
			return from, to, badRequest(field, "must be an RFC 3339 time or a date (YYYY-MM-DD)")
		}
	}
	if !from.Before(to) {
		return from, to, invalid("to", "must be after from")
	}
	if to.Sub(from) > longest {
		return from, to, invalid("to", "the window is at most %d days", int(longest.Hours()/24))
	}
	return from, to, nil
}

// sendReport answers a generated report: the file, with what report.generated recorded in the
// headers.
func sendReport(c echo.Context, name string, format render.Format, res record.Result) error {
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
