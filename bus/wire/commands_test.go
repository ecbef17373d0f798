package wire_test

import (
	"testing"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
)

// The rule both sides apply: which log decisions become which node command.
func TestDecisionToCommand(t *testing.T) {
	const id, node = "0190a8f6-2a3c-7c4e-9b1d-3f5e6a7b8c9d", "0190a8f6-2a3c-7c4e-9b1d-000000000001"
	for _, tc := range []struct {
		name  string
		event domain.Event
		want  wire.Command // nil: no command
	}{
		{"tunnel deleted", &domain.TunnelDeleted{TunnelID: "t1", OrgID: "o1", Name: "llm"},
			wire.DisconnectAgent{CommandID: id, TunnelID: "t1", Reason: "tunnel deleted"}},
		{"token revoked", &domain.AgentTokenRevoked{TokenID: "k1", OrgID: "o1", TunnelID: "t1", Reason: "leaked"},
			wire.DisconnectAgent{CommandID: id, TokenID: "k1", Reason: "agent token revoked"}},
		{"drain requested", &domain.NodeDrainRequested{NodeID: node}, wire.DrainNode{CommandID: id, NodeID: node}},
		{"tunnel created", &domain.TunnelCreated{TunnelID: "t1"}, nil},
		{"role unassigned", &domain.RoleUnassigned{OrgID: "o1", UserID: "u"}, nil},
		{"node removed", &domain.NodeRemoved{NodeID: "n1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := wire.DecisionOf(tc.event)
			if ok != (tc.want != nil) {
				t.Fatalf("DecisionOf: ok = %v", ok)
			}
			if !ok {
				return
			}
			got, ok := d.Command(id)
			if !ok || got != tc.want {
				t.Fatalf("command %#v (%v), want %#v", got, ok, tc.want)
			}
			if got.ID() != id || got.Validate() != nil {
				t.Fatalf("command id %q, validate %v", got.ID(), got.Validate())
			}
		})
	}
	if _, ok := (wire.Decision{Type: domain.TypeTunnelCreated}).Command(id); ok {
		t.Fatal("a decision of another type became a command")
	}
}
