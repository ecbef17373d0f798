package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// ReportScheduleReader reads report schedules and the reports the log recorded (projection
// report_schedules) with the stored files of scheduled ones.
type ReportScheduleReader interface {
	ListReportSchedules(ctx context.Context, f readmodels.ReportScheduleFilter) ([]readmodels.ReportSchedule, error)
	GetReportSchedule(ctx context.Context, id string) (readmodels.ReportSchedule, error)
	ListReports(ctx context.Context, f readmodels.ReportFilter) ([]readmodels.Report, error)
	GetStoredReport(ctx context.Context, id string) (readmodels.Report, []byte, error)
}

// DefaultScheduleKinds are the kinds of report a schedule may make when Config.ScheduleKinds is
// not set.
var DefaultScheduleKinds = []string{"soc2", "hipaa", "iso27001", domain.ReportKindForecast}

// ReportScheduleInput is the body of POST /report-schedules.
type ReportScheduleInput struct {
	// Org is an organization's name or id, or "*" for the whole log (superadmins).
	Org      string               `json:"org,omitempty"`
	Kind     string               `json:"kind"`
	Format   string               `json:"format"`
	TimeZone string               `json:"time_zone,omitempty"`
	Cadence  domain.Cadence       `json:"cadence"`
	Forecast *domain.ForecastSpec `json:"forecast,omitempty"`
}

// ReportSchedulePatch is the body of PATCH /report-schedules/{id}: what is given replaces the
// schedule's (the kind stays).
type ReportSchedulePatch struct {
	Format   *string              `json:"format,omitempty"`
	TimeZone *string              `json:"time_zone,omitempty"`
	Cadence  *domain.Cadence      `json:"cadence,omitempty"`
	Forecast *domain.ForecastSpec `json:"forecast,omitempty"`
}

// ReportSchedule is a schedule as the API shows it.
type ReportSchedule struct {
	ID    string `json:"id"`
	OrgID string `json:"org_id,omitempty"`
	// Platform: the whole log's (org "*").
	Platform  bool                 `json:"platform"`
	Kind      string               `json:"kind"`
	Format    string               `json:"format"`
	TimeZone  string               `json:"time_zone"`
	Cadence   domain.Cadence       `json:"cadence"`
	Forecast  *domain.ForecastSpec `json:"forecast,omitempty"`
	State     string               `json:"state"` // active, paused, deleted
	CreatedBy string               `json:"created_by"`
	CreatedAt time.Time            `json:"created_at"`
	Since     time.Time            `json:"since"`
	// NextDueAt is the next run due from now on (none when paused or deleted).
	NextDueAt *time.Time `json:"next_due_at,omitempty"`
	Version   int64      `json:"version"`
	Position  int64      `json:"position"`
}

// StoredReport is a report the log recorded whose file is stored (a scheduled one).
type StoredReport struct {
	ID          string     `json:"id"`
	OrgID       string     `json:"org_id,omitempty"`
	Kind        string     `json:"kind"`
	Format      string     `json:"format"`
	From        string     `json:"from"`
	To          string     `json:"to"`
	SHA256      string     `json:"sha256"`
	Bytes       int64      `json:"bytes"`
	ScheduleID  *string    `json:"schedule_id,omitempty"`
	DueAt       *time.Time `json:"due_at,omitempty"`
	Actor       string     `json:"actor"`
	RequestedBy *string    `json:"requested_by,omitempty"`
	RecordedAt  time.Time  `json:"recorded_at"`
	Position    int64      `json:"position"`
}

func (s *Server) reportScheduleOf(k readmodels.ReportSchedule) ReportSchedule {
	out := ReportSchedule{ID: k.ID, OrgID: k.OrgID, Platform: k.OrgID == "", Kind: k.Kind, Format: k.Spec.Format, TimeZone: k.Spec.TimeZone,
		Cadence: k.Spec.Cadence, Forecast: k.Spec.Forecast, State: "active", CreatedBy: k.CreatedBy, CreatedAt: k.CreatedAt, Since: k.Since,
		Version: k.Version, Position: k.Position}
	switch {
	case k.DeletedAt != nil:
		out.State = "deleted"
	case k.Paused:
		out.State = "paused"
	default:
		if loc, err := domain.LoadTimeZone(k.Spec.TimeZone); err == nil {
			after := k.Since
			if now := s.cfg.Now(); now.After(after) {
				after = now
			}
			if next := k.Spec.Cadence.Next(after, loc); !next.IsZero() {
				out.NextDueAt = &next
			}
		}
	}
	if out.TimeZone == "" {
		out.TimeZone = "UTC"
	}
	return out
}

