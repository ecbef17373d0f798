package api_test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/compliance/reach"
	"github.com/tunnelplane/tunnelplane/domain"
)

func (e *env) reach(tok, query string) reach.Answer {
	e.t.Helper()
	var a reach.Answer
	e.must(200, "GET", "/api/v1/access?"+query, tok, nil).decode(e.t, &a)
	return a
}

func subject(a reach.Answer, kind, id string) *reach.Subject {
	for i := range a.Subjects {
		if a.Subjects[i].Kind == kind && a.Subjects[i].ID == id {
			return &a.Subjects[i]
		}
	}
	return nil
}

// Who could reach a tunnel: the live answer (read models) recorded at several moments of a
// scripted history equals the answer replayed from the log at each of those moments afterwards,
// and each moment shows what the history did (roles assigned and withdrawn, a grant from a 2-of-3
// access request with its approvals and request, a grant revoked, a grant past its expiry, an
// access key issued and revoked, the tunnel's owner losing their role, a rename, the deletion).
func TestWhoCouldReachLiveEqualsReplay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	for _, u := range []string{"dave", "erin", "frank"} {
		e.grant(org, u, domain.RoleAdmin)
	}
	e.grant(org, "bob", domain.RoleEditor)
	e.grant(org, "victor", domain.RoleViewer)
	bob, victor := e.token("bob"), e.token("victor")
	tunnel := e.write(201, "POST", "/api/v1/tunnels?org=acme", bob, map[string]string{"name": "api", "upstream": "http://127.0.0.1:1"}).ID
	q := "org=acme&tunnel=" + tunnel

	type moment struct {
		name string
		ans  reach.Answer
	}
	var moments []moment
	record := func(name string, want ...string) reach.Answer {
		t.Helper()
		a := e.reach(root, q)
		if a.Source != reach.SourceLive {
			t.Fatalf("%s: source %q", name, a.Source)
		}
		got := a.Brief()
		for _, w := range want {
			neg := strings.HasPrefix(w, "!")
			found := slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, strings.TrimPrefix(w, "!")) })
			if found == neg {
				t.Errorf("%s: want %s in %v", name, w, got)
			}
		}
		moments = append(moments, moment{name, a})
		return a
	}

	start := record("created", "user:root=superadmin", "user:alice=org_role", "user:dave=org_role", "user:bob=tunnel_owner", "!user:victor", "!user:carol")
	if o := subject(start, "user", "bob"); o == nil || o.Reasons[0].Tunnel == nil || o.Reasons[0].Tunnel.Type != domain.TypeTunnelCreated || len(o.Reasons[0].Roles) != 1 ||
		o.Reasons[0].Roles[0].Role != "editor" || o.Reasons[0].Roles[0].Assignment.Position == 0 {
		t.Errorf("owner's chain: %+v", o)
	}

	e.grant(org, "carol", domain.RoleAdmin)
	record("carol admin", "user:carol=org_role")
	e.must(200, "DELETE", "/api/v1/role-assignments/carol/admin?org=acme", root, nil)
	record("carol withdrawn", "!user:carol")
	e.write(200, "PATCH", "/api/v1/tunnels/"+tunnel+"?org=acme", root, map[string]string{"name": "api2"}) // earlier answers keep the name it had

	// A 2-of-3 access request: the grant names its approvals and request, with positions (the
	// completing approval and the grant are appended together; its result is the grant's).
	e.write(200, "PUT", "/api/v1/tunnels/"+tunnel+"/access-policy?org=acme", root, map[string]any{"approver_role": "admin", "required_approvals": 2})
	req := e.write(201, "POST", "/api/v1/access-requests", victor, map[string]string{"org": "acme", "tunnel_id": tunnel, "duration": "2h", "reason": "incident 42"})
	first := e.write(200, "POST", "/api/v1/access-requests/"+req.ID+"/approve?org=acme", e.token("dave"), nil)
	record("one approval", "!user:victor")
	second := e.write(200, "POST", "/api/v1/access-requests/"+req.ID+"/approve?org=acme", e.token("erin"), nil)
	granted := record("granted", "user:victor=grant")
	g := subject(granted, "user", "victor").Reasons[0].Grant
	if g.Request == nil || g.Request.RequestID != req.ID || g.Request.Requester != "victor" || g.Request.Event.Position != req.Position ||
		len(g.Approvals) != 2 || g.Approvals[0].Approver != "dave" || g.Approvals[0].Event.Position != first.Position ||
		g.Approvals[1].Approver != "erin" || g.Approvals[1].Event.Position+1 != second.Position || g.Event.Position != second.Position {
		t.Errorf("grant chain: %+v (request at %d, approvals at %d and %d)", g, req.Position, first.Position, second.Position)
	}
	if g.Event.CausationID != g.Approvals[1].Event.EventID || g.Approvals[0].Event.CausationID != g.Request.Event.EventID {
		t.Errorf("causal links: grant caused by %s (last approval %s), approval caused by %s (request %s)",
			g.Event.CausationID, g.Approvals[1].Event.EventID, g.Approvals[0].Event.CausationID, g.Request.Event.EventID)
	}

	// A direct grant revoked, a group grant, and a grant that expires.
	hank := e.write(201, "POST", "/api/v1/tunnels/"+tunnel+"/grants?org=acme", root, map[string]string{"user": "hank", "ttl": "1h"}).ID
	e.write(201, "POST", "/api/v1/tunnels/"+tunnel+"/grants?org=acme", root, map[string]string{"group": "oncall", "ttl": "1h"})
	short := e.write(201, "POST", "/api/v1/tunnels/"+tunnel+"/grants?org=acme", root, map[string]string{"user": "gina", "ttl": "2s"}).ID
	withShort := record("grants", "user:hank=grant", "group:oncall=grant", "user:gina=grant")
	if s := subject(withShort, "group", "oncall"); s == nil || s.Note == "" {
		t.Errorf("group subject: %+v", s)
	}
	e.must(200, "DELETE", "/api/v1/tunnels/"+tunnel+"/grants/"+hank+"?org=acme", root, nil)
	record("hank revoked", "!user:hank", "user:gina=grant")

	key := e.write(201, "POST", "/api/v1/tunnels/"+tunnel+"/access-keys?org=acme", root, map[string]any{"ttl": "30d", "cidrs": []string{"10.0.0.0/8"}})
	withKey := record("key issued", "access_key:"+key.ID+"=access_key")
	if k := subject(withKey, "access_key", key.ID).Reasons[0].Key; k.Event.Position != key.Position || k.IssuedBy != "root" || len(k.CIDRs) != 1 {
		t.Errorf("key: %+v (issued at %d)", k, key.Position)
	}
	e.must(200, "DELETE", "/api/v1/access-keys/"+key.ID+"?org=acme", root, nil)
	record("key revoked", "!access_key:")

	// A key for a label selector reaches the tunnel while it carries the labels, and names the
	// event that labelled it.
	ml := e.write(201, "POST", "/api/v1/access-keys?org=acme", root, map[string]any{"selector": map[string]string{"team": "ml"}, "ttl": "30d"})
	record("label key, tunnel unlabelled", "!access_key:")
	labelled := e.write(200, "PATCH", "/api/v1/tunnels/"+tunnel+"?org=acme", root, map[string]any{"labels": map[string]string{"team": "ml", "env": "dev"}})
	withLabels := record("tunnel labelled", "access_key:"+ml.ID+"=access_key")
	if k := subject(withLabels, "access_key", ml.ID).Reasons[0].Key; k.Selector["team"] != "ml" || k.Labelled == nil || k.Labelled.Position != labelled.Position ||
		k.Event.Position != ml.Position {
		t.Errorf("label key: %+v (issued at %d, labelled at %d)", k, ml.Position, labelled.Position)
	}
	e.write(200, "PATCH", "/api/v1/tunnels/"+tunnel+"?org=acme", root, map[string]any{"labels": map[string]string{"team": "cv"}})
	record("tunnel relabelled away", "!access_key:")

	e.must(200, "DELETE", "/api/v1/role-assignments/bob/editor?org=acme", root, nil)
	record("owner withdrawn", "!user:bob")

	// Past gina's expiry (no grant.expired recorded yet: the expiry alone ends it).
	var expiry time.Time
	for _, s := range withShort.Subjects {
		if s.ID == "gina" {
			expiry = s.Reasons[0].Grant.ExpiresAt
		}
	}
	for deadline := time.Now().Add(10 * time.Second); !time.Now().After(expiry); {
		if time.Now().After(deadline) {
			t.Fatal("gina's grant never expired")
		}
		e.call("GET", "/healthz", "", nil) // a round trip, not a sleep
	}
	record("gina expired", "!user:gina", "user:victor=grant", "group:oncall=grant")
	// grant.expired recorded later changes no past answer.
	if _, err := e.svc.ExpireGrant(commands.WithActor(context.Background(), commands.Actor{ID: "system:grantexpiry"}), org, tunnel, short); err != nil {
		t.Fatal(err)
	}

	e.must(200, "DELETE", "/api/v1/tunnels/"+tunnel+"?org=acme", root, nil)
	gone := record("deleted")
	if gone.Tunnel.State != reach.TunnelDeleted || len(gone.Subjects) != 0 {
		t.Errorf("deleted tunnel: %+v", gone)
	}

	for _, m := range moments {
		past := e.reach(root, q+"&at="+url.QueryEscape(m.ans.At.Format(time.RFC3339Nano)))
		if past.Source != reach.SourceReplay {
			t.Fatalf("%s: source %q", m.name, past.Source)
		}
		live, _ := json.Marshal(struct {
			P uint64
			T reach.TunnelInfo
			S []reach.Subject
		}{m.ans.Position, m.ans.Tunnel, m.ans.Subjects})
		replayed, _ := json.Marshal(struct {
			P uint64
			T reach.TunnelInfo
			S []reach.Subject
		}{past.Position, past.Tunnel, past.Subjects})
		if string(live) != string(replayed) {
			t.Errorf("%s at %s:\nlive   %s\nreplay %s", m.name, m.ans.At.Format(time.RFC3339Nano), live, replayed)
		}
	}
	// Before the tunnel existed: nobody.
	before := e.reach(root, q+"&at="+url.QueryEscape(moments[0].ans.Tunnel.Created.RecordedAt.Add(-time.Millisecond).Format(time.RFC3339Nano)))
	if before.Tunnel.State != reach.TunnelAbsent || len(before.Subjects) != 0 {
		t.Errorf("before creation: %+v", before)
	}
}

