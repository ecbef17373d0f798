package api_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
	"github.com/tunnelplane/tunnelplane/projections"
)

// matrixCase is one endpoint of the authorization matrix. req builds the request for an
// organization (by name), creating whatever the request acts on first (as root), so a denial is
// never a missing object in disguise.
type matrixCase struct {
	name    string
	allowed []domain.Role // organization roles that may do it (superadmins may do everything)
	ok      int
	req     func(org string) (method, path string, body any)
}

// TestAuthorizationMatrix: every role × every endpoint × own organization / another organization.
// Org roles act only in their organization: in another one everything is 403, as it is for a user
// without roles; superadmins may do everything everywhere; platform objects (nodes, keys,
// projections, platform roles and audit) are for superadmins only.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{{Subject: "u-1", Username: "alice"}}})
	e := newEnv(t, withAnalyticsReports, withOIDC(t, idp.Issuer), func(c *api.Config) {
		c.PublicURL, c.BrowserLoginOrigins = selfURL, []string{"https://*.nodes.test"}
	})
	root := e.superadmin()
	orgs := map[string]string{"acme": e.createOrg(root, "acme", "owner-of-acme"), "globex": e.createOrg(root, "globex", "owner-of-globex")}
	roles := []domain.Role{domain.RoleOwner, domain.RoleAdmin, domain.RoleOperator, domain.RoleEditor, domain.RoleViewer, domain.RoleAuditor}
	for _, r := range roles {
		e.grant(orgs["acme"], "u-"+string(r), r)
	}
	tokens := map[string]string{"superadmin": root, "none": e.token("u-none")}
	for _, r := range roles {
		tokens[string(r)] = e.token("u-" + string(r))
	}

	seq := 0
	next := func() int { seq++; return seq }
	tunnel := func(org string) string {
		return e.write(201, "POST", "/api/v1/tunnels?org="+org, root, map[string]string{"name": fmt.Sprintf("t-%d", next()), "upstream": "http://127.0.0.1:1"}).ID
	}
	shared := map[string]string{"acme": tunnel("acme"), "globex": tunnel("globex")}
	agentToken := func(org string) string {
		return e.write(201, "POST", "/api/v1/tunnels/"+shared[org]+"/tokens?org="+org, root, nil).ID
	}
	sharedToken := map[string]string{"acme": agentToken("acme"), "globex": agentToken("globex")}
	accessKey := func(org string) string {
		return e.write(201, "POST", "/api/v1/tunnels/"+shared[org]+"/access-keys?org="+org, root, nil).ID
	}
	sharedKey := map[string]string{"acme": accessKey("acme"), "globex": accessKey("globex")}
	sink := func(org string) string {
		return e.write(201, "POST", "/api/v1/siem/sinks?org="+org, root, siemSinkBody(fmt.Sprintf("s-%d", next()))).ID
	}
	sharedSink := map[string]string{"acme": sink("acme"), "globex": sink("globex"), "*": sink("*")}
	hook := func(org string) string {
		return e.write(201, "POST", "/api/v1/webhooks?org="+org, root, map[string]any{"name": fmt.Sprintf("h-%d", next()), "url": "https://hooks.example.com/tp"}).ID
	}
	sharedHook := map[string]string{"acme": hook("acme"), "globex": hook("globex")}
	// Access requests are made by a viewer of both organizations (nobody decides their own).
	e.grant(orgs["acme"], "requester", domain.RoleViewer)
	e.grant(orgs["globex"], "requester", domain.RoleViewer)
	requester := e.token("requester")
	accessRequest := func(org string) string {
		return e.write(201, "POST", "/api/v1/access-requests", requester,
			map[string]string{"org": org, "tunnel_id": tunnel(org), "duration": "1h", "reason": "on call"}).ID
	}
	grant := func(org string) string {
		return e.write(201, "POST", "/api/v1/tunnels/"+shared[org]+"/grants?org="+org, root, map[string]string{"user": fmt.Sprintf("g-%d", next()), "ttl": "1h"}).ID
	}
	schedule := func(org string) string {
		return e.write(201, "POST", "/api/v1/report-schedules?org="+org, root, scheduleBody(next())).ID
	}
	sharedSchedule := map[string]string{"acme": schedule("acme"), "globex": schedule("globex"), "*": schedule("*")}
	all := roles
	writers := []domain.Role{domain.RoleOwner, domain.RoleAdmin, domain.RoleOperator, domain.RoleEditor}
	deleters := []domain.Role{domain.RoleOwner, domain.RoleAdmin, domain.RoleOperator}
	roleAdmins := []domain.Role{domain.RoleOwner, domain.RoleAdmin}
	readers := []domain.Role{domain.RoleOwner, domain.RoleAdmin, domain.RoleAuditor}

	orgCases := []matrixCase{
		{"get org", all, 200, func(org string) (string, string, any) { return "GET", "/api/v1/orgs/" + org, nil }},
		{"create tunnel", writers, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/tunnels?org=" + org, map[string]string{"name": fmt.Sprintf("n-%d", next()), "upstream": "http://127.0.0.1:1"}
		}},
		{"list tunnels", all, 200, func(org string) (string, string, any) { return "GET", "/api/v1/tunnels?org=" + org, nil }},
		{"get tunnel", all, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/tunnels/" + shared[org] + "?org=" + org, nil
		}},
		{"update tunnel", writers, 200, func(org string) (string, string, any) {
			return "PATCH", "/api/v1/tunnels/" + shared[org] + "?org=" + org, map[string]string{"upstream": fmt.Sprintf("http://127.0.0.1:%d", next())}
		}},
		// Labels and CORS decide who reaches the tunnel: sharing, for owners and admins.
		{"label tunnel, set its CORS", roleAdmins, 200, func(org string) (string, string, any) {
			return "PATCH", "/api/v1/tunnels/" + tunnel(org) + "?org=" + org, map[string]any{"labels": map[string]string{"team": "ml"},
				"cors": map[string]any{"mode": "origins", "origins": []string{"https://app.example.com"}}}
		}},
		{"delete tunnel", deleters, 200, func(org string) (string, string, any) {
			return "DELETE", "/api/v1/tunnels/" + tunnel(org) + "?org=" + org, nil
		}},
		// The shared tunnel is root's: an operator may not use it, so may neither issue nor revoke
		// its agent tokens (TestAgentTokenRightsFollowTunnelUse has operators with their own).
		{"issue token", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/tunnels/" + shared[org] + "/tokens?org=" + org, nil
		}},
		{"list tokens", all, 200, func(org string) (string, string, any) { return "GET", "/api/v1/tokens?org=" + org, nil }},
		{"get token", all, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/tokens/" + sharedToken[org] + "?org=" + org, nil
		}},
		{"revoke token", roleAdmins, 200, func(org string) (string, string, any) {
			return "DELETE", "/api/v1/tokens/" + agentToken(org) + "?org=" + org, nil
		}},
		// Access keys call the tunnel: as for agent tokens, issuing or revoking one needs the right
		// to use it, which operators lack on root's tunnel (commands TestAccessKeys has an operator with its own).
		{"issue access key", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/tunnels/" + shared[org] + "/access-keys?org=" + org, map[string]any{"ttl": "30d", "cidrs": []string{"10.0.0.0/8"}}
		}},
		// A key for a label selector calls whatever is labelled to match later: only who may use
		// every tunnel of the organization issues one.
		{"issue label access key", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/access-keys?org=" + org, map[string]any{"selector": map[string]string{"team": "ml"}, "ttl": "30d"}
		}},
		{"list access keys", all, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/access-keys?org=" + org + "&tunnel_id=" + shared[org], nil
		}},
		{"get access key", all, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/access-keys/" + sharedKey[org] + "?org=" + org, nil
		}},
		{"revoke access key", roleAdmins, 200, func(org string) (string, string, any) {
			return "DELETE", "/api/v1/access-keys/" + accessKey(org) + "?org=" + org, nil
		}},
		// Sharing: grants and the access policy are for who may share (owner, admin); anyone of
		// the organization may ask for access; deciding is for the policy's role (default: admin,
		// and owners). An auditor only reads.
		{"create grant", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/tunnels/" + shared[org] + "/grants?org=" + org, map[string]string{"group": fmt.Sprintf("grp-%d", next()), "ttl": "2h"}
		}},
		{"list grants", all, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/tunnels/" + shared[org] + "/grants?org=" + org, nil
		}},
		{"revoke grant", roleAdmins, 200, func(org string) (string, string, any) {
			return "DELETE", "/api/v1/tunnels/" + shared[org] + "/grants/" + grant(org) + "?org=" + org, nil
		}},
		{"set access policy", roleAdmins, 200, func(org string) (string, string, any) {
			return "PUT", "/api/v1/tunnels/" + tunnel(org) + "/access-policy?org=" + org, map[string]any{"approver_role": "editor", "required_approvals": 2}
		}},
		{"set access log", roleAdmins, 200, func(org string) (string, string, any) {
			return "PUT", "/api/v1/tunnels/" + tunnel(org) + "/access-log?org=" + org, map[string]any{"access_log": "calls"}
		}},
		{"list access calls", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/tunnels/" + shared[org] + "/access?org=" + org, nil
		}},
		{"request access", []domain.Role{domain.RoleOwner, domain.RoleAdmin, domain.RoleOperator, domain.RoleEditor, domain.RoleViewer}, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/access-requests", map[string]string{"org": org, "tunnel_id": tunnel(org), "duration": "1h", "reason": "debugging"}
		}},
		{"list access requests", all, 200, func(org string) (string, string, any) { return "GET", "/api/v1/access-requests?org=" + org, nil }},
		{"approve access request", roleAdmins, 200, func(org string) (string, string, any) {
			return "POST", "/api/v1/access-requests/" + accessRequest(org) + "/approve?org=" + org, nil
		}},
		{"deny access request", roleAdmins, 200, func(org string) (string, string, any) {
			return "POST", "/api/v1/access-requests/" + accessRequest(org) + "/deny?org=" + org, map[string]string{"reason": "not now"}
		}},
		{"who could reach", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/access?org=" + org + "&tunnel=" + shared[org], nil
		}},
		{"who could reach at", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/access?org=" + org + "&tunnel=" + shared[org] + "&at=" + url.QueryEscape(time.Now().Format(time.RFC3339Nano)), nil
		}},
		{"tunnel activity", all, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/tunnels/" + shared[org] + "/activity?org=" + org, nil
		}},
		{"assign viewer", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/role-assignments", map[string]string{"org": org, "user_id": fmt.Sprintf("v-%d", next()), "role": "viewer"}
		}},
		{"assign owner", []domain.Role{domain.RoleOwner}, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/role-assignments", map[string]string{"org": org, "user_id": fmt.Sprintf("o-%d", next()), "role": "owner"}
		}},
		{"unassign viewer", roleAdmins, 200, func(org string) (string, string, any) {
			user := fmt.Sprintf("v-%d", next())
			e.write(201, "POST", "/api/v1/role-assignments", root, map[string]string{"org": org, "user_id": user, "role": "viewer"})
			return "DELETE", "/api/v1/role-assignments/" + url.PathEscape(user) + "/viewer?org=" + org, nil
		}},
		{"list roles", readers, 200, func(org string) (string, string, any) { return "GET", "/api/v1/role-assignments?org=" + org, nil }},
		{"delete user", roleAdmins, 200, func(org string) (string, string, any) {
			user := fmt.Sprintf("d-%d", next())
			e.write(201, "POST", "/api/v1/role-assignments", root, map[string]string{"org": org, "user_id": user, "role": "viewer"})
			return "DELETE", "/api/v1/users/" + url.PathEscape(user) + "?reason=left&org=" + org, nil
		}},
		{"search audit", readers, 200, func(org string) (string, string, any) { return "GET", "/api/v1/audit?org=" + org, nil }},
		{"create siem sink", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/siem/sinks?org=" + org, siemSinkBody(fmt.Sprintf("s-%d", next()))
		}},
		{"usage report", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/reports/usage?format=csv&from=2027-03-13&to=2027-03-14&org=" + org, nil
		}},
		{"chargeback report", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/reports/chargeback?format=csv&month=2027-03&org=" + org, nil
		}},
		{"capacity report", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/reports/capacity?format=csv&from=2027-03-13&to=2027-03-14&org=" + org, nil
		}},
		{"list siem sinks", readers, 200, func(org string) (string, string, any) { return "GET", "/api/v1/siem/sinks?org=" + org, nil }},
		{"get siem sink", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/siem/sinks/" + sharedSink[org] + "?org=" + org, nil
		}},
		{"update siem sink", roleAdmins, 200, func(org string) (string, string, any) {
			return "PUT", "/api/v1/siem/sinks/" + sharedSink[org] + "?org=" + org, siemSinkBody(fmt.Sprintf("s-%d", next()))
		}},
		{"skip for siem sink", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/siem/sinks/" + sharedSink[org] + "/skips?org=" + org, map[string]any{"position": 1, "reason": "refused for good"}
		}},
		{"remove siem sink", roleAdmins, 200, func(org string) (string, string, any) {
			return "DELETE", "/api/v1/siem/sinks/" + sink(org) + "?org=" + org, nil
		}},
		// Webhooks send an organization's notifications out: its owners and admins only.
		{"create webhook", roleAdmins, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/webhooks?org=" + org, map[string]any{"name": fmt.Sprintf("h-%d", next()), "url": "https://hooks.example.com/tp",
				"types": []string{"access.requested", "grant.expiring"}}
		}},
		{"list webhooks", roleAdmins, 200, func(org string) (string, string, any) { return "GET", "/api/v1/webhooks?org=" + org, nil }},
		{"get webhook", roleAdmins, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/webhooks/" + sharedHook[org] + "?org=" + org, nil
		}},
		{"update webhook", roleAdmins, 200, func(org string) (string, string, any) {
			return "PUT", "/api/v1/webhooks/" + sharedHook[org] + "?org=" + org, map[string]any{"name": fmt.Sprintf("h-%d", next()), "url": "https://hooks.example.com/tp"}
		}},
		{"rotate webhook secret", roleAdmins, 200, func(org string) (string, string, any) {
			return "POST", "/api/v1/webhooks/" + sharedHook[org] + "/rotate-secret?org=" + org, nil
		}},
		{"delete webhook", roleAdmins, 200, func(org string) (string, string, any) {
			return "DELETE", "/api/v1/webhooks/" + hook(org) + "?org=" + org, nil
		}},
		// Report schedules and stored reports: who may read that kind of report in the org.
		{"create report schedule", readers, 201, func(org string) (string, string, any) {
			return "POST", "/api/v1/report-schedules?org=" + org, scheduleBody(next())
		}},
		{"list report schedules", readers, 200, func(org string) (string, string, any) { return "GET", "/api/v1/report-schedules?org=" + org, nil }},
		{"get report schedule", readers, 200, func(org string) (string, string, any) {
			return "GET", "/api/v1/report-schedules/" + sharedSchedule[org], nil
		}},
		{"update report schedule", readers, 200, func(org string) (string, string, any) {
			return "PATCH", "/api/v1/report-schedules/" + sharedSchedule[org], map[string]any{"cadence": map[string]any{"every": "daily", "hour": next() % 24}}
		}},
		{"pause report schedule", readers, 200, func(org string) (string, string, any) {
			return "POST", "/api/v1/report-schedules/" + schedule(org) + "/pause", nil
		}},
		{"resume report schedule", readers, 200, func(org string) (string, string, any) {
			return "POST", "/api/v1/report-schedules/" + schedule(org) + "/resume", nil
		}},
		{"delete report schedule", readers, 200, func(org string) (string, string, any) {
			return "DELETE", "/api/v1/report-schedules/" + schedule(org), nil
		}},
		{"list reports", readers, 200, func(org string) (string, string, any) { return "GET", "/api/v1/reports?org=" + org, nil }},
	}
	enrollment, _ := newNodeEnrollment(t, e.store, "node-m")
	node := e.write(201, "POST", "/api/v1/nodes", root, enrollment).ID
	platformCases := []matrixCase{
		{"create org", nil, 201, func(string) (string, string, any) {
			return "POST", "/api/v1/orgs", map[string]string{"name": fmt.Sprintf("org-%d", next())}
		}},
		{"enroll node", nil, 201, func(string) (string, string, any) {
			n, _ := newNodeEnrollment(t, e.store, fmt.Sprintf("node-%d", next()))
			return "POST", "/api/v1/nodes", n
		}},
		{"list nodes", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/nodes", nil }},
		{"get node", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/nodes/" + node, nil }},
		{"drain node", nil, 200, func(string) (string, string, any) {
			n, _ := newNodeEnrollment(t, e.store, fmt.Sprintf("node-%d", next()))
			return "POST", "/api/v1/nodes/" + e.write(201, "POST", "/api/v1/nodes", root, n).ID + "/drain", nil
		}},
		{"remove node", nil, 200, func(string) (string, string, any) {
			n, _ := newNodeEnrollment(t, e.store, fmt.Sprintf("node-%d", next()))
			return "DELETE", "/api/v1/nodes/" + e.write(201, "POST", "/api/v1/nodes", root, n).ID, nil
		}},
		{"list keys", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/keys", nil }},
		{"rotate token key", nil, 201, func(string) (string, string, any) {
			return "POST", "/api/v1/keys/rotations", map[string]string{"purpose": "token"}
		}},
		{"rotate log key", nil, 201, func(string) (string, string, any) {
			return "POST", "/api/v1/keys/rotations", map[string]string{"purpose": "log"}
		}},
		{"list projections", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/projections", nil }},
		{"rebuild projection", nil, 200, func(string) (string, string, any) { return "POST", "/api/v1/projections/orgs/rebuild", nil }},
		{"list platform roles", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/role-assignments?org=*", nil }},
		{"search platform audit", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/audit?org=*", nil }},
		{"create platform siem sink", nil, 201, func(string) (string, string, any) {
			return "POST", "/api/v1/siem/sinks?org=*", siemSinkBody(fmt.Sprintf("s-%d", next()))
		}},
		{"list platform siem sinks", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/siem/sinks?org=*", nil }},
		{"get platform siem sink", nil, 200, func(string) (string, string, any) {
			return "GET", "/api/v1/siem/sinks/" + sharedSink["*"] + "?org=*", nil
		}},
		{"update platform siem sink", nil, 200, func(string) (string, string, any) {
			return "PUT", "/api/v1/siem/sinks/" + sharedSink["*"] + "?org=*", siemSinkBody(fmt.Sprintf("s-%d", next()))
		}},
		{"skip for platform siem sink", nil, 201, func(string) (string, string, any) {
			return "POST", "/api/v1/siem/sinks/" + sharedSink["*"] + "/skips?org=*", map[string]any{"position": 1, "reason": "refused for good"}
		}},
		{"remove platform siem sink", nil, 200, func(string) (string, string, any) {
			return "DELETE", "/api/v1/siem/sinks/" + sink("*") + "?org=*", nil
		}},
		{"erase subject", nil, 200, func(string) (string, string, any) {
			return "POST", "/api/v1/subjects/" + url.PathEscape(fmt.Sprintf("leaver-%d", next())) + "/erase", map[string]string{"reason": "left"}
		}},
		{"create platform report schedule", nil, 201, func(string) (string, string, any) {
			return "POST", "/api/v1/report-schedules?org=*", scheduleBody(next())
		}},
		{"list platform report schedules", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/report-schedules?org=*", nil }},
		{"get platform report schedule", nil, 200, func(string) (string, string, any) {
			return "GET", "/api/v1/report-schedules/" + sharedSchedule["*"], nil
		}},
		{"delete platform report schedule", nil, 200, func(string) (string, string, any) {
			return "DELETE", "/api/v1/report-schedules/" + schedule("*"), nil
		}},
		{"list platform reports", nil, 200, func(string) (string, string, any) { return "GET", "/api/v1/reports?org=*", nil }},
		{"delete user everywhere", nil, 200, func(string) (string, string, any) {
			user := fmt.Sprintf("d-%d", next())
			e.write(201, "POST", "/api/v1/role-assignments", root, map[string]string{"org": orgs["acme"], "user_id": user, "role": "viewer"})
			return "DELETE", "/api/v1/users/" + url.PathEscape(user) + "?reason=left&org=*", nil
		}},
		{"assign superadmin", nil, 201, func(string) (string, string, any) {
			return "POST", "/api/v1/role-assignments", map[string]string{"user_id": fmt.Sprintf("s-%d", next()), "role": "superadmin"}
		}},
	}

	who := []string{"owner", "admin", "operator", "editor", "viewer", "auditor", "superadmin", "none"}
	check := func(name, subject, scope string, want int, method, path string, body any) {
		r := e.call(method, path, tokens[subject], body)
		if r.status != want {
			t.Errorf("%-20s %-10s %-6s %s %s: %d, want %d: %s", name, subject, scope, method, path, r.status, want, r.body)
			return
		}
		if want == 403 {
			r.problem(t)
		}
	}
	for _, c := range orgCases {
		for _, subject := range who {
			for _, scope := range []string{"own", "other"} {
				org := map[string]string{"own": "acme", "other": "globex"}[scope]
				want := 403
				if subject == "superadmin" || (scope == "own" && slices.Contains(c.allowed, domain.Role(subject))) {
					want = c.ok
				}
				method, path, body := c.req(org)
				check(c.name, subject, scope, want, method, path, body)
			}
		}
	}
	for _, c := range platformCases {
		for _, subject := range who {
			want := 403
			if subject == "superadmin" {
				want = c.ok
			}
			method, path, body := c.req("")
			check(c.name, subject, "-", want, method, path, body)
		}
	}

	// Logging in is public: a bearer token changes nothing, and the ID token alone decides.
	foreign := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{{Subject: "u-1", Username: "alice"}}})
	// Each login exchanges an ID token of its own (one is exchanged once): a nonce tells them apart.
	for _, subject := range append(who, "no token") {
		check("oidc settings", subject, "-", 200, "GET", "/api/v1/auth/oidc", nil)
		check("oidc login", subject, "-", 200, "POST", "/api/v1/auth/oidc/token", api.OIDCLoginInput{IDToken: idp.IssueIDTokenWithNonce(t, "tunnelplane-cli", "u-1", "matrix-"+subject, time.Minute)})
		check("oidc login, foreign token", subject, "-", 401, "POST", "/api/v1/auth/oidc/token", api.OIDCLoginInput{IDToken: foreign.IssueIDToken(t, "tunnelplane-cli", "u-1", time.Minute)})
		// Browser login: public too; where it may return decides, not who asks.
		check("browser login start", subject, "-", 302, "GET", api.BrowserLoginPath+"?origin=https%3A%2F%2Fweb.acme.nodes.test&state=s1", nil)
		check("browser login elsewhere", subject, "-", 400, "GET", api.BrowserLoginPath+"?origin=https%3A%2F%2Fevil.example&state=s1", nil)
		check("browser login callback", subject, "-", 401, "GET", api.BrowserCallbackPath+"?state=unknown&code=c", nil)
		check("browser logout", subject, "-", 204, "POST", api.BrowserLogoutPath, nil)
	}

	// The notifications feed is everyone's own: every authenticated subject opens theirs (it
	// carries only what is meant for them: TestNotificationFeed), nobody without a token.
	for _, subject := range who {
		if st := e.streamStatus("/api/v1/notifications/stream", tokens[subject]); st != 200 {
			t.Errorf("notifications feed of %s: %d, want 200", subject, st)
		}
	}
	if st := e.streamStatus("/api/v1/notifications/stream", ""); st != 401 {
		t.Errorf("notifications feed without a token: %d, want 401", st)
	}

	// Listing organizations is open to everyone, each seeing only their own.
	for _, subject := range who {
		var l api.List[api.Org]
		e.must(200, "GET", "/api/v1/orgs?limit=500", tokens[subject], nil).decode(t, &l)
		var names []string
		for _, o := range l.Items {
			names = append(names, o.Name)
		}
		switch subject {
		case "superadmin":
			if len(names) < 3 || !slices.Contains(names, "globex") {
				t.Errorf("superadmin sees %v", names)
			}
		case "none":
			if len(names) != 0 {
				t.Errorf("a user without roles sees %v", names)
			}
		default:
			if fmt.Sprint(names) != "[acme]" {
				t.Errorf("%s sees %v", subject, names)
			}
		}
	}

	// Objects of another organization named through one's own: not found, for every role.
	for _, subject := range []string{"owner", "viewer"} {
		for _, req := range [][3]string{
			{"GET", "/api/v1/tunnels/" + shared["globex"] + "?org=acme"},
			{"PATCH", "/api/v1/tunnels/" + shared["globex"] + "?org=acme", `{"upstream":"http://127.0.0.1:9"}`},
			{"DELETE", "/api/v1/tunnels/" + shared["globex"] + "?org=acme"},
			{"POST", "/api/v1/tunnels/" + shared["globex"] + "/tokens?org=acme"},
			{"GET", "/api/v1/tokens/" + sharedToken["globex"] + "?org=acme"},
			{"DELETE", "/api/v1/tokens/" + sharedToken["globex"] + "?org=acme"},
			{"POST", "/api/v1/tunnels/" + shared["globex"] + "/access-keys?org=acme"},
			{"GET", "/api/v1/access-keys/" + sharedKey["globex"] + "?org=acme"},
			{"DELETE", "/api/v1/access-keys/" + sharedKey["globex"] + "?org=acme"},
			{"GET", "/api/v1/siem/sinks/" + sharedSink["globex"] + "?org=acme"},
			{"GET", "/api/v1/siem/sinks/" + sharedSink["*"] + "?org=acme"},
			{"DELETE", "/api/v1/siem/sinks/" + sharedSink["globex"] + "?org=acme"},
			{"GET", "/api/v1/webhooks/" + sharedHook["globex"] + "?org=acme"},
			{"DELETE", "/api/v1/webhooks/" + sharedHook["globex"] + "?org=acme"},
			{"POST", "/api/v1/webhooks/" + sharedHook["globex"] + "/rotate-secret?org=acme"},
			{"POST", "/api/v1/tunnels/" + shared["globex"] + "/grants?org=acme", `{"user":"x","ttl":"1h"}`},
			{"GET", "/api/v1/tunnels/" + shared["globex"] + "/grants?org=acme"},
			{"GET", "/api/v1/tunnels/" + shared["globex"] + "/activity?org=acme"},
		} {
			want := 404
			if subject == "viewer" && (req[0] != "GET" || strings.Contains(req[1], "/siem/") || strings.Contains(req[1], "/webhooks/")) {
				want = 403 // a viewer may not change anything in acme at all, nor see its sinks or webhooks
			}
			var body any
			if req[2] != "" {
				body = req[2]
			}
			check("cross-org object", subject, "own", want, req[0], req[1], body)
		}
	}
	// An organization that does not exist: 403 for everyone but superadmins, who get 404.
	check("unknown org", "owner", "-", 403, "GET", "/api/v1/tunnels?org=initech", nil)
	check("unknown org", "superadmin", "-", 404, "GET", "/api/v1/tunnels?org=initech", nil)

	// Denials are audited, aggregated per actor and permission.
	e.svc.Auditor.Flush(context.Background())
	h := head(t, e.store)
	if err := e.runnerWait(t, h-1); err != nil {
		t.Fatal(err)
	}
	var audit api.List[api.AuditEntry]
	e.must(200, "GET", "/api/v1/audit?org=*&type=audit.access_denied&actor=u-none&limit=500", root, nil).decode(t, &audit)
	if len(audit.Items) == 0 {
		t.Error("no access_denied events for u-none")
	}
	_ = projections.Audit
}

// A user whose id is a role's name holds nothing without a grant (casbin links a name to itself).
func TestUserNamedLikeARoleHoldsNoRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	e.must(403, "GET", "/api/v1/nodes", e.token("superadmin"), nil).problem(t)
	e.must(403, "GET", "/api/v1/role-assignments?org=*", e.token("superadmin"), nil).problem(t)
	owner := e.token("owner")
	e.must(403, "POST", "/api/v1/tunnels?org=acme", owner, api.TunnelInput{Name: "pwn", Upstream: "http://127.0.0.1:1"}).problem(t)
	e.must(403, "POST", "/api/v1/role-assignments", owner, map[string]string{"org": "acme", "user_id": "mallory", "role": "owner"}).problem(t)
	// Granted, the same names work as any user's.
	e.grant(domain.PlatformOrg, "superadmin", domain.RoleSuperadmin)
	e.must(200, "GET", "/api/v1/nodes", e.token("superadmin"), nil)
}

// scheduleBody is a daily SOC 2 report schedule at a local hour n picks.
func scheduleBody(n int) map[string]any {
	return map[string]any{"kind": "soc2", "format": "json", "cadence": map[string]any{"every": "daily", "hour": n % 24}}
}
