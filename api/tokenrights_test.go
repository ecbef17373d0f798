package api_test

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
)

// TestAgentTokenRightsFollowTunnelUse: issuing or revoking an agent token of a tunnel needs the
// right to use the tunnel (domain.MayUseTunnel, the rule a node applies to the tunnel's callers)
// besides tokens:issue / tokens:revoke. Whoever holds the agent token decides where the tunnel's
// callers' requests go: an operator who may not call alice's tunnel must not get a token that
// replaces alice's agent (the hijack of the security finding), nor revoke alice's to cut her off.
// Every refusal is a 403 problem and an audit.access_denied event, by the one path of denials.
func TestAgentTokenRightsFollowTunnelUse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	acme := e.createOrg(root, "acme", "olga")
	e.grant(acme, "adam", domain.RoleAdmin)
	e.grant(acme, "alice", domain.RoleOperator)
	e.grant(acme, "mallory", domain.RoleOperator)
	e.grant(acme, "victor", domain.RoleViewer)
	e.grant(acme, "audrey", domain.RoleAuditor)
	e.grant(acme, "walter", domain.RoleOperator)

	newTunnel := func(owner, name string) string {
		return e.write(201, "POST", "/api/v1/tunnels?org=acme", e.token(owner), api.TunnelInput{Name: name, Upstream: "http://127.0.0.1:11434"}).ID
	}
	alices := newTunnel("alice", "llm")
	walters := newTunnel("walter", "db")
	// walter leaves the organization; his tunnel stays, owned by him.
	e.must(200, "DELETE", "/api/v1/role-assignments/walter/operator?org=acme", e.token("olga"), nil)

	const (
		none  = ""
		casbn = "casbin" // refused by tokens:issue / tokens:revoke: the action itself
		use   = "use"    // refused by the tunnel-use rule: tunnels:use
	)
	cases := []struct {
		name    string
		subject string // token subject; "root" is the superadmin
		tunnel  string
		issue   int // status of POST /tunnels/{id}/tokens
		revoke  int // status of DELETE /tokens/{id} for a token root issued for the tunnel
		denied  string
	}{
		{"org owner", "olga", alices, 201, 200, none},
		{"org admin", "adam", alices, 201, 200, none},
		{"operator owning the tunnel", "alice", alices, 201, 200, none},
		{"operator not owning the tunnel", "mallory", alices, 403, 403, use},
		{"viewer", "victor", alices, 403, 403, casbn},
		{"auditor", "audrey", alices, 403, 403, casbn},
		{"superadmin outside the org", "root", alices, 201, 200, none},
		{"user without a role", "nobody", alices, 403, 403, casbn},
		{"tunnel owner whose role was withdrawn", "walter", walters, 403, 403, casbn},
	}
	tokenState := func(id string, pos uint64) string {
		var tok api.AgentToken
		e.must(200, "GET", "/api/v1/tokens/"+id+"?org=acme&wait_for="+strconv.FormatUint(pos, 10), root, nil).decode(t, &tok)
		return tok.State
	}
	owners := map[string]string{alices: "alice", walters: "walter"}
	forbidden := func(c string, r resp, subject, tunnel string) {
		p := r.problem(t)
		// No more than any 403 tells: who asked and what was refused, never the tunnel's owner.
		if !strings.HasPrefix(p.Detail, "forbidden: "+subject+" may not ") ||
			(owners[tunnel] != subject && strings.Contains(p.Detail, owners[tunnel])) {
			t.Errorf("%s: 403 detail %q", c, p.Detail)
		}
	}
	for _, c := range cases {
		tok := e.token(c.subject)
		if c.subject == "root" {
			tok = root
		}
		r := e.call("POST", "/api/v1/tunnels/"+c.tunnel+"/tokens?org=acme", tok, nil)
		if r.status != c.issue {
			t.Errorf("%s: issue an agent token: %d, want %d: %s", c.name, r.status, c.issue, problemOnly(r))
		} else if r.status == 403 {
			forbidden(c.name+": issue", r, c.subject, c.tunnel)
		} else {
			var res commands.Result
			r.decode(t, &res)
			if res.Token == "" {
				t.Errorf("%s: issued, but no token in %s", c.name, r.body)
			}
		}

		victim := e.write(201, "POST", "/api/v1/tunnels/"+c.tunnel+"/tokens?org=acme", root, nil)
		r = e.call("DELETE", "/api/v1/tokens/"+victim.ID+"?org=acme", tok, nil)
		if r.status != c.revoke {
			t.Errorf("%s: revoke an agent token: %d, want %d: %s", c.name, r.status, c.revoke, problemOnly(r))
			continue
		}
		want, pos := "revoked", victim.Position
		if r.status == 403 {
			forbidden(c.name+": revoke", r, c.subject, c.tunnel)
			want = "active" // the tunnel's agent stays connected
		} else {
			var res commands.Result
			r.decode(t, &res)
			pos = res.Position
		}
		if got := tokenState(victim.ID, pos); got != want {
			t.Errorf("%s: the token after the revocation is %s, want %s", c.name, got, want)
		}
	}

	// Every refusal is in the audit log, recorded once per request as the permission refused:
	// tokens:issue / tokens:revoke for those without them, tunnels:use for the rule.
	// The literal names, as stored in audit events and searched by auditors.
	expected := map[string]int{} // actor action resource → count
	for _, c := range cases {
		switch c.denied {
		case casbn:
			expected[c.subject+" issue tokens"] = 1
			expected[c.subject+" revoke tokens"] = 1
		case use:
			expected[c.subject+" use tunnels"] = 2
		}
	}
	ctx := context.Background()
	got := map[string]int{}
	// The service's own flusher may be writing some of them as this one runs: poll the log until
	// everything expected is there, or a deadline passes.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		e.svc.Auditor.Flush(ctx)
		recs, err := e.store.ReadStream(ctx, domain.AuditStream, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = map[string]int{}
		for _, r := range recs {
			if r.Type != domain.TypeAccessDenied {
				continue
			}
			var d domain.AccessDenied
			if err := json.Unmarshal(r.Payload, &d); err != nil {
				t.Fatal(err)
			}
			if d.OrgID == acme {
				got[d.ActorID+" "+d.Action+" "+d.Resource] += d.Count
			}
		}
		complete := true
		for k, n := range expected {
			complete = complete && got[k] >= n
		}
		if complete || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	for _, c := range cases {
		for k, n := range got {
			if strings.HasPrefix(k, c.subject+" ") && expected[k] != n {
				t.Errorf("%s: %d access_denied for %q in the audit log, want %d", c.name, n, k, expected[k])
			}
		}
		for k, n := range expected {
			if strings.HasPrefix(k, c.subject+" ") && got[k] == 0 {
				t.Errorf("%s: no access_denied for %q in the audit log, want %d", c.name, k, n)
			}
		}
		// And as an auditor of the organization sees it.
		if c.denied != none {
			var l api.List[api.AuditEntry]
			e.must(200, "GET", "/api/v1/audit?org=acme&type=audit.access_denied&actor="+url.QueryEscape(c.subject)+"&wait_for=latest", e.token("audrey"), nil).decode(t, &l)
			if len(l.Items) == 0 {
				t.Errorf("%s: the organization's audit search shows no access_denied", c.name)
			}
		}
	}
}

// problemOnly is a response body fit for a failure message: an error's, never an issued token.
func problemOnly(r resp) string {
	if r.status >= 400 {
		return string(r.body)
	}
	return "(a success; its body is not shown, it may hold a token)"
}
