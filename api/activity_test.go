package api_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
)

func (e *env) activity(tok, tunnel, query string) api.Activity {
	e.t.Helper()
	var a api.Activity
	e.must(200, "GET", "/api/v1/tunnels/"+tunnel+"/activity?"+query, tok, nil).decode(e.t, &a)
	return a
}

// allActivity pages through with limit n and returns the items and the number of pages.
func (e *env) allActivity(tok, tunnel, query string, n int, between func()) ([]api.ActivityItem, int) {
	e.t.Helper()
	var items []api.ActivityItem
	cursor := ""
	for pages := 1; ; pages++ {
		q := fmt.Sprintf("%s&limit=%d", query, n)
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		a := e.activity(tok, tunnel, q)
		if len(a.Items) > n {
			e.t.Fatalf("page of %d items, limit %d", len(a.Items), n)
		}
		items = append(items, a.Items...)
		if a.NextCursor == "" {
			return items, pages
		}
		if between != nil {
			between()
		}
		cursor = a.NextCursor
		if pages > 100 {
			e.t.Fatal("more than 100 pages")
		}
	}
}

// A tunnel's activity: configuration, credentials, grants and requests, sessions, each event with
// the actor and the position its write reported, nothing of another tunnel; per-caller usage on
// the first page; paging with any limit gives the same events in the same order, and events
// appended while a client pages do not shift its pages.
func TestTunnelActivity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	e.grant(org, "victor", domain.RoleViewer)
	victor := e.token("victor")
	created := e.write(201, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "api", "upstream": "http://127.0.0.1:1"})
	tunnel := created.ID
	other := e.write(201, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "other", "upstream": "http://127.0.0.1:1"}).ID

	type want struct {
		kind, typ, actor string
		pos              uint64
	}
	wants := []want{{"config", domain.TypeTunnelCreated, "alice", created.Position - 1}} // with its name's reservation after it
	add := func(kind, typ, actor string, pos uint64) { wants = append(wants, want{kind, typ, actor, pos}) }
	pos := e.write(200, "PATCH", "/api/v1/tunnels/"+tunnel+"?org=acme", alice, map[string]string{"upstream": "http://127.0.0.1:2"}).Position
	add("config", domain.TypeTunnelUpdated, "alice", pos)
	e.write(200, "PATCH", "/api/v1/tunnels/"+other+"?org=acme", alice, map[string]string{"upstream": "http://127.0.0.1:3"}) // another tunnel's
	pos = e.write(200, "PUT", "/api/v1/tunnels/"+tunnel+"/access-policy?org=acme", alice, map[string]any{"approver_role": "owner", "required_approvals": 1}).Position
	add("config", domain.TypeAccessPolicySet, "alice", pos)
	tok := e.write(201, "POST", "/api/v1/tunnels/"+tunnel+"/tokens?org=acme", alice, nil)
	add("credentials", domain.TypeAgentTokenIssued, "alice", tok.Position)
	key := e.write(201, "POST", "/api/v1/tunnels/"+tunnel+"/access-keys?org=acme", alice, nil)
	add("credentials", domain.TypeAccessKeyIssued, "alice", key.Position)
	pos = e.write(200, "DELETE", "/api/v1/access-keys/"+key.ID+"?org=acme", root, nil).Position
	add("credentials", domain.TypeAccessKeyRevoked, "root", pos)
	req := e.write(201, "POST", "/api/v1/access-requests", victor, map[string]string{"org": "acme", "tunnel_id": tunnel, "duration": "1h", "reason": "debugging"})
	add("grants", domain.TypeAccessRequested, "victor", req.Position)
	pos = e.write(200, "POST", "/api/v1/access-requests/"+req.ID+"/approve?org=acme", alice, nil).Position
	add("grants", domain.TypeAccessApproved, "alice", pos-1)
	add("grants", domain.TypeGrantCreated, "alice", pos)
	grant := e.write(201, "POST", "/api/v1/tunnels/"+tunnel+"/grants?org=acme", alice, map[string]string{"group": "oncall", "ttl": "1h"})
	add("grants", domain.TypeGrantCreated, "alice", grant.Position)
	pos = e.write(200, "DELETE", "/api/v1/tunnels/"+tunnel+"/grants/"+grant.ID+"?org=acme", alice, nil).Position
	add("grants", domain.TypeGrantRevoked, "alice", pos)

	// Sessions as the node reports them, and usage per caller (rollups).
	now := time.Now()
	session := uuid.Must(uuid.NewV7()).String()
	pos = e.nodeFact("nodefacts-n1", now, &domain.AgentConnected{NodeID: "n1", SessionID: session, OrgID: org, TunnelID: tunnel, TokenID: tok.ID})
	add("sessions", domain.TypeAgentConnected, "node:test", pos)
	e.nodeFact("nodefacts-n1", now, &domain.AgentConnected{NodeID: "n1", SessionID: uuid.Must(uuid.NewV7()).String(), OrgID: org, TunnelID: other, TokenID: tok.ID})
	pos = e.nodeFact("nodefacts-n1", now, &domain.FailoverStarted{NodeID: "n1", SessionID: session, OrgID: org, TunnelID: tunnel, TokenID: tok.ID, FromNodeID: "n0", Cause: "keepalive_timeout"})
	add("sessions", domain.TypeFailoverStarted, "node:test", pos)
	pos = e.nodeFact("nodefacts-n1", now, &domain.AgentDisconnected{NodeID: "n1", SessionID: session, OrgID: org, TunnelID: tunnel, TokenID: tok.ID, Reason: "agent closed"})
	add("sessions", domain.TypeAgentDisconnected, "node:test", pos)
	hour := now.UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	e.nodeFact("nodefacts-n1", now, logtest.UsageWindow(org, tunnel, domain.CallerUser, "victor", hour))
	e.nodeFact("nodefacts-n1", now, logtest.UsageWindow(org, tunnel, domain.CallerUser, "victor", hour.Add(time.Hour)))
	e.nodeFact("nodefacts-n1", now, logtest.UsageWindow(org, tunnel, domain.CallerAccessKey, key.ID, hour))
	e.nodeFact("nodefacts-n1", now, logtest.UsageWindow(org, other, domain.CallerUser, "alice", hour))

	all := e.activity(alice, tunnel, "org=acme&limit=500")
	if all.NextCursor != "" || len(all.Items) != len(wants) {
		t.Fatalf("%d items (cursor %q), want %d: %+v", len(all.Items), all.NextCursor, len(wants), all.Items)
	}
	for i, w := range wants {
		it := all.Items[i]
		if it.Kind != w.kind || it.Type != w.typ || it.Actor != w.actor || uint64(it.Position) != w.pos {
			t.Errorf("item %d: %s %s by %s at %d, want %s %s by %s at %d", i, it.Kind, it.Type, it.Actor, it.Position, w.kind, w.typ, w.actor, w.pos)
		}
		if _, leaked := it.Details["secret_hash"]; leaked {
			t.Errorf("item %d shows a secret's hash", i)
		}
	}
	if all.Items[len(all.Items)-1].Details["reason"] != "agent closed" {
		t.Errorf("details of the disconnect: %v", all.Items[len(all.Items)-1].Details)
	}
	if all.Usage == nil || len(all.Usage.Callers) != 2 {
		t.Fatalf("usage: %+v", all.Usage)
	}
	if c := all.Usage.Callers[0]; c.CallerKind != domain.CallerUser || c.CallerID != "victor" || c.Requests != 2000 || !c.FirstHour.Equal(hour) || !c.LastHour.Equal(hour.Add(time.Hour)) {
		t.Errorf("victor's usage: %+v", c)
	}
	if c := all.Usage.Callers[1]; c.CallerKind != domain.CallerAccessKey || c.CallerID != key.ID || c.Requests != 1000 {
		t.Errorf("the key's usage: %+v", c)
	}

	// Kinds filter; a window by time.
	grants := e.activity(alice, tunnel, "org=acme&kinds=grants")
	if len(grants.Items) != 5 || grants.Usage != nil || slices.ContainsFunc(grants.Items, func(i api.ActivityItem) bool { return i.Kind != "grants" }) {
		t.Errorf("kinds=grants: %+v, usage %+v", grants.Items, grants.Usage)
	}
	from := all.Items[3].RecordedAt
	windowed := e.activity(alice, tunnel, "org=acme&kinds=config,credentials,grants,sessions&from="+url.QueryEscape(from.Format(time.RFC3339Nano)))
	if len(windowed.Items) == 0 || windowed.Items[0].Position > all.Items[3].Position || slices.ContainsFunc(windowed.Items, func(i api.ActivityItem) bool { return i.RecordedAt.Before(from) }) {
		t.Errorf("from %s: %+v", from, windowed.Items)
	}

	// Paging: every limit gives the same events; appending while paging shifts nothing.
	for _, n := range []int{1, 3, 7} {
		before := e.activity(alice, tunnel, "org=acme&kinds=config,credentials,grants,sessions&limit=500")
		appended := 0
		paged, pages := e.allActivity(alice, tunnel, "org=acme&kinds=config,credentials,grants,sessions", n, func() {
			if appended < 2 {
				appended++
				e.write(200, "PATCH", "/api/v1/tunnels/"+tunnel+"?org=acme", alice, map[string]string{"upstream": fmt.Sprintf("http://127.0.0.1:%d", 100+n*10+appended)})
			}
		})
		if pages < len(before.Items)/n {
			t.Errorf("limit %d: %d pages for %d items", n, pages, len(before.Items))
		}
		got := make([]int64, len(paged))
		for i, it := range paged {
			got[i] = it.Position
		}
		var wantPos []int64
		for _, it := range before.Items {
			wantPos = append(wantPos, it.Position)
		}
		if !slices.Equal(got, wantPos) {
			t.Errorf("limit %d: positions %v, want %v", n, got, wantPos)
		}
	}

	// Authorized like reading the tunnel: a viewer of the organization may, another's admin not.
	e.activity(victor, tunnel, "org=acme&kinds=config")
	other2 := e.createOrg(root, "globex", "gus")
	e.grant(other2, "gia", domain.RoleAdmin)
	if r := e.call("GET", "/api/v1/tunnels/"+tunnel+"/activity?org=acme", e.token("gia"), nil); r.status != 403 {
		t.Errorf("another organization's admin: %d: %s", r.status, r.body)
	}
	for _, bad := range []string{"kinds=logins", "from=yesterday", "cursor=xyz"} {
		if r := e.call("GET", "/api/v1/tunnels/"+tunnel+"/activity?org=acme&"+bad, alice, nil); r.status != 400 {
			t.Errorf("%s: %d, want 400: %s", bad, r.status, r.body)
		}
	}
}
