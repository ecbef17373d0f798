package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// AccessLogInput is the body of PUT /tunnels/{id}/access-log.
type AccessLogInput struct {
	// AccessLog is "calls" (a record per call) or "windows" (the usage windows only, the default).
	AccessLog string `json:"access_log"`
}

// AccessCall is one call through a tunnel whose access log is "calls": who called which route
// (the path without its query string), when, with what status, bytes each way and duration,
// on which node.
type AccessCall struct {
	At         time.Time `json:"at"`
	CallerKind string    `json:"caller_kind"` // user, access_key, anonymous, overflow
	CallerID   string    `json:"caller_id,omitempty"`
	Method     string    `json:"method"`
	Route      string    `json:"route"`
	Status     int32     `json:"status"`
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
	DurationUS int64     `json:"duration_us"`
	NodeID     string    `json:"node_id"`
	TunnelID   string    `json:"tunnel_id"`
	OrgID      string    `json:"org_id"`
	// Position is the log position of the node's batch that holds the call, Index its place in it.
	Position int64 `json:"position"`
	Index    int32 `json:"index"`
}

// setAccessLog sets what the tunnel's nodes report about its calls (tunnel.access_log_set).
// Who may share the tunnel may change it: it decides what the log keeps of who called it.
func (s *Server) setAccessLog(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in AccessLogInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if !domain.ValidAccessLog(in.AccessLog) {
		return invalid("access_log", "must be \"calls\" or \"windows\"")
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActShare, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.SetTunnelAccessLog.Handle(c.Request().Context(),
		commands.SetTunnelAccessLog{OrgID: org, TunnelID: c.Param("id"), AccessLog: in.AccessLog})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

// listAccessCalls pages through a tunnel's call records by time, authorized as reading its
// organization's usage (owners, admins, auditors; superadmins any). Filters: from (inclusive), to
// (exclusive), caller (a user id or access key id), status.
func (s *Server) listAccessCalls(c echo.Context) error {
	q, err := newQuery(c, "org", "from", "to", "caller", "status", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("access-calls")
	if err != nil {
		return err
	}
	f := readmodels.AccessCallFilter{TunnelID: c.Param("id"), Caller: q.str("caller"), Limit: p.limit + 1}
	if f.From, f.To, err = q.window("from", "to"); err != nil {
		return err
	}
	if len(f.Caller) > 256 {
		return badRequest("caller", "is longer than 256 bytes")
	}
	if v := q.str("status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 || n > 999 {
			return badRequest("status", "must be an HTTP status from 100 to 999")
		}
		f.Status = n
	}
	if p.cursor != nil {
		at, err := p.cursorTime(0)
		if err != nil {
			return err
		}
		pos, err := p.cursorInt(1)
		if err != nil {
			return err
		}
		idx, err := p.cursorInt(2)
		if err != nil || idx < 0 || idx > domain.MaxCallsPerBatch {
			return badRequest("cursor", "is not a cursor of this list")
		}
		f.After = &readmodels.AccessCallKey{At: at, Position: pos, Idx: int32(idx)}
	}
	if f.OrgID, err = s.orgFor(c, q.str("org"), commands.ObjAnalytics, commands.ActRead, true); err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Tunnels, projections.AccessCalls); err != nil {
		return err
	}
	// A tunnel of another organization, or none, is not found (not an empty list).
	if _, err := s.cfg.ReadModels.GetTunnel(c.Request().Context(), f.OrgID, f.TunnelID); err != nil {
		return err
	}
	rows, err := s.cfg.ReadModels.ListAccessCalls(c.Request().Context(), f)
	if err != nil {
		return err
	}
	items := convert(rows, func(r readmodels.AccessCall) AccessCall {
		return AccessCall{At: r.At, CallerKind: r.CallerKind, CallerID: r.CallerID, Method: r.Method, Route: r.Route, Status: r.Status,
			BytesIn: r.BytesIn, BytesOut: r.BytesOut, DurationUS: r.DurationUS, NodeID: r.NodeID, TunnelID: r.TunnelID, OrgID: r.OrgID,
			Position: r.Position, Index: r.Idx}
	})
	return c.JSON(http.StatusOK, listOf(p, items, func(a AccessCall) []any {
		return []any{a.At.Format(time.RFC3339Nano), a.Position, a.Index}
	}))
}
