package domain

import (
	"fmt"
	"time"
)

// Failover facts: an agent holding connections to several nodes reports what it decided through
// a node it holds, which records the fact with that session's tunnel, token and session (the
// agent's word on the rest is bounded and checked like any caller's).
const (
	TypeFailoverStarted   = "failover.started"
	TypeFailoverCompleted = "failover.completed"
	TypeFailbackCompleted = "failback.completed"
)

// Failover causes.
const (
	CauseKeepaliveTimeout = "keepalive_timeout" // the node stopped answering keepalives
	CauseNodeDrain        = "node_drain"        // the node said it drains
	CauseNodeLost         = "node_lost"         // the connection ended otherwise
)

// FailoverStarted: the agent lost (or was asked to leave) a node and looks for another.
type FailoverStarted struct {
	NodeID     string    `json:"node_id"` // the node that recorded it (one the agent still holds or reached next)
	SessionID  string    `json:"session_id"`
	OrgID      string    `json:"org_id"`
	TunnelID   string    `json:"tunnel_id"`
	TokenID    string    `json:"token_id"`
	FromNodeID string    `json:"from_node_id"`          // the node left, as that node named itself
	Cause      string    `json:"cause"`                 // a Cause… constant
	DetectedAt time.Time `json:"detected_at,omitempty"` // by the agent's clock
}

// FailoverCompleted: the agent holds a connection again, on the recording node, after leaving
// FromNodeID.
type FailoverCompleted struct {
	NodeID     string `json:"node_id"`
	SessionID  string `json:"session_id"`
	OrgID      string `json:"org_id"`
	TunnelID   string `json:"tunnel_id"`
	TokenID    string `json:"token_id"`
	FromNodeID string `json:"from_node_id"`
	Cause      string `json:"cause"`
	DurationMS int64  `json:"duration_ms"` // detection to connected, by the agent's clock
}

// FailbackCompleted: the agent moved back to a node it prefers (the recording node) after that
// node had been reachable for HealthyForMS, and left FromNodeID gently.
type FailbackCompleted struct {
	NodeID       string `json:"node_id"`
	SessionID    string `json:"session_id"`
	OrgID        string `json:"org_id"`
	TunnelID     string `json:"tunnel_id"`
	TokenID      string `json:"token_id"`
	FromNodeID   string `json:"from_node_id"`
	HealthyForMS int64  `json:"healthy_for_ms"`
}

func (FailoverStarted) EventType() string   { return TypeFailoverStarted }
func (FailoverCompleted) EventType() string { return TypeFailoverCompleted }
func (FailbackCompleted) EventType() string { return TypeFailbackCompleted }

// ValidCause tells a failover cause this version knows.
func ValidCause(c string) bool {
	switch c {
	case CauseKeepaliveTimeout, CauseNodeDrain, CauseNodeLost:
		return true
	}
	return false
}

// ValidateFailoverTimes bounds what an agent says about times: a duration of at most a day, a
// detection time within a day of now (agents' clocks drift; a wild one is dropped, not stored).
func ValidateFailoverTimes(durationMS int64, detected, now time.Time) (time.Time, error) {
	if durationMS < 0 || durationMS > int64(24*time.Hour/time.Millisecond) {
		return time.Time{}, fmt.Errorf("%w: failover duration %d ms", ErrInvalidFact, durationMS)
	}
	if detected.IsZero() || detected.Before(now.Add(-24*time.Hour)) || detected.After(now.Add(24*time.Hour)) {
		return time.Time{}, nil
	}
	return detected.UTC(), nil
}
