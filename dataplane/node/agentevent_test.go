package node

import (
	"encoding/json"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/domain"
)

// What an agent reports becomes the node's fact only within bounds, and always with the
// session's own tunnel, token and session, whatever the agent says.
func TestAgentEventsAreBoundedAndTakeTheSessionsIdentity(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	newSession := func(protocol string) *session {
		return &session{n: &Node{cfg: Config{NodeID: "node-b", Now: func() time.Time { return now }}}, id: "sess-1",
			ident: AgentIdentity{OrgID: "org-1", TunnelID: "tun-1", TokenID: "tok-1"}, meta: connMeta{protocol: protocol}, forward: &ForwardRequest{}}
	}
	payload := func(raw string) []byte { return ssh.Marshal(JSONPayload{JSON: raw}) }
	ev := func(e AgentEvent) []byte {
		b, _ := json.Marshal(e)
		return payload(string(b))
	}

	s := newSession(ProtocolV2)
	got, err := s.agentEvent(ev(AgentEvent{Type: domain.TypeFailoverStarted, Cause: domain.CauseKeepaliveTimeout, FromNodeID: "node-a", DetectedAt: now.Add(-time.Second)}))
	want := domain.FailoverStarted{NodeID: "node-b", SessionID: "sess-1", OrgID: "org-1", TunnelID: "tun-1", TokenID: "tok-1",
		FromNodeID: "node-a", Cause: domain.CauseKeepaliveTimeout, DetectedAt: now.Add(-time.Second)}
	if err != nil || got != want {
		t.Fatalf("%v %+v", err, got)
	}
	// A wild clock is dropped, not stored.
	got, err = s.agentEvent(ev(AgentEvent{Type: domain.TypeFailoverStarted, Cause: domain.CauseNodeLost, DetectedAt: now.Add(-48 * time.Hour)}))
	if err != nil || !got.(domain.FailoverStarted).DetectedAt.IsZero() {
		t.Fatalf("%v %+v", err, got)
	}

	for name, tc := range map[string]struct {
		s       *session
		payload []byte
	}{
		"protocol v1":        {newSession(ProtocolV1), ev(AgentEvent{Type: domain.TypeFailoverStarted, Cause: domain.CauseNodeLost})},
		"before the tunnel":  {func() *session { s := newSession(ProtocolV2); s.forward = nil; return s }(), ev(AgentEvent{Type: domain.TypeFailoverStarted, Cause: domain.CauseNodeLost})},
		"unknown type":       {newSession(ProtocolV2), ev(AgentEvent{Type: domain.TypeTunnelDeleted})},
		"unknown cause":      {newSession(ProtocolV2), ev(AgentEvent{Type: domain.TypeFailoverCompleted, Cause: "because"})},
		"control characters": {newSession(ProtocolV2), ev(AgentEvent{Type: domain.TypeFailoverStarted, Cause: domain.CauseNodeLost, FromNodeID: "a\x1b[2J"})},
		"long node id":       {newSession(ProtocolV2), ev(AgentEvent{Type: domain.TypeFailoverStarted, Cause: domain.CauseNodeLost, FromNodeID: string(make([]byte, 65))})},
		"negative duration":  {newSession(ProtocolV2), ev(AgentEvent{Type: domain.TypeFailoverCompleted, Cause: domain.CauseNodeLost, DurationMS: -1})},
		"failback of 2 days": {newSession(ProtocolV2), ev(AgentEvent{Type: domain.TypeFailbackCompleted, HealthyForMS: 48 * 3600 * 1000})},
		"not JSON":           {newSession(ProtocolV2), payload("{")},
		"not an SSH string":  {newSession(ProtocolV2), []byte{0, 0, 0, 9, '{'}},
		"too large":          {newSession(ProtocolV2), payload(string(make([]byte, 5000)))},
	} {
		if e, err := tc.s.agentEvent(tc.payload); err == nil {
			t.Errorf("%s: taken as %+v", name, e)
		}
	}

	s = newSession(ProtocolV2)
	for i := range maxAgentEvents {
		if _, err := s.agentEvent(ev(AgentEvent{Type: domain.TypeFailbackCompleted, FromNodeID: "node-c"})); err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
	}
	if _, err := s.agentEvent(ev(AgentEvent{Type: domain.TypeFailbackCompleted, FromNodeID: "node-c"})); err == nil {
		t.Fatalf("report %d of one session was taken", maxAgentEvents+1)
	}
}