func storedReportOf(r readmodels.Report) StoredReport {
	return StoredReport{ID: r.ID, OrgID: r.OrgID, Kind: r.Kind, Format: r.Format, From: r.From, To: r.To, SHA256: r.SHA256, Bytes: r.Bytes,
		ScheduleID: r.ScheduleID, DueAt: r.DueAt, Actor: r.Actor, RequestedBy: r.RequestedBy, RecordedAt: r.RecordedAt, Position: r.Position}
}

func (s *Server) scheduleKinds() []string {
	if len(s.cfg.ScheduleKinds) > 0 {
		return s.cfg.ScheduleKinds
	}
	return DefaultScheduleKinds
}

// reportScope resolves the scope of a report of kind and checks the caller may read such
// reports there: "*" is the whole log (returned as ""), else an organization.
func (s *Server) reportScope(c echo.Context, given, kind string) (string, error) {
	perm := commands.ReportReadPermission(given, kind)
	if given == domain.PlatformOrg {
		return "", s.platform(c, perm.Object, perm.Action)
	}
	return s.orgFor(c, given, perm.Object, perm.Action, true)
}

// readableKinds resolves a list's scope and the kinds of report the caller may read there:
// include (nil: every kind but exclude) and exclude. A caller who may read none is refused
// (403, audited).
func (s *Server) readableKinds(c echo.Context, given string) (org string, include, exclude []string, err error) {
	ctx := c.Request().Context()
	compliance := commands.ComplianceReportKinds()
	if given == domain.PlatformOrg {
		if err := s.platform(c, commands.ObjAudit, commands.ActRead); err != nil {
			return "", nil, nil, err
		}
		return "", nil, nil, nil
	}
	if org, err = s.orgFor(c, given, commands.ObjAudit, commands.ActRead, false); err != nil {
		return "", nil, nil, err
	}
	authz, actor := s.cfg.Service.Authorizer(), commands.ActorFrom(ctx).ID
	audit, err := authz.Allowed(ctx, actor, commands.ReportReadPermission(org, compliance[0]))
	if err != nil {
		return "", nil, nil, err
	}
	analytics, err := authz.Allowed(ctx, actor, commands.ReportReadPermission(org, domain.ReportKindForecast))
	if err != nil {
		return "", nil, nil, err
	}
	switch {
	case audit && analytics:
		return org, nil, nil, nil
	case audit:
		return org, compliance, nil, nil
	case analytics:
		return org, nil, compliance, nil
	}
	return "", nil, nil, authz.Check(ctx, commands.ReportReadPermission(org, compliance[0]))
}

