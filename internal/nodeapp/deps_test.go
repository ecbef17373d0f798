package nodeapp

import (
	"os/exec"
	"strings"
	"testing"
)

// Nodes hold no database credentials, and no code that could use them: nothing a node runs
// depends on pgx, the event store's Store, or any package of the control plane. (The log's format
// and its verification, eventstore/ledger, is the node's as much as the control plane's.)
func TestNodeSideHoldsNoDatabase(t *testing.T) {
	const mod = "github.com/tunnelplane/tunnelplane/"
	nodeSide := []string{"internal/nodeapp", "dataplane/node", "dataplane/agent", "dataplane/view", "bus/nodebus", "bus/wire",
		"eventstore/ledger", "commands/token"}
	forbidden := []string{"github.com/jackc/pgx", mod + "eventstore", mod + "internal/controlapp", mod + "internal/serveapp",
		mod + "internal/devdb", mod + "commands", mod + "projections", mod + "api", mod + "migrations", mod + "bus/controlbus"}
	args := []string{"list", "-deps"}
	for _, p := range nodeSide {
		args = append(args, mod+p)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps listed %d packages: %q", len(deps), deps)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") && !strings.HasPrefix(d, mod+"eventstore/ledger") && !strings.HasPrefix(d, mod+"commands/token") {
				t.Errorf("the node side depends on %s", d)
			}
		}
	}
}
