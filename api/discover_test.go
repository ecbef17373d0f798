package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
)

// An agent asks which nodes to hold with its own agent token: it gets the joined nodes that
// serve agents, each tunnel in its own stable order; a draining node leaves the list; a user
// token, another tunnel's agent token and a revoked one are refused.
func TestAnAgentDiscoversItsNodes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	tun := e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:11434"})
	other := e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "other", "upstream": "http://127.0.0.1:11435"})
	agentTok := e.write(201, "POST", "/api/v1/tunnels/"+tun.ID+"/tokens", alice, nil)
	otherTok := e.write(201, "POST", "/api/v1/tunnels/"+other.ID+"/tokens", alice, nil)

	urls := map[string]string{}
	var last uint64
	for i := range 3 {
		enroll, _ := newNodeEnrollment(t, e.store, fmt.Sprintf("node-%d", i))
		enroll.AgentURL = fmt.Sprintf("wss://node-%d.example:8443/v1/agent", i)
		res := e.write(201, "POST", "/api/v1/nodes", root, enroll)
		urls[enroll.NodeID], last = enroll.AgentURL, res.Position
	}
	e.must(200, "GET", fmt.Sprintf("/api/v1/nodes?wait_for=%d", last), root, nil)

	discover := func(tunnelID, tok string) api.Discovery {
		t.Helper()
		var d api.Discovery
		e.must(200, "GET", "/api/v1/tunnels/"+tunnelID+"/nodes", tok, nil).decode(t, &d)
		return d
	}
	d := discover(tun.ID, agentTok.Token)
	if d.TunnelID != tun.ID || len(d.Items) != 3 {
		t.Fatalf("%+v", d)
	}
	for i, n := range d.Items {
		if n.Priority != i+1 || n.Weight <= 0 || n.AgentURL != urls[n.ID] || n.HostKeyFingerprint == "" {
			t.Fatalf("item %d: %+v", i, n)
		}
	}
	if again := discover(tun.ID, agentTok.Token); fmt.Sprint(again) != fmt.Sprint(d) {
		t.Fatalf("the order moved between two asks:\n%+v\n%+v", d, again)
	}

	// The first node drains: it leaves the list, and the others keep their order.
	drained := e.write(200, "POST", "/api/v1/nodes/"+d.Items[0].ID+"/drain", root, nil)
	e.must(200, "GET", fmt.Sprintf("/api/v1/nodes?wait_for=%d", drained.Position), root, nil)
	if after := discover(tun.ID, agentTok.Token); len(after.Items) != 2 || after.Items[0].ID != d.Items[1].ID || after.Items[1].ID != d.Items[2].ID {
		t.Fatalf("after the drain: %+v (before %+v)", after, d)
	}

	e.must(401, "GET", "/api/v1/tunnels/"+tun.ID+"/nodes", alice, nil)
	e.must(401, "GET", "/api/v1/tunnels/"+tun.ID+"/nodes", "", nil)
	e.must(403, "GET", "/api/v1/tunnels/"+tun.ID+"/nodes", otherTok.Token, nil)
	revoked := e.write(200, "DELETE", "/api/v1/tokens/"+agentTok.ID+"?reason=lost", alice, nil)
	e.must(200, "GET", fmt.Sprintf("/api/v1/tokens/%s?wait_for=%d", agentTok.ID, revoked.Position), alice, nil)
	if p := e.must(401, "GET", "/api/v1/tunnels/"+tun.ID+"/nodes", agentTok.Token, nil).problem(t); !strings.HasSuffix(p.Detail, "the agent token is revoked") {
		t.Fatalf("revoked: %+v", p)
	}
}
