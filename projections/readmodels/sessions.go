package readmodels

import (
	"context"
	"time"
)

// AgentSession is one agent connection as its node reported it (view agent_sessions), with its
// state.
type AgentSession struct {
	ID           string     `db:"session_id"`
	NodeID       string     `db:"node_id"`
	OrgID        string     `db:"org_id"`
	TunnelID     string     `db:"tunnel_id"`
	TokenID      string     `db:"token_id"`
	AgentVersion string     `db:"agent_version"`
	Protocol     string     `db:"protocol"`
	RemoteAddr   string     `db:"remote_addr"`
	KEX          string     `db:"kex"`
	Cipher       string     `db:"cipher"`
	ConnectedAt  time.Time  `db:"connected_at"`
	EndedAt      *time.Time `db:"ended_at"`
	EndReason    *string    `db:"end_reason"`
	BytesIn      *int64     `db:"bytes_in"`
	BytesOut     *int64     `db:"bytes_out"`
	DurationMS   *int64     `db:"duration_ms"`
	Position     int64      `db:"position"`
	// State is SessionConnected, SessionEnded, or SessionUnknown when its node was lost or
	// removed before reporting the end.
	State string `db:"state"`
}

// Agent session states.
const (
	SessionConnected = "connected"
	SessionEnded     = "ended"
	SessionUnknown   = "unknown"
)

// AgentSessionFilter selects the agent sessions of one organization, newest first.
type AgentSessionFilter struct {
	// OrgID is required.
	OrgID string
	// TunnelID and NodeID, when set, are exact.
	TunnelID, NodeID string
	// State is SessionConnected, SessionEnded, SessionUnknown or "" (any).
	State string
	// After is the key of the last row of the previous page; the page holds older sessions.
	After *AgentSessionKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

// AgentSessionKey is the sort key of the agent sessions list.
type AgentSessionKey struct {
	ConnectedAt time.Time
	ID          string
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

// ListAgentSessions lists an organization's agent sessions, newest first.
func (q *Queries) ListAgentSessions(ctx context.Context, f AgentSessionFilter) ([]AgentSession, error) {
	const op = "list agent sessions"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if err := checkID(op, "org", f.OrgID); err != nil {
		return nil, err
	}
	for _, id := range []struct{ name, value string }{{"tunnel", f.TunnelID}, {"node", f.NodeID}} {
		if id.value != "" {
			if err := checkID(op, id.name, id.value); err != nil {
				return nil, err
			}
		}
	}
	if err := checkState(op, f.State, SessionConnected, SessionEnded, SessionUnknown); err != nil {
		return nil, err
	}
	if f.After != nil {
		if err := checkID(op, "cursor", f.After.ID); err != nil {
			return nil, err
		}
	}
	var w where
	w.add("sessions.org_id = ?::uuid", f.OrgID)
	if f.TunnelID != "" {
		w.add("sessions.tunnel_id = ?::uuid", f.TunnelID)
	}
	if f.NodeID != "" {
		w.add("sessions.node_id = ?::uuid", f.NodeID)
	}
	if f.State != "" {
		w.add("sessions.state = ?", f.State)
	}
	if f.After != nil {
		w.add("(sessions.connected_at, sessions.session_id) < (?, ?::uuid)", f.After.ConnectedAt, f.After.ID)
	}
	return selectRows[AgentSession](ctx, q, op,
		sessionColumns+w.sql()+" ORDER BY sessions.connected_at DESC, sessions.session_id DESC"+w.limit(f.Limit), w.args...)
}