func (s *Server) createReportSchedule(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in ReportScheduleInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if !slices.Contains(s.scheduleKinds(), in.Kind) {
		return invalid("kind", "must be one of %s", strings.Join(s.scheduleKinds(), ", "))
	}
	given, err := orgParam(q, in.Org)
	if err != nil {
		return err
	}
	org, err := s.reportScope(c, given, in.Kind)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.CreateReportSchedule.Handle(c.Request().Context(), commands.CreateReportSchedule{OrgID: org,
		Spec: domain.ReportScheduleSpec{Kind: in.Kind, Format: in.Format, TimeZone: in.TimeZone, Cadence: in.Cadence, Forecast: in.Forecast}})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/report-schedules/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

// reportList is how both lists begin: their page, the scope and the kinds of report the caller
// may read there, with the read model caught up as asked.
type reportList struct {
	q                *query
	p                page
	org              string
	include, exclude []string
}

func (s *Server) startReportList(c echo.Context, kind string, params ...string) (l reportList, err error) {
	if l.q, err = newQuery(c, append([]string{"org", "limit", "cursor", "wait_for"}, params...)...); err != nil {
		return l, err
	}
	if l.p, err = l.q.page(kind); err != nil {
		return l, err
	}
	if l.org, l.include, l.exclude, err = s.readableKinds(c, l.q.str("org")); err != nil {
		return l, err
	}
	return l, s.waitFor(c, projections.ReportSchedules)
}

func (s *Server) listReportSchedules(c echo.Context) error {
	l, err := s.startReportList(c, "report_schedules", "deleted")
	if err != nil {
		return err
	}
	p := l.p
	deleted, err := l.q.oneOf("deleted", "false", "false", "true")
	if err != nil {
		return err
	}
	f := readmodels.ReportScheduleFilter{OrgIDs: []string{l.org}, Kinds: l.include, NotKinds: l.exclude, IncludeDeleted: deleted == "true", Limit: p.limit + 1}
	if p.cursor != nil {
		if f.After, err = p.cursorID(0); err != nil {
			return err
		}
	}
	rows, err := s.cfg.ReadModels.ListReportSchedules(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, s.reportScheduleOf), func(k ReportSchedule) []any { return []any{k.ID} }))
}

// reportScheduleFor reads the schedule of the path's id and checks the caller may manage it
// (read that kind of report in its scope). The read model is caught up once when it does not
// hold the id yet (a schedule just created). ?org, when given, must be the schedule's.
func (s *Server) reportScheduleFor(c echo.Context, given string) (readmodels.ReportSchedule, error) {
	ctx := c.Request().Context()
	id := c.Param("id")
	k, err := s.cfg.ReadModels.GetReportSchedule(ctx, id)
	if errors.Is(err, domain.ErrNotFound) && domain.ValidID(id) {
		if err := s.catchUp(ctx, projections.ReportSchedules); err != nil {
			return k, err
		}
		k, err = s.cfg.ReadModels.GetReportSchedule(ctx, id)
	}
	if err != nil {
		return k, err
	}
	scope := k.OrgID
	if scope == "" {
		scope = domain.PlatformOrg
	}
	if given != "" {
		org := given
		if given != domain.PlatformOrg {
			if org, err = s.orgFor(c, given, commands.ObjAudit, commands.ActRead, false); err != nil {
				return k, err
			}
		}
		if org != scope {
			return k, fmt.Errorf("report schedule %s: %w", id, domain.ErrNotFound)
		}
	}
	if err := s.cfg.Service.Authorizer().Check(ctx, commands.ReportReadPermission(k.OrgID, k.Kind)); err != nil {
		return k, err
	}
	return k, nil
}

func (s *Server) getReportSchedule(c echo.Context) error {
	q, err := newQuery(c, "org", "wait_for")
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.ReportSchedules); err != nil {
		return err
	}
	k, err := s.reportScheduleFor(c, q.str("org"))
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, etag(k.Version))
	return c.JSON(http.StatusOK, s.reportScheduleOf(k))
}

func (s *Server) updateReportSchedule(c echo.Context) error {
	pinned, err := ifMatch(c)
	if err != nil {
		return err
	}
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in ReportSchedulePatch
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	k, err := s.reportScheduleFor(c, q.str("org"))
	if err != nil {
		return err
	}
	spec := k.Spec
	if in.Format != nil {
		spec.Format = *in.Format
	}
	if in.TimeZone != nil {
		spec.TimeZone = *in.TimeZone
	}
	if in.Cadence != nil {
		spec.Cadence = *in.Cadence
	}
	if in.Forecast != nil {
		spec.Forecast = in.Forecast
	}
	res, err := s.cfg.Service.Handlers.UpdateReportSchedule.Handle(c.Request().Context(), commands.UpdateReportSchedule{
		ReportScheduleTarget: commands.ReportScheduleTarget{OrgID: k.OrgID, ScheduleID: k.ID, Kind: k.Kind}, Spec: spec, ExpectedVersion: pinned})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

// onReportSchedule runs a command on the path's schedule: pause, resume, delete.
func (s *Server) onReportSchedule(c echo.Context, run func(ctx context.Context, t commands.ReportScheduleTarget) (commands.Result, error)) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	k, err := s.reportScheduleFor(c, q.str("org"))
	if err != nil {
		return err
	}
	res, err := run(c.Request().Context(), commands.ReportScheduleTarget{OrgID: k.OrgID, ScheduleID: k.ID, Kind: k.Kind})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) pauseReportSchedule(c echo.Context) error {
	return s.onReportSchedule(c, func(ctx context.Context, t commands.ReportScheduleTarget) (commands.Result, error) {
		return s.cfg.Service.Handlers.PauseReportSchedule.Handle(ctx, commands.PauseReportSchedule{ReportScheduleTarget: t})
	})
}

