package api_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// TestDeleteUser: deleting a user from an organization withdraws their roles there, revokes their
// grants by name, denies their pending requests and revokes the access keys they issued in one
// append with user.deleted, each caused by it; their roles elsewhere stay; an admin may not delete an owner, nobody deletes themselves,
// an unknown user is 404; a superadmin deletes a user everywhere, and the API then refuses the
// user's earlier tokens; the point-in-time answer lists
// the deletions.
func TestDeleteUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	other := e.createOrg(root, "globex", "olga")
	e.grant(org, "gus", domain.RoleViewer)
	e.grant(org, "gus", domain.RoleEditor)
	e.grant(other, "gus", domain.RoleViewer)
	e.grant(org, "carl", domain.RoleAdmin)
	tun := e.write(201, "POST", "/api/v1/tunnels?org=acme", root, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}).ID
	alice, gus, carl := e.token("alice"), e.token("gus"), e.token("carl")
	grant := e.write(201, "POST", "/api/v1/tunnels/"+tun+"/grants?org=acme", alice, map[string]string{"user": "gus", "ttl": "1h"}).ID
	group := e.write(201, "POST", "/api/v1/tunnels/"+tun+"/grants?org=acme", alice, map[string]string{"group": "gus", "ttl": "1h"}).ID
	req := e.write(201, "POST", "/api/v1/access-requests", gus, api.AccessRequestInput{Org: "acme", TunnelID: tun, Duration: "8h", Reason: "debugging"}).ID
	// An access key for gus's own tunnel (editors create tunnels, operators issue keys).
	e.grant(org, "gus", domain.RoleOperator)
	own := e.write(201, "POST", "/api/v1/tunnels?org=acme", gus, map[string]string{"name": "gus-llm", "upstream": "http://127.0.0.1:1"}).ID
	gusKey := e.write(201, "POST", "/api/v1/tunnels/"+own+"/access-keys?org=acme", gus, nil).ID
	aliceKey := e.write(201, "POST", "/api/v1/tunnels/"+tun+"/access-keys?org=acme", alice, nil).ID

	del := func(user, org, reason string) string {
		return "/api/v1/users/" + url.PathEscape(user) + "?org=" + url.QueryEscape(org) + "&reason=" + url.QueryEscape(reason)
	}
	e.must(422, "DELETE", del("gus", "acme", ""), alice, nil).problem(t)
	e.must(422, "DELETE", del("alice", "acme", "x"), alice, nil).problem(t)
	e.must(403, "DELETE", del("alice", "acme", "x"), carl, nil).problem(t) // an admin does not delete an owner
	e.must(403, "DELETE", del("gus", "acme", "x"), gus, nil).problem(t)
	e.must(404, "DELETE", del("nobody", "acme", "x"), alice, nil).problem(t)
	e.must(403, "DELETE", del("gus", "*", "x"), alice, nil).problem(t) // everywhere: superadmins only

	res := e.write(200, "DELETE", del("gus", "acme", "left the team"), carl, nil)
	if res.ID != "gus" || res.Position == 0 {
		t.Fatalf("result %+v", res)
	}
	// One append: user.deleted first, then what it caused, each naming it as its cause.
	recs, err := e.store.ReadAll(t.Context(), res.Position-6, 10)
	if err != nil {
		t.Fatal(err)
	}
	var deletionID string
	caused := map[string]int{}
	for _, r := range recs {
		var m domain.Metadata
		_ = json.Unmarshal(r.Metadata, &m)
		switch r.Type {
		case domain.TypeUserDeleted:
			var d domain.UserDeleted
			_ = json.Unmarshal(r.Payload, &d)
			if d.OrgID != org || d.UserID != "gus" || d.DeletedBy != "carl" || d.Reason != "left the team" || d.RolesWithdrawn != 3 || d.GrantsRevoked != 1 || d.RequestsDenied != 1 || d.KeysRevoked != 1 {
				t.Fatalf("user.deleted %+v", d)
			}
			deletionID = r.EventID.String()
		case domain.TypeRoleUnassigned, domain.TypeGrantRevoked, domain.TypeAccessRequestDenied, domain.TypeAccessKeyRevoked:
			if m.CausationID != deletionID || deletionID == "" {
				t.Errorf("%s at %d: causation %q, want the deletion %q", r.Type, r.Position, m.CausationID, deletionID)
			}
			caused[r.Type]++
		}
	}
	if caused[domain.TypeRoleUnassigned] != 3 || caused[domain.TypeGrantRevoked] != 1 || caused[domain.TypeAccessRequestDenied] != 1 || caused[domain.TypeAccessKeyRevoked] != 1 {
		t.Fatalf("caused events %v", caused)
	}
	for id, want := range map[string]string{gusKey: "revoked", aliceKey: "active"} {
		var k api.AccessKey
		e.must(200, "GET", "/api/v1/access-keys/"+id+"?org=acme&wait_for="+fmt.Sprint(res.Position), alice, nil).decode(t, &k)
		if k.State != want || (want == "revoked" && (k.RevokeReason == nil || *k.RevokeReason != domain.CausedByUserDeletion)) {
			t.Errorf("access key %s after the deletion: %+v, want %s", id, k, want)
		}
	}
	var roles api.List[api.RoleAssignment]
	e.must(200, "GET", "/api/v1/role-assignments?org=acme&user_id=gus&wait_for=latest", alice, nil).decode(t, &roles)
	if len(roles.Items) != 0 {
		t.Fatalf("gus's roles in acme after the deletion: %+v", roles.Items)
	}
	e.must(200, "GET", "/api/v1/role-assignments?org=globex&user_id=gus", root, nil).decode(t, &roles)
	if len(roles.Items) != 1 {
		t.Fatalf("gus's roles in globex (not deleted there): %+v", roles.Items)
	}
	var g api.Grants
	e.must(200, "GET", "/api/v1/tunnels/"+tun+"/grants?state=all", alice, nil).decode(t, &g)
	for _, it := range g.Items {
		if want := map[string]string{grant: "revoked", group: "active"}[it.ID]; it.State != want {
			t.Errorf("grant %s (%s %s) is %s, want %s", it.ID, it.SubjectKind, it.Subject, it.State, want)
		}
	}
	var reqs api.List[api.AccessRequest]
	e.must(200, "GET", "/api/v1/access-requests?state=denied&wait_for=latest", alice, nil).decode(t, &reqs)
	if len(reqs.Items) != 1 || reqs.Items[0].ID != req {
		t.Fatalf("denied requests: %+v", reqs.Items)
	}

	// Deleted from acme only, gus's token still opens the API (gus is in globex).
	e.must(200, "GET", "/api/v1/orgs", gus, nil)
	// Everywhere, by a superadmin: globex's role goes too.
	all := e.write(200, "DELETE", del("gus", "*", "left the company"), root, nil)
	// And the API refuses gus's earlier token even where no role is needed, as the nodes do
	// (it follows the log: at once, give or take the follower's moment).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r := e.call("GET", "/api/v1/orgs", gus, nil)
		if r.status == 401 && strings.Contains(string(r.body), "deleted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gus's token from before the deletion everywhere: %d %s", r.status, r.body)
		}
	}
	// A token issued in a later second is decided as anyone's: it authenticates, and finds no
	// organization.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
	var orgs api.List[api.Org]
	e.must(200, "GET", "/api/v1/orgs", e.token("gus"), nil).decode(t, &orgs)
	if len(orgs.Items) != 0 {
		t.Fatalf("gus's organizations after the deletion everywhere: %+v", orgs.Items)
	}
	e.must(200, "GET", "/api/v1/role-assignments?org=globex&user_id=gus&wait_for="+fmt.Sprint(all.Position), root, nil).decode(t, &roles)
	if len(roles.Items) != 0 {
		t.Fatalf("gus's roles in globex after the deletion everywhere: %+v", roles.Items)
	}
	// Who could reach the tunnel lists both deletions, live and replayed.
	for _, q := range []string{"", "&at=" + url.QueryEscape(e.reach(root, "tunnel="+tun+"&org=acme").At.Format("2006-01-02T15:04:05.999999999Z07:00"))} {
		ans := e.reach(root, "tunnel="+tun+"&org=acme"+q)
		if len(ans.Deletions) != 2 || ans.Deletions[0].OrgID != org || ans.Deletions[1].OrgID != domain.PlatformOrg || ans.Deletions[1].Reason != "left the company" {
			t.Fatalf("deletions in the %s answer: %+v", ans.Source, ans.Deletions)
		}
		for _, s := range ans.Subjects {
			if s.Kind == "user" && s.ID == "gus" {
				t.Fatalf("gus still reaches the tunnel in the %s answer: %+v", ans.Source, s)
			}
		}
	}
}
