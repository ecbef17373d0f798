package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
)

// AgentSession is one agent connection as its node reported it (the agent_sessions view).
type AgentSession struct {
	ID           string     `json:"id" db:"session_id"`
	NodeID       string     `json:"node_id" db:"node_id"`
	OrgID        string     `json:"org_id" db:"org_id"`
	TunnelID     string     `json:"tunnel_id" db:"tunnel_id"`
	TokenID      string     `json:"token_id" db:"token_id"`
	AgentVersion string     `json:"agent_version" db:"agent_version"`
	Protocol     string     `json:"protocol" db:"protocol"`
	RemoteAddr   string     `json:"remote_addr" db:"remote_addr"`
	KEX          string     `json:"kex" db:"kex"`
	Cipher       string     `json:"cipher" db:"cipher"`
	ConnectedAt  time.Time  `json:"connected_at" db:"connected_at"`
	EndedAt      *time.Time `json:"ended_at,omitempty" db:"ended_at"`
	EndReason    *string    `json:"end_reason,omitempty" db:"end_reason"`
	BytesIn      *int64     `json:"bytes_in,omitempty" db:"bytes_in"`
	BytesOut     *int64     `json:"bytes_out,omitempty" db:"bytes_out"`
	DurationMS   *int64     `json:"duration_ms,omitempty" db:"duration_ms"`
	Position     int64      `json:"position" db:"position"`
	// State: connected; ended; or unknown when its node was lost or removed before reporting
	// the end (the session ends with the node, or goes on once a lost node is heard again).
	State string `json:"state" db:"state"`
}

// sessionState is an agent session's state, from its end and its node's health.
const sessionState = `CASE WHEN s.ended_at IS NOT NULL THEN 'ended'
	WHEN n.node_id IS NULL OR n.lost OR n.state = 'left' THEN 'unknown' ELSE 'connected' END`

// sessionColumns selects from a subquery named sessions whose id columns are UUIDs (filter and
// order by sessions.<column>); the outer list casts them to text.
const sessionColumns = `SELECT session_id::text AS session_id, node_id::text AS node_id, org_id::text AS org_id,
	tunnel_id::text AS tunnel_id, token_id::text AS token_id, agent_version, protocol, remote_addr, kex, cipher,
	connected_at, ended_at, end_reason, bytes_in, bytes_out, duration_ms, position, state
	FROM (SELECT s.*, ` + sessionState + ` AS state FROM agent_sessions s LEFT JOIN nodes n ON n.node_id = s.node_id) sessions`

// agentsConnected counts a tunnel's connected sessions (for the tunnels view's rows).
const agentsConnected = `(SELECT count(*) FROM agent_sessions s LEFT JOIN nodes n ON n.node_id = s.node_id
	WHERE s.tunnel_id = tunnels.tunnel_id AND ` + sessionState + ` = 'connected')`

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
	var w where
	w.add("sessions.org_id = ?::uuid", org)
	for _, f := range []string{"tunnel_id", "node_id"} {
		if v := q.str(f); v != "" {
			if !domain.ValidID(v) {
				return badRequest(f, "must be an id (a UUID)")
			}
			w.add("sessions."+f+" = ?::uuid", v)
		}
	}
	if state != "all" {
		w.add("sessions.state = ?", state)
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
		w.add("(sessions.connected_at, sessions.session_id) < (?, ?::uuid)", at, id)
	}
	rows, err := selectRows[AgentSession](c.Request().Context(), s, "list agent sessions",
		sessionColumns+w.sql()+" ORDER BY sessions.connected_at DESC, sessions.session_id DESC"+w.limit(p), w.args...)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, rows, func(a AgentSession) []any { return []any{a.ConnectedAt.Format(time.RFC3339Nano), a.ID} }))
}
