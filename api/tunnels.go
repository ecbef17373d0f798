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
)

// Tunnel is a tunnel as the tunnels view holds it.
type Tunnel struct {
	ID        string    `json:"id" db:"tunnel_id"`
	OrgID     string    `json:"org_id" db:"org_id"`
	Name      string    `json:"name" db:"name"`
	Owner     string    `json:"owner" db:"owner"`
	Upstream  string    `json:"upstream" db:"upstream"`
	Protocol  string    `json:"protocol" db:"protocol"`
	State     string    `json:"state" db:"state"`
	Version   int64     `json:"version" db:"version"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
	Position  int64     `json:"position" db:"position"`
	// AgentsConnected counts the tunnel's agent sessions its nodes report connected now.
	AgentsConnected int64 `json:"agents_connected" db:"agents_connected"`
}

const tunnelColumns = `SELECT tunnel_id::text AS tunnel_id, org_id::text AS org_id, name, owner, upstream, protocol, state, version,
	created_at, updated_at, position, ` + agentsConnected + ` AS agents_connected FROM tunnels`

// TunnelInput is the body of POST /tunnels.
type TunnelInput struct {
	Org      string `json:"org,omitempty"`
	Name     string `json:"name"`
	Upstream string `json:"upstream"`
	Protocol string `json:"protocol,omitempty"`
}

// TunnelPatch is the body of PATCH /tunnels/{id}: absent fields stay as they are.
type TunnelPatch struct {
	Name     *string `json:"name,omitempty"`
	Upstream *string `json:"upstream,omitempty"`
	Protocol *string `json:"protocol,omitempty"`
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
		commands.CreateTunnel{OrgID: org, Name: in.Name, Upstream: in.Upstream, Protocol: in.Protocol})
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
	var w where
	w.add("org_id = ?::uuid", org)
	if state != "all" {
		w.add("state = ?", state)
	}
	if v := q.str("name"); v != "" {
		w.add("name = ?", v)
	}
	if v := q.str("owner"); v != "" {
		w.add("owner = ?", v)
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
		w.add("(name, tunnel_id) > (?, ?::uuid)", name, id)
	}
	rows, err := selectRows[Tunnel](c.Request().Context(), s, "list tunnels", tunnelColumns+w.sql()+" ORDER BY name, tunnel_id"+w.limit(p), w.args...)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, rows, func(t Tunnel) []any { return []any{t.Name, t.ID} }))
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
	id := c.Param("id")
	if !domain.ValidID(id) {
		return fmt.Errorf("tunnel %q: %w", id, domain.ErrNotFound)
	}
	t, err := selectOne[Tunnel](c.Request().Context(), s, "get tunnel", "tunnel "+id, tunnelColumns+" WHERE tunnel_id = $1::uuid AND org_id = $2::uuid", id, org)
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, etag(t.Version))
	return c.JSON(http.StatusOK, t)
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
		Name: in.Name, Upstream: in.Upstream, Protocol: in.Protocol, ExpectedVersion: pinned})
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
