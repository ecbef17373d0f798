package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Tunnel is a tunnel as the tunnels view holds it.
type Tunnel struct {
	ID        string    `json:"id"`
	OrgID     string    `json:"org_id"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner"`
	Upstream  string    `json:"upstream"`
	Protocol  string    `json:"protocol"`
	State     string    `json:"state"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Position  int64     `json:"position"`
	// AgentsConnected counts the tunnel's agent sessions its nodes report connected now.
	AgentsConnected int64 `json:"agents_connected"`
	// AccessLog is what the tunnel's nodes report of its calls: "windows" (usage totals per
	// caller, the default) or "calls" (a record per call: GET /tunnels/{id}/access).
	AccessLog string `json:"access_log"`
	// Labels let access keys scoped by a label selector call the tunnel.
	Labels map[string]string `json:"labels"`
	// CORS is the tunnel's cross-origin setting: mode "off", "origins" (with origins) or
	// "passthrough".
	CORS *domain.TunnelCORS `json:"cors"`
}

// tunnelOf is a tunnel's record as the API shows it: labels {} and CORS "off" when none.
func tunnelOf(t readmodels.Tunnel) Tunnel {
	out := Tunnel(t)
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if out.CORS == nil {
		out.CORS = &domain.TunnelCORS{Mode: domain.CORSOff}
	}
	return out
}

// TunnelInput is the body of POST /tunnels.
type TunnelInput struct {
	Org      string            `json:"org,omitempty"`
	Name     string            `json:"name"`
	Upstream string            `json:"upstream"`
	Protocol string            `json:"protocol,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// TunnelPatch is the body of PATCH /tunnels/{id}: absent fields stay as they are. Labels, when
// given, are all of the tunnel's labels ({} removes them); changing them or CORS takes the right
// to share the tunnel.
type TunnelPatch struct {
	Name     *string            `json:"name,omitempty"`
	Upstream *string            `json:"upstream,omitempty"`
	Protocol *string            `json:"protocol,omitempty"`
	Labels   *map[string]string `json:"labels,omitempty"`
	CORS     *domain.TunnelCORS `json:"cors,omitempty"`
}

// orgParam takes the org from the body or the query; both, when different, is a mistake.
func orgParam(q *query, body string) (string, error) {
	qv := q.str("org")
	if body != "" && qv != "" && body != qv {
		return "", badRequest("org", "given in the body (%q) and the query (%q)", body, qv)
	}
	if body != "" {
		return body, nil
	}
	return qv, nil
}

func (s *Server) createTunnel(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in TunnelInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	given, err := orgParam(q, in.Org)
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, given, commands.ObjTunnels, commands.ActCreate, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.CreateTunnel.Handle(c.Request().Context(),
		commands.CreateTunnel{OrgID: org, Name: in.Name, Upstream: in.Upstream, Protocol: in.Protocol, Labels: in.Labels})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/tunnels/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listTunnels(c echo.Context) error {
	q, err := newQuery(c, "org", "name", "state", "owner", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("tunnels")
	if err != nil {
		return err
	}
	state, err := q.oneOf("state", "active", "active", "deleted", "all")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Tunnels); err != nil {
		return err
	}
	f := readmodels.TunnelFilter{OrgID: org, State: state, Name: q.str("name"), Owner: q.str("owner"), Limit: p.limit + 1}
	if state == "all" {
		f.State = ""
	}
	if p.cursor != nil {
		name, err := p.cursorString(0)
		if err != nil {
			return err
		}
		id, err := p.cursorID(1)
		if err != nil {
			return err
		}
		f.After = &readmodels.TunnelKey{Name: name, ID: id}
	}
	rows, err := s.cfg.ReadModels.ListTunnels(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, tunnelOf), func(t Tunnel) []any { return []any{t.Name, t.ID} }))
}

func (s *Server) getTunnel(c echo.Context) error {
	q, err := newQuery(c, "org", "wait_for")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Tunnels); err != nil {
		return err
	}
	// An id that is not a UUID is not found either (GetTunnel says so), like an unknown one.
	t, err := s.cfg.ReadModels.GetTunnel(c.Request().Context(), org, c.Param("id"))
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, etag(t.Version))
	return c.JSON(http.StatusOK, tunnelOf(t))
}

// preconditionFailed turns the tunnel's version conflict under an If-Match into 412; other
// conflicts (a name in use) stay 409.
func preconditionFailed(err error, pinned *uint64, tunnelID string) error {
	var wev *eventstore.WrongExpectedVersionError
	if pinned != nil && errors.As(err, &wev) && wev.StreamID == domain.TunnelStream(tunnelID) {
		return fmt.Errorf("If-Match %d: the tunnel is at version %d: %w", *pinned, wev.Actual, ErrPreconditionFailed)
	}
	return err
}

func (s *Server) updateTunnel(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	pinned, err := ifMatch(c)
	if err != nil {
		return err
	}
	var in TunnelPatch
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActUpdate, false)
	if err != nil {
		return err
	}
	id := c.Param("id")
	res, err := s.cfg.Service.Handlers.UpdateTunnel.Handle(c.Request().Context(), commands.UpdateTunnel{OrgID: org, TunnelID: id,
		Name: in.Name, Upstream: in.Upstream, Protocol: in.Protocol, Labels: in.Labels, CORS: in.CORS, ExpectedVersion: pinned})
	if err != nil {
		return preconditionFailed(err, pinned, id)
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) deleteTunnel(c echo.Context) error {
	q, err := newQuery(c, "org", "reason")
	if err != nil {
		return err
	}
	pinned, err := ifMatch(c)
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActDelete, false)
	if err != nil {
		return err
	}
	id := c.Param("id")
	res, err := s.cfg.Service.Handlers.DeleteTunnel.Handle(c.Request().Context(),
		commands.DeleteTunnel{OrgID: org, TunnelID: id, Reason: q.str("reason"), ExpectedVersion: pinned})
	if err != nil {
		return preconditionFailed(err, pinned, id)
	}
	return s.written(c, http.StatusOK, res)
}
