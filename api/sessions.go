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

// AgentSession is one agent connection as its node reported it (the agent_sessions view).
type AgentSession struct {
	ID           string     `json:"id"`
	NodeID       string     `json:"node_id"`
	OrgID        string     `json:"org_id"`
	TunnelID     string     `json:"tunnel_id"`
	TokenID      string     `json:"token_id"`
	AgentVersion string     `json:"agent_version"`
	Protocol     string     `json:"protocol"`
	RemoteAddr   string     `json:"remote_addr"` // opened; "[erased]" once the token's issuer was erased; "" when the node left it out
	KEX          string     `json:"kex"`
	Cipher       string     `json:"cipher"`
	ConnectedAt  time.Time  `json:"connected_at"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	EndReason    *string    `json:"end_reason,omitempty"`
	BytesIn      *int64     `json:"bytes_in,omitempty"`
	BytesOut     *int64     `json:"bytes_out,omitempty"`
	DurationMS   *int64     `json:"duration_ms,omitempty"`
	Position     int64      `json:"position"`
	// State: connected; ended; or unknown when its node was lost or removed before reporting
	// the end (the session ends with the node, or goes on once a lost node is heard again).
	State string `json:"state"`
}

func (s *Server) listSessions(c echo.Context) error {
	q, err := newQuery(c, "org", "tunnel_id", "node_id", "state", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("sessions")
	if err != nil {
		return err
	}
	state, err := q.oneOf("state", "all", "connected", "ended", "unknown", "all")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.AgentSessions, projections.Nodes); err != nil {
		return err
	}
	f := readmodels.AgentSessionFilter{OrgID: org, State: state, Limit: p.limit + 1}
	if f.State == "all" {
		f.State = ""
	}
	for _, id := range []struct {
		param string
		dst   *string
	}{{"tunnel_id", &f.TunnelID}, {"node_id", &f.NodeID}} {
		if v := q.str(id.param); v != "" {
			if !domain.ValidID(v) {
				return badRequest(id.param, "must be an id (a UUID)")
			}
			*id.dst = v
		}
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
		f.After = &readmodels.AgentSessionKey{ConnectedAt: at, ID: id}
	}
	rows, err := s.cfg.ReadModels.ListAgentSessions(c.Request().Context(), f)
	if err != nil {
		return err
	}
	// The read model keeps the address as the node sealed it; it is opened here (or shown as
	// [erased] once the token's issuer was erased).
	if s.cfg.Personal != nil {
		for i := range rows {
			if rows[i].RemoteAddr, err = s.cfg.Personal.Show(c.Request().Context(), "remote_addr", rows[i].RemoteAddr); err != nil {
				return err
			}
		}
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, func(a readmodels.AgentSession) AgentSession { return AgentSession(a) }),
		func(a AgentSession) []any { return []any{a.ConnectedAt.Format(time.RFC3339Nano), a.ID} }))
}
