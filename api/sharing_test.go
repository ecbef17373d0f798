package api_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// TestSharingAPI: a tunnel's policy wants 2 of its 3 editors; a viewer's request is listed
// pending, refused to its requester, approved by two editors, and then listed approved with the
// grant it made, which the tunnel's grants show with its request and approvals.
func TestSharingAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	for _, u := range []string{"e1", "e2", "e3"} {
		e.grant(org, u, domain.RoleEditor)
	}
	e.grant(org, "vic", domain.RoleViewer)
	tun := e.write(201, "POST", "/api/v1/tunnels?org=acme", root, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}).ID
	alice, vic := e.token("alice"), e.token("vic")
	e.write(200, "PUT", "/api/v1/tunnels/"+tun+"/access-policy?org=acme", alice, api.AccessPolicyInput{ApproverRole: domain.RoleEditor, RequiredApprovals: 2})

	e.must(422, "POST", "/api/v1/access-requests", vic, api.AccessRequestInput{TunnelID: tun, Duration: "8h"}).problem(t)
	req := e.write(201, "POST", "/api/v1/access-requests", vic, api.AccessRequestInput{TunnelID: tun, Duration: "8h", Reason: "debug the chat UI"})
	list := func(state string) []api.AccessRequest {
		var l api.List[api.AccessRequest]
		e.must(200, "GET", fmt.Sprintf("/api/v1/access-requests?state=%s&wait_for=latest", state), vic, nil).decode(t, &l)
		return l.Items
	}
	if p := list("pending"); len(p) != 1 || p[0].ID != req.ID || p[0].Requester != "vic" || p[0].DurationSeconds != 8*3600 {
		t.Fatalf("pending: %+v", p)
	}
	e.must(403, "POST", "/api/v1/access-requests/"+req.ID+"/approve", vic, nil).problem(t)
	e.write(200, "POST", "/api/v1/access-requests/"+req.ID+"/approve", e.token("e1"), api.AccessDecisionInput{Comment: "ok"})
	e.write(200, "POST", "/api/v1/access-requests/"+req.ID+"/approve", e.token("e2"), nil)
	e.must(409, "POST", "/api/v1/access-requests/"+req.ID+"/deny", e.token("e3"), api.AccessDecisionInput{Reason: "too late"}).problem(t)
	done := list("approved")
	if len(done) != 1 || done[0].GrantID == nil || !slices.Equal(done[0].Approvers, []string{"e1", "e2"}) || done[0].DecidedAt == nil {
		t.Fatalf("approved: %+v", done)
	}
	var g api.Grants
	e.must(200, "GET", "/api/v1/tunnels/"+tun+"/grants", vic, nil).decode(t, &g)
	if g.Policy.ApproverRole != domain.RoleEditor || g.Policy.RequiredApprovals != 2 || len(g.Items) != 1 || g.Items[0].ID != *done[0].GrantID ||
		g.Items[0].Subject != "vic" || g.Items[0].RequestID != req.ID || len(g.Items[0].Approvals) != 2 || g.Items[0].State != "active" {
		t.Fatalf("grants: %+v", g)
	}
	// A denial needs a reason; an unknown request is 404.
	other := e.write(201, "POST", "/api/v1/access-requests", e.token("e3"), api.AccessRequestInput{TunnelID: tun, Duration: "1h", Reason: "x"})
	e.must(422, "POST", "/api/v1/access-requests/"+other.ID+"/deny", alice, nil).problem(t)
	e.write(200, "POST", "/api/v1/access-requests/"+other.ID+"/deny", alice, api.AccessDecisionInput{Reason: "not now"})
	e.must(404, "POST", "/api/v1/access-requests/0193f2a4-7c1e-7d3a-9b2e-0000000000ff/approve", alice, nil).problem(t)
	// Revoked, the grant is listed with state=all only.
	e.write(200, "DELETE", "/api/v1/tunnels/"+tun+"/grants/"+g.Items[0].ID+"?reason=done", alice, nil)
	e.must(200, "GET", "/api/v1/tunnels/"+tun+"/grants", vic, nil).decode(t, &g)
	if len(g.Items) != 0 {
		t.Fatalf("active grants after the revocation: %+v", g.Items)
	}
	e.must(200, "GET", "/api/v1/tunnels/"+tun+"/grants?state=all", vic, nil).decode(t, &g)
	if len(g.Items) != 1 || g.Items[0].State != "revoked" {
		t.Fatalf("all grants: %+v", g.Items)
	}
}