// Who may ask: the organization's owners, admins and auditors (and superadmins); a bad or future
// at, or no tunnel, is a 400 that says why.
func TestWhoCouldReachAuthorizationAndBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	other := e.createOrg(root, "globex", "gus")
	e.grant(org, "dave", domain.RoleAdmin)
	e.grant(org, "ivy", domain.RoleAuditor)
	e.grant(org, "victor", domain.RoleViewer)
	e.grant(org, "bob", domain.RoleEditor)
	e.grant(other, "gia", domain.RoleAdmin)
	tunnel := e.write(201, "POST", "/api/v1/tunnels?org=acme", root, map[string]string{"name": "api", "upstream": "http://127.0.0.1:1"}).ID
	theirs := e.write(201, "POST", "/api/v1/tunnels?org=globex", root, map[string]string{"name": "api", "upstream": "http://127.0.0.1:1"}).ID
	past := url.QueryEscape(time.Now().Format(time.RFC3339Nano))
	for _, c := range []struct {
		user, query string
		want        int
	}{
		{"alice", "org=acme&tunnel=" + tunnel, 200}, {"dave", "org=acme&tunnel=" + tunnel + "&at=" + past, 200}, {"ivy", "tunnel=" + tunnel, 200},
		{"victor", "org=acme&tunnel=" + tunnel, 403}, {"bob", "org=acme&tunnel=" + tunnel + "&at=" + past, 403},
		{"gia", "org=acme&tunnel=" + tunnel, 403}, {"gia", "org=acme&tunnel=" + tunnel + "&at=" + past, 403},
		{"gia", "org=globex&tunnel=" + tunnel, 404}, {"dave", "org=acme&tunnel=" + theirs, 404},
	} {
		r := e.call("GET", "/api/v1/access?"+c.query, e.token(c.user), nil)
		if r.status != c.want {
			t.Errorf("%s %s: %d, want %d: %s", c.user, c.query, r.status, c.want, r.body)
		}
		if c.want >= 400 {
			r.problem(t)
		}
	}
	for _, c := range []struct{ query, field, says string }{
		{"org=acme&tunnel=" + tunnel + "&at=yesterday", "at", "RFC 3339"},
		{"org=acme&tunnel=" + tunnel + "&at=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), "at", "future"},
		{"org=acme", "tunnel", "required"},
		{"org=acme&tunnel=" + tunnel + "&when=now", "when", "unknown"},
	} {
		r := e.call("GET", "/api/v1/access?"+c.query, root, nil)
		if r.status != 400 {
			t.Errorf("%s: %d, want 400: %s", c.query, r.status, r.body)
			continue
		}
		p := r.problem(t)
		if !strings.Contains(p.Detail, c.field) || !strings.Contains(p.Detail, c.says) {
			t.Errorf("%s: detail %q, want it to name %s and say %q", c.query, p.Detail, c.field, c.says)
		}
	}
}
