package node

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/domain"
)

// maxAgentEvents bounds the events one session may report: an agent reports a failover or a
// failback when it reaches a node, and the few it queued while it had none.
const maxAgentEvents = 64

var errAgentEvent = errors.New("agent event refused")

// agentEvent checks what an agent reports (RequestAgentEvent) and makes it this node's fact: the
// tunnel, token and session are the session's, never the agent's word; what the agent says is
// bounded (known types and causes, node ids as node ids look, times within a day).
func (s *session) agentEvent(payload []byte) (domain.Event, error) {
	if s.meta.protocol != ProtocolV2 {
		return nil, fmt.Errorf("%w: protocol %s", errAgentEvent, s.meta.protocol)
	}
	var p JSONPayload
	var e AgentEvent
	if len(payload) > 4096 || ssh.Unmarshal(payload, &p) != nil || json.Unmarshal([]byte(p.JSON), &e) != nil {
		return nil, fmt.Errorf("%w: unreadable", errAgentEvent)
	}
	if len(e.FromNodeID) > 64 || !isVisibleASCII(e.FromNodeID) {
		return nil, fmt.Errorf("%w: from_node_id", errAgentEvent)
	}
	s.mu.Lock()
	if s.forward == nil || s.events >= maxAgentEvents {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: before the tunnel was held, or past %d events", errAgentEvent, maxAgentEvents)
	}
	s.events++
	s.mu.Unlock()
	now := s.n.cfg.Now()
	switch e.Type {
	case domain.TypeFailoverStarted, domain.TypeFailoverCompleted:
		if !domain.ValidCause(e.Cause) {
			return nil, fmt.Errorf("%w: cause", errAgentEvent)
		}
		detected, err := domain.ValidateFailoverTimes(e.DurationMS, e.DetectedAt, now)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errAgentEvent, err)
		}
		if e.Type == domain.TypeFailoverStarted {
			return domain.FailoverStarted{NodeID: s.n.cfg.NodeID, SessionID: s.id, OrgID: s.ident.OrgID, TunnelID: s.ident.TunnelID,
				TokenID: s.ident.TokenID, FromNodeID: e.FromNodeID, Cause: e.Cause, DetectedAt: detected}, nil
		}
		return domain.FailoverCompleted{NodeID: s.n.cfg.NodeID, SessionID: s.id, OrgID: s.ident.OrgID, TunnelID: s.ident.TunnelID,
			TokenID: s.ident.TokenID, FromNodeID: e.FromNodeID, Cause: e.Cause, DurationMS: e.DurationMS}, nil
	case domain.TypeFailbackCompleted:
		if _, err := domain.ValidateFailoverTimes(e.HealthyForMS, now, now); err != nil {
			return nil, fmt.Errorf("%w: %w", errAgentEvent, err)
		}
		return domain.FailbackCompleted{NodeID: s.n.cfg.NodeID, SessionID: s.id, OrgID: s.ident.OrgID, TunnelID: s.ident.TunnelID,
			TokenID: s.ident.TokenID, FromNodeID: e.FromNodeID, HealthyForMS: e.HealthyForMS}, nil
	}
	return nil, fmt.Errorf("%w: type", errAgentEvent)
}
