package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/analytics/chargeback"
	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Bounds of the analytics reads: a page names at most AnalyticsMaxKeys series and reads at most
// AnalyticsMaxRows hourly rows (fewer series when the range is long); a range is at most
// AnalyticsMaxRange long.
const (
	AnalyticsDefaultKeys = 20
	AnalyticsMaxKeys     = 100
	AnalyticsMaxRows     = 250_000
	AnalyticsMaxRange    = 366 * 24 * time.Hour
)

// UsageReport is the answer of GET /analytics/usage: one item per series and bucket.
type UsageReport struct {
	OrgID       string          `json:"org_id"`
	GroupBy     string          `json:"group_by"`
	Granularity string          `json:"granularity"`
	TimeZone    string          `json:"time_zone"`
	From        time.Time       `json:"from"`
	To          time.Time       `json:"to"`
	Items       []rollup.Bucket `json:"items"`
	NextCursor  string          `json:"next_cursor,omitempty"`
}

// CapacityReport is the answer of GET /analytics/capacity: one item per series.
type CapacityReport struct {
	OrgID      string            `json:"org_id"`
	GroupBy    string            `json:"group_by"`
	From       time.Time         `json:"from"`
	To         time.Time         `json:"to"`
	Items      []rollup.Capacity `json:"items"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// analyticsRange is the request's org, series and range, read and checked once for every
// analytics read.
type analyticsRange struct {
	org, groupBy, tunnel string
	loc                  *time.Location
	tz                   string
	from, to             time.Time
	limit                int
	after                *readmodels.UsageKey
	kind                 string
}

func (s *Server) readAnalyticsRange(c echo.Context, q *query, kind string, g rollup.Granularity, groups ...string) (analyticsRange, error) {
	r := analyticsRange{kind: kind}
	var err error
	if r.groupBy, err = q.oneOf("group_by", groups[0], groups...); err != nil {
		return r, err
	}
	from, to, err := q.window("from", "to")
	if err != nil {
		return r, err
	}
	if from == nil || to == nil {
		return r, badRequest("from", "from and to are required (RFC 3339 times)")
	}
	if !from.Before(*to) || to.Sub(*from) > AnalyticsMaxRange || from.Year() < 2000 || to.Year() > 9998 {
		return r, badRequest("to", "must be after from, at most %d days later, within the years 2000..9998", int(AnalyticsMaxRange.Hours()/24))
	}
	if r.tunnel = q.str("tunnel"); r.tunnel != "" && !domain.ValidID(r.tunnel) {
		return r, badRequest("tunnel", "must be a tunnel id (a UUID)")
	}
	p, err := q.page(kind)
	if err != nil {
		return r, err
	}
	r.limit = AnalyticsDefaultKeys
	if q.str("limit") != "" {
		r.limit = min(p.limit, AnalyticsMaxKeys)
	}
	if p.cursor != nil {
		t, err := p.cursorID(0)
		if err != nil {
			return r, err
		}
		ck, err := p.cursorString(1)
		if err != nil {
			return r, err
		}
		ci, err := p.cursorString(2)
		if err != nil {
			return r, err
		}
		r.after = &readmodels.UsageKey{TunnelID: t, CallerKind: ck, CallerID: ci}
	}
	if r.org, err = s.orgFor(c, q.str("org"), commands.ObjAnalytics, commands.ActRead, true); err != nil {
		return r, err
	}
	if err := s.waitFor(c, projections.Usage); err != nil {
		return r, err
	}
	if r.tz, err = s.cfg.ReadModels.OrgTimeZone(c.Request().Context(), r.org); err != nil {
		return r, err
	}
	if r.loc, err = domain.LoadTimeZone(r.tz); err != nil {
		return r, err
	}
	if r.from, r.to, err = rollup.Widen(*from, *to, g, r.loc); err != nil {
		return r, err
	}
	hours := int(r.to.Sub(r.from)/time.Hour) + 1
	r.limit = max(1, min(r.limit, AnalyticsMaxRows/hours))
	return r, nil
}

func (r analyticsRange) hours(c echo.Context, s *Server) ([]readmodels.UsageHour, string, error) {
	rows, next, err := s.cfg.ReadModels.UsageHours(c.Request().Context(), readmodels.UsageFilter{OrgID: r.org, Scope: r.groupBy,
		TunnelID: r.tunnel, From: r.from, To: r.to, After: r.after, Limit: r.limit})
	if err != nil {
		return nil, "", err
	}
	cursor := ""
	if next != nil {
		cursor = encodeCursor(r.kind, next.TunnelID, next.CallerKind, next.CallerID)
	}
	return rows, cursor, nil
}

// usage serves hourly, daily, weekly or monthly usage per tunnel, caller or org. An org's
// owners, admins and auditors read it; superadmins read any org's.
func (s *Server) usage(c echo.Context) error {
	q, err := newQuery(c, "org", "group_by", "granularity", "from", "to", "tunnel", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	g, err := q.oneOf("granularity", string(rollup.Hour), string(rollup.Hour), string(rollup.Day), string(rollup.Week), string(rollup.Month))
	if err != nil {
		return err
	}
	r, err := s.readAnalyticsRange(c, q, "analytics-usage", rollup.Granularity(g), readmodels.UsageScopeTunnel, readmodels.UsageScopeCaller, readmodels.UsageScopeOrg)
	if err != nil {
		return err
	}
	rows, cursor, err := r.hours(c, s)
	if err != nil {
		return err
	}
	buckets, err := rollup.Aggregate(rows, rollup.Granularity(g), r.loc)
	if err != nil {
		return err
	}
	if buckets == nil {
		buckets = []rollup.Bucket{}
	}
	return c.JSON(http.StatusOK, UsageReport{OrgID: r.org, GroupBy: r.groupBy, Granularity: g, TimeZone: orUTC(r.tz), From: r.from, To: r.to,
		Items: buckets, NextCursor: cursor})
}

// capacity serves, per tunnel or for the org, the peak hour, the p95 of hourly concurrency and
// the headroom against the nodes in service times Config.NodeStreamCapacity.
func (s *Server) capacity(c echo.Context) error {
	q, err := newQuery(c, "org", "group_by", "from", "to", "tunnel", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	r, err := s.readAnalyticsRange(c, q, "analytics-capacity", rollup.Hour, readmodels.UsageScopeTunnel, readmodels.UsageScopeOrg)
	if err != nil {
		return err
	}
	rows, cursor, err := r.hours(c, s)
	if err != nil {
		return err
	}
	nodes, err := analyticsreport.NodesInService(c.Request().Context(), s.cfg.ReadModels)
	if err != nil {
		return err
	}
	items := rollup.Capacities(rows, r.from, r.to, s.cfg.NodeStreamCapacity, nodes)
	if items == nil {
		items = []rollup.Capacity{}
	}
	return c.JSON(http.StatusOK, CapacityReport{OrgID: r.org, GroupBy: r.groupBy, From: r.from, To: r.to, Items: items, NextCursor: cursor})
}

// chargebackStatement prices an org's local month with the price sheets in force.
func (s *Server) chargebackStatement(c echo.Context) error {
	q, err := newQuery(c, "org", "month", "wait_for")
	if err != nil {
		return err
	}
	month := q.str("month")
	org, err := s.orgFor(c, q.str("org"), commands.ObjAnalytics, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Usage); err != nil {
		return err
	}
	ctx := c.Request().Context()
	tz, err := s.cfg.ReadModels.OrgTimeZone(ctx, org)
	if err != nil {
		return err
	}
	loc, err := domain.LoadTimeZone(tz)
	if err != nil {
		return err
	}
	from, to, err := chargeback.MonthRange(month, loc)
	if err != nil {
		return badRequest("month", "must be a month like 2026-03")
	}
	st, _, err := analyticsreport.Statement(ctx, s.cfg.ReadModels, org, tz, loc, from, to)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

// OrgSettingsInput is the body of PUT /analytics/settings.
type OrgSettingsInput struct {
	TimeZone string `json:"time_zone"`
}

func (s *Server) setOrgSettings(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in OrgSettingsInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjAnalytics, commands.ActUpdate, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.SetOrgTimeZone.Handle(c.Request().Context(), commands.SetOrgTimeZone{OrgID: org, TimeZone: in.TimeZone})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

// PriceSheetInput is the body of POST /analytics/price-sheets: prices are decimal strings.
type PriceSheetInput struct {
	EffectiveFrom   time.Time `json:"effective_from"`
	Currency        string    `json:"currency"`
	PerGBIn         string    `json:"per_gb_in"`
	PerGBOut        string    `json:"per_gb_out"`
	Per1kRequests   string    `json:"per_1k_requests"`
	PerStreamedHour string    `json:"per_streamed_hour"`
	PerTunnelDay    string    `json:"per_tunnel_day"`
}

func (s *Server) setPriceSheet(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in PriceSheetInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjAnalytics, commands.ActUpdate, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.SetPriceSheet.Handle(c.Request().Context(), commands.SetPriceSheet{OrgID: org, EffectiveFrom: in.EffectiveFrom,
		Currency: in.Currency, PerGBIn: in.PerGBIn, PerGBOut: in.PerGBOut, Per1kRequests: in.Per1kRequests, PerStreamedHour: in.PerStreamedHour,
		PerTunnelDay: in.PerTunnelDay})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusCreated, res)
}

func orUTC(tz string) string {
	if tz == "" {
		return "UTC"
	}
	return tz
}