func (s *Server) resumeReportSchedule(c echo.Context) error {
	return s.onReportSchedule(c, func(ctx context.Context, t commands.ReportScheduleTarget) (commands.Result, error) {
		return s.cfg.Service.Handlers.ResumeReportSchedule.Handle(ctx, commands.ResumeReportSchedule{ReportScheduleTarget: t})
	})
}

func (s *Server) deleteReportSchedule(c echo.Context) error {
	return s.onReportSchedule(c, func(ctx context.Context, t commands.ReportScheduleTarget) (commands.Result, error) {
		return s.cfg.Service.Handlers.DeleteReportSchedule.Handle(ctx, commands.DeleteReportSchedule{ReportScheduleTarget: t})
	})
}

// listReports lists the stored reports of a scope the caller may read, newest first: the list
// to poll for scheduled reports.
func (s *Server) listReports(c echo.Context) error {
	l, err := s.startReportList(c, "reports", "kind", "schedule_id")
	if err != nil {
		return err
	}
	q, p, org, include, exclude := l.q, l.p, l.org, l.include, l.exclude
	f := readmodels.ReportFilter{OrgIDs: []string{org}, Kinds: include, NotKinds: exclude, ScheduleID: q.str("schedule_id"), Limit: p.limit + 1}
	if kind := q.str("kind"); kind != "" {
		if slices.Contains(exclude, kind) || (include != nil && !slices.Contains(include, kind)) {
			return s.cfg.Service.Authorizer().Check(c.Request().Context(), commands.ReportReadPermission(org, kind))
		}
		f.Kinds = []string{kind}
	}
	if f.ScheduleID != "" && !domain.ValidID(f.ScheduleID) {
		return badRequest("schedule_id", "must be a schedule's id")
	}
	if p.cursor != nil {
		at, err := p.cursorTime(0)
		if err != nil {
			return err
		}
		id, err := p.cursorID(1)
		if err != nil {
			return err
		}
		f.Before = &readmodels.ReportKey{RecordedAt: at, ID: id}
	}
	rows, err := s.cfg.ReadModels.ListReports(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, storedReportOf), func(r StoredReport) []any {
		return []any{r.RecordedAt.UTC().Format(time.RFC3339Nano), r.ID}
	}))
}

// downloadReport serves a stored report's file with the headers of its record. Who may read it
// is who may read that kind of report in its scope.
func (s *Server) downloadReport(c echo.Context) error {
	if _, err := newQuery(c, "wait_for"); err != nil {
		return err
	}
	if err := s.waitFor(c, projections.ReportSchedules); err != nil {
		return err
	}
	ctx := c.Request().Context()
	r, file, err := s.cfg.ReadModels.GetStoredReport(ctx, c.Param("report"))
	if err != nil {
		return err
	}
	if err := s.cfg.Service.Authorizer().Check(ctx, commands.ReportReadPermission(r.OrgID, r.Kind)); err != nil {
		return err
	}
	format := r.Format
	h := c.Response().Header()
	h.Set(HeaderReportID, r.ID)
	h.Set(HeaderReportSHA256, r.SHA256)
	h.Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="%s-%s.%s"`, r.Kind, r.ID, format))
	contentType := echo.MIMEOctetStream
	if f, err := render.ParseFormat(format); err == nil {
		contentType = f.ContentType()
	}
	return c.Blob(http.StatusOK, contentType, file)
}
