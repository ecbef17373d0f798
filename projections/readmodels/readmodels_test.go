package readmodels_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// fixture is a log with the built-in projections running on a fresh database, and the queries
// on the same database (as the application role, which may only SELECT the views).
type fixture struct {
	t      *testing.T
	url    string
	store  *eventstore.Store
	runner *projections.Runner
	q      *readmodels.Queries
	last   uint64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	log := logtest.Start(t, 100*time.Millisecond)
	st := log.Store
	r, err := projections.New(projections.Config{Store: st, Projections: projections.All()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return &fixture{t: t, url: log.URL, store: st, runner: r, q: readmodels.New(log.Pool)}
}

// append writes events to a stream with metadata m.
func (f *fixture) append(stream string, m domain.Metadata, events ...domain.Event) {
	f.t.Helper()
	meta, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	var data []eventstore.EventData
	for _, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			f.t.Fatal(err)
		}
		data = append(data, eventstore.EventData{Type: e.EventType(), Payload: b, Metadata: meta})
	}
	res, err := f.store.Append(context.Background(), stream, eventstore.AnyVersion, data...)
	if err != nil {
		f.t.Fatal(err)
	}
	f.last = res.LastPosition
}

// caughtUp waits until every read model holds what was appended.
func (f *fixture) caughtUp() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	names := []string{projections.Orgs, projections.Tunnels, projections.Nodes, projections.AgentTokens, projections.RoleAssignments,
		projections.Audit, projections.AgentSessions, projections.AccessKeys, projections.AccessRequests}
	if err := f.runner.WaitFor(ctx, f.last, names...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) org(name string) string {
	f.t.Helper()
	id := newID()
	f.append(domain.OrgStream(id), domain.Metadata{Actor: "root", OrgID: id}, &domain.OrganizationCreated{OrgID: id, Name: name, CreatedBy: "root"})
	return id
}

func (f *fixture) tunnel(org, name, owner string) string {
	f.t.Helper()
	id := newID()
	f.append(domain.TunnelStream(id), domain.Metadata{Actor: owner, OrgID: org},
		&domain.TunnelCreated{TunnelID: id, OrgID: org, Owner: owner, Name: name, Upstream: "http://127.0.0.1:11434", Protocol: "http"})
	return id
}

func (f *fixture) node(name string) string {
	f.t.Helper()
	id := newID()
	f.append(domain.NodeStream(id), domain.Metadata{Actor: "root"}, &domain.NodeEnrolled{NodeID: id, Name: name, HostKey: "ssh-ed25519 AAAA",
		HostKeyFingerprint: "SHA256:x", EventKeyID: "key-" + name})
	return id
}

func newID() string { return uuid.Must(uuid.NewV7()).String() }

// pages reads a whole list page by page (limit rows each) and checks that it is the list read
// in one go.
func pages[T any, K any](t *testing.T, limit int, list func(after *K, limit int) ([]T, error), key func(T) *K) []T {
	t.Helper()
	all, err := list(nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var got []T
	var after *K
	for range 100 {
		page, err := list(after, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > limit {
			t.Fatalf("a page of %d rows with limit %d", len(page), limit)
		}
		got = append(got, page...)
		if len(page) < limit {
			break
		}
		after = key(page[len(page)-1])
	}
	if !reflect.DeepEqual(got, all) {
		t.Fatalf("paged:\n%+v\nin one go:\n%+v", got, all)
	}
	return all
}

func TestOrgs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	acme, globex, initech := f.org("acme"), f.org("globex"), f.org("initech")
	f.caughtUp()
	ctx := context.Background()

	for _, ref := range []string{"globex", globex} {
		if id, err := f.q.ResolveOrg(ctx, ref); err != nil || id != globex {
			t.Fatalf("ResolveOrg(%q) = %q, %v; want %s", ref, id, err, globex)
		}
	}
	for _, ref := range []string{"nosuch", newID(), ""} {
		if _, err := f.q.ResolveOrg(ctx, ref); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("ResolveOrg(%q): %v, want ErrNotFound", ref, err)
		}
	}

	names := func(orgs []readmodels.Org) []string {
		var out []string
		for _, o := range orgs {
			out = append(out, o.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter readmodels.OrgFilter
		want   []string
	}{
		{"all", readmodels.OrgFilter{All: true}, []string{"acme", "globex", "initech"}},
		{"only those named", readmodels.OrgFilter{IDs: []string{initech, acme}}, []string{"acme", "initech"}},
		{"no ids is none", readmodels.OrgFilter{}, nil},
		{"empty ids is none", readmodels.OrgFilter{IDs: []string{}}, nil},
		{"by name", readmodels.OrgFilter{All: true, Name: "globex"}, []string{"globex"}},
		{"by name outside the ids", readmodels.OrgFilter{IDs: []string{acme}, Name: "globex"}, nil},
		{"after", readmodels.OrgFilter{All: true, After: &readmodels.OrgKey{Name: "acme"}}, []string{"globex", "initech"}},
	} {
		tc.filter.Limit = 10
		got, err := f.q.ListOrgs(ctx, tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(names(got), tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, names(got), tc.want)
		}
	}
	pages(t, 2, func(after *readmodels.OrgKey, limit int) ([]readmodels.Org, error) {
		return f.q.ListOrgs(ctx, readmodels.OrgFilter{All: true, After: after, Limit: limit})
	}, func(o readmodels.Org) *readmodels.OrgKey { return &readmodels.OrgKey{Name: o.Name} })

	o, err := f.q.GetOrg(ctx, acme)
	if err != nil {
		t.Fatal(err)
	}
	if o.ID != acme || o.Name != "acme" || o.CreatedBy != "root" || o.CreatedAt.IsZero() || o.Position <= 0 {
		t.Fatalf("GetOrg = %+v", o)
	}
	if _, err := f.q.GetOrg(ctx, newID()); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("GetOrg of an unknown id: %v", err)
	}
}

func TestTunnelsAndSessions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	acme, globex := f.org("acme"), f.org("globex")
	web, llm, old := f.tunnel(acme, "web", "alice"), f.tunnel(acme, "llm", "bob"), f.tunnel(acme, "old", "alice")
	f.append(domain.TunnelStream(old), domain.Metadata{Actor: "alice", OrgID: acme}, &domain.TunnelDeleted{TunnelID: old, OrgID: acme, Name: "old"})
	other := f.tunnel(globex, "llm", "carol")
	up, down := f.node("up"), f.node("down")
	token := newID()
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	connect := func(node, tunnel, org string, at time.Time) string {
		id := newID()
		f.append(domain.NodeFactsStream(node), domain.Metadata{Actor: "node:" + node, NodeID: node, OccurredAt: at},
			&domain.AgentConnected{NodeID: node, SessionID: id, OrgID: org, TunnelID: tunnel, TokenID: token, AgentVersion: "1.0",
				ProtocolVersion: "v2", RemoteAddr: "192.0.2.1:5000", KeyExchange: "mlkem768x25519-sha256", Cipher: "chacha20-poly1305@openssh.com"})
		return id
	}
	s1 := connect(up, llm, acme, base)
	s2 := connect(up, web, acme, base.Add(time.Minute))
	s3 := connect(down, llm, acme, base.Add(2*time.Minute))
	s4 := connect(up, other, globex, base.Add(3*time.Minute))
	s5 := connect(down, web, acme, base) // as old as s1: the session id breaks the tie
	tied := []string{s1, s5}
	if s5 > s1 {
		tied = []string{s5, s1}
	}
	f.append(domain.NodeFactsStream(up), domain.Metadata{Actor: "node:" + up, NodeID: up, OccurredAt: base.Add(4 * time.Minute)},
		&domain.AgentDisconnected{NodeID: up, SessionID: s2, OrgID: acme, TunnelID: web, TokenID: token, BytesIn: 10, BytesOut: 20, DurationMS: 180000, Reason: "agent closed"})
	f.append(domain.NodeStream(down), domain.Metadata{Actor: "system:registry"}, &domain.NodeLost{NodeID: down, LastSeen: base})
	f.caughtUp()

	names := func(ts []readmodels.Tunnel) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter readmodels.TunnelFilter
		want   []string
	}{
		{"active", readmodels.TunnelFilter{OrgID: acme, State: readmodels.TunnelActive}, []string{"llm", "web"}},
		{"any state", readmodels.TunnelFilter{OrgID: acme}, []string{"llm", "old", "web"}},
		{"deleted", readmodels.TunnelFilter{OrgID: acme, State: readmodels.TunnelDeleted}, []string{"old"}},
		{"by name", readmodels.TunnelFilter{OrgID: acme, Name: "llm"}, []string{"llm"}},
		{"by owner", readmodels.TunnelFilter{OrgID: acme, Owner: "alice"}, []string{"old", "web"}},
		{"another org", readmodels.TunnelFilter{OrgID: globex}, []string{"llm"}},
		{"an org without tunnels", readmodels.TunnelFilter{OrgID: newID()}, nil},
		{"after", readmodels.TunnelFilter{OrgID: acme, After: &readmodels.TunnelKey{Name: "llm", ID: llm}}, []string{"old", "web"}},
	} {
		tc.filter.Limit = 10
		got, err := f.q.ListTunnels(ctx, tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(names(got), tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, names(got), tc.want)
		}
	}
	pages(t, 1, func(after *readmodels.TunnelKey, limit int) ([]readmodels.Tunnel, error) {
		return f.q.ListTunnels(ctx, readmodels.TunnelFilter{OrgID: acme, After: after, Limit: limit})
	}, func(t readmodels.Tunnel) *readmodels.TunnelKey { return &readmodels.TunnelKey{Name: t.Name, ID: t.ID} })

	// Connected agents: s1 on a live node; s3's node is lost (unknown); web's only session ended.
	got, err := f.q.GetTunnel(ctx, acme, llm)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != llm || got.OrgID != acme || got.Owner != "bob" || got.State != "active" || got.Version != 1 || got.AgentsConnected != 1 {
		t.Fatalf("GetTunnel = %+v", got)
	}
	if got, err := f.q.GetTunnel(ctx, acme, old); err != nil || got.State != "deleted" || got.Version != 2 {
		t.Fatalf("deleted tunnel = %+v, %v", got, err)
	}
	if got, err := f.q.GetTunnel(ctx, acme, web); err != nil || got.AgentsConnected != 0 {
		t.Fatalf("tunnel whose session ended = %+v, %v", got, err)
	}
	// Another organization's tunnel is not found through this one; neither is a non-id.
	for _, id := range []string{other, newID(), "not-an-id"} {
		if _, err := f.q.GetTunnel(ctx, acme, id); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("GetTunnel(acme, %s): %v, want ErrNotFound", id, err)
		}
	}

	ids := func(ss []readmodels.AgentSession) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		filter readmodels.AgentSessionFilter
		want   []string
	}{
		{"newest first", readmodels.AgentSessionFilter{OrgID: acme}, append([]string{s3, s2}, tied...)},
		{"connected", readmodels.AgentSessionFilter{OrgID: acme, State: readmodels.SessionConnected}, []string{s1}},
		{"ended", readmodels.AgentSessionFilter{OrgID: acme, State: readmodels.SessionEnded}, []string{s2}},
		{"unknown: its node is lost", readmodels.AgentSessionFilter{OrgID: acme, State: readmodels.SessionUnknown}, []string{s3, s5}},
		{"by tunnel", readmodels.AgentSessionFilter{OrgID: acme, TunnelID: llm}, []string{s3, s1}},
		{"by node", readmodels.AgentSessionFilter{OrgID: acme, NodeID: up}, []string{s2, s1}},
		{"by node and tunnel", readmodels.AgentSessionFilter{OrgID: acme, NodeID: down, TunnelID: web}, []string{s5}},
		{"another org", readmodels.AgentSessionFilter{OrgID: globex}, []string{s4}},
		{"another org's tunnel", readmodels.AgentSessionFilter{OrgID: acme, TunnelID: other}, nil},
		{"after", readmodels.AgentSessionFilter{OrgID: acme, After: &readmodels.AgentSessionKey{ConnectedAt: base.Add(2 * time.Minute), ID: s3}}, append([]string{s2}, tied...)},
		{"after the first of a tie", readmodels.AgentSessionFilter{OrgID: acme, After: &readmodels.AgentSessionKey{ConnectedAt: base, ID: tied[0]}}, tied[1:]},
	} {
		tc.filter.Limit = 10
		got, err := f.q.ListAgentSessions(ctx, tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(ids(got), tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, ids(got), tc.want)
		}
	}
	all := pages(t, 2, func(after *readmodels.AgentSessionKey, limit int) ([]readmodels.AgentSession, error) {
		return f.q.ListAgentSessions(ctx, readmodels.AgentSessionFilter{OrgID: acme, After: after, Limit: limit})
	}, func(s readmodels.AgentSession) *readmodels.AgentSessionKey {
		return &readmodels.AgentSessionKey{ConnectedAt: s.ConnectedAt, ID: s.ID}
	})
	ended := all[1]
	if ended.ID != s2 || ended.EndedAt == nil || ended.EndReason == nil || *ended.EndReason != "agent closed" || ended.BytesIn == nil || *ended.BytesIn != 10 ||
		ended.BytesOut == nil || *ended.BytesOut != 20 || ended.DurationMS == nil || *ended.DurationMS != 180000 || !ended.ConnectedAt.Equal(base.Add(time.Minute)) ||
		ended.NodeID != up || ended.TunnelID != web || ended.TokenID != token || ended.KEX != "mlkem768x25519-sha256" || ended.Protocol != "v2" {
		t.Fatalf("ended session = %+v", ended)
	}
}

func TestNodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a, b, c := f.node("alpha"), f.node("bravo"), f.node("charlie")
	f.append(domain.NodeStream(b), domain.Metadata{Actor: "root"}, &domain.NodeDrainRequested{NodeID: b})
	f.append(domain.NodeStream(c), domain.Metadata{Actor: "root"}, &domain.NodeRemoved{NodeID: c})
	f.append(domain.NodeStream(a), domain.Metadata{Actor: "system:registry"}, &domain.NodeLost{NodeID: a, LastSeen: time.Now()})
	f.caughtUp()

	for _, tc := range []struct {
		filter readmodels.NodeFilter
		want   []string
	}{
		{readmodels.NodeFilter{}, []string{a, b, c}},
		{readmodels.NodeFilter{State: readmodels.NodeJoined}, []string{a}},
		{readmodels.NodeFilter{State: readmodels.NodeDraining}, []string{b}},
		{readmodels.NodeFilter{State: readmodels.NodeLeft}, []string{c}},
		{readmodels.NodeFilter{Name: "bravo"}, []string{b}},
		{readmodels.NodeFilter{After: &readmodels.NodeKey{Name: "alpha", ID: a}}, []string{b, c}},
	} {
		tc.filter.Limit = 10
		got, err := f.q.ListNodes(ctx, tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, n := range got {
			ids = append(ids, n.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Fatalf("%+v: %v, want %v", tc.filter, ids, tc.want)
		}
	}
	pages(t, 2, func(after *readmodels.NodeKey, limit int) ([]readmodels.Node, error) {
		return f.q.ListNodes(ctx, readmodels.NodeFilter{After: after, Limit: limit})
	}, func(n readmodels.Node) *readmodels.NodeKey { return &readmodels.NodeKey{Name: n.Name, ID: n.ID} })

	n, err := f.q.GetNode(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if n.Name != "alpha" || n.State != "joined" || !n.Lost || n.EventKeyID != "key-alpha" || n.HostKeyFingerprint != "SHA256:x" || n.Version != 2 {
		t.Fatalf("GetNode = %+v", n)
	}
	for _, id := range []string{newID(), "nope"} {
		if _, err := f.q.GetNode(ctx, id); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("GetNode(%q): %v, want ErrNotFound", id, err)
		}
	}
}

func TestAgentTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	acme, globex := f.org("acme"), f.org("globex")
	llm, web := f.tunnel(acme, "llm", "alice"), f.tunnel(acme, "web", "alice")
	issue := func(org, tunnel string, expires time.Time) string {
		id := newID()
		f.append(domain.AgentTokenStream(id), domain.Metadata{Actor: "alice", OrgID: org},
			&domain.AgentTokenIssued{TokenID: id, OrgID: org, TunnelID: tunnel, ExpiresAt: expires, KeyID: "tk1", IssuedBy: "alice"})
		return id
	}
	later := time.Now().Add(time.Hour)
	active, revoked := issue(acme, llm, later), issue(acme, llm, later)
	expired := issue(acme, web, time.Now().Add(-time.Minute))
	foreign := issue(globex, newID(), later)
	f.append(domain.AgentTokenStream(revoked), domain.Metadata{Actor: "alice", OrgID: acme},
		&domain.AgentTokenRevoked{TokenID: revoked, OrgID: acme, TunnelID: llm, Reason: "leaked"})
	f.caughtUp()

	for _, tc := range []struct {
		name   string
		filter readmodels.AgentTokenFilter
		want   []string
	}{
		{"any", readmodels.AgentTokenFilter{OrgID: acme}, []string{active, revoked, expired}},
		{"active", readmodels.AgentTokenFilter{OrgID: acme, State: readmodels.TokenActive}, []string{active}},
		{"revoked", readmodels.AgentTokenFilter{OrgID: acme, State: readmodels.TokenRevoked}, []string{revoked}},
		{"expired", readmodels.AgentTokenFilter{OrgID: acme, State: readmodels.TokenExpired}, []string{expired}},
		{"by tunnel", readmodels.AgentTokenFilter{OrgID: acme, TunnelID: llm}, []string{active, revoked}},
		{"another org", readmodels.AgentTokenFilter{OrgID: globex}, []string{foreign}},
	} {
		tc.filter.Limit = 10
		got, err := f.q.ListAgentTokens(ctx, tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var ids []string
		for _, tok := range got {
			ids = append(ids, tok.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, ids, tc.want)
		}
	}
	states := map[string]string{}
	for _, tok := range pages(t, 1, func(after *readmodels.AgentTokenKey, limit int) ([]readmodels.AgentToken, error) {
		return f.q.ListAgentTokens(ctx, readmodels.AgentTokenFilter{OrgID: acme, After: after, Limit: limit})
	}, func(t readmodels.AgentToken) *readmodels.AgentTokenKey {
		return &readmodels.AgentTokenKey{IssuedAt: t.IssuedAt, ID: t.ID}
	}) {
		states[tok.ID] = tok.State
	}
	if want := map[string]string{active: "active", revoked: "revoked", expired: "expired"}; !reflect.DeepEqual(states, want) {
		t.Fatalf("token states %v, want %v", states, want)
	}

	tok, err := f.q.GetAgentToken(ctx, acme, revoked)
	if err != nil {
		t.Fatal(err)
	}
	if tok.State != "revoked" || tok.RevokedAt == nil || tok.RevokeReason == nil || *tok.RevokeReason != "leaked" || tok.TunnelID != llm || tok.KeyID != "tk1" {
		t.Fatalf("GetAgentToken = %+v", tok)
	}
	for _, id := range []string{foreign, newID(), "x"} {
		if _, err := f.q.GetAgentToken(ctx, acme, id); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("GetAgentToken(acme, %q): %v, want ErrNotFound", id, err)
		}
	}
}

func TestRoleAssignmentsAndAudit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	acme, globex := f.org("acme"), f.org("globex")
	assign := func(org, user string, role domain.Role, m domain.Metadata) {
		m.OrgID = org
		f.append(domain.RoleStream(org, user), m, &domain.RoleAssigned{OrgID: org, UserID: user, Role: role})
	}
	assign(domain.PlatformOrg, "root", domain.RoleSuperadmin, domain.Metadata{Actor: "cli:bootstrap"})
	assign(acme, "bob", domain.RoleOwner, domain.Metadata{Actor: "root", CorrelationID: "corr-1", RequestID: "req-1"})
	assign(acme, "alice", domain.RoleOwner, domain.Metadata{Actor: "root", CorrelationID: "corr-1", RequestID: "req-2"})
	assign(acme, "alice", domain.RoleAuditor, domain.Metadata{Actor: "bob"})
	assign(globex, "carol", domain.RoleOwner, domain.Metadata{Actor: "root"})
	f.append(domain.RoleStream(acme, "bob"), domain.Metadata{Actor: "alice", OrgID: acme},
		&domain.RoleUnassigned{OrgID: acme, UserID: "bob", Role: domain.RoleOwner})
	f.caughtUp()

	type ur struct{ user, role string }
	roles := func(filter readmodels.RoleAssignmentFilter) []ur {
		t.Helper()
		filter.Limit = 10
		got, err := f.q.ListRoleAssignments(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		var out []ur
		for _, r := range got {
			out = append(out, ur{r.UserID, r.Role})
		}
		return out
	}
	alice := []ur{{"alice", string(domain.RoleAuditor)}, {"alice", string(domain.RoleOwner)}}
	if got := roles(readmodels.RoleAssignmentFilter{OrgID: acme}); !reflect.DeepEqual(got, alice) {
		t.Fatalf("acme's roles: %v, want %v (bob's withdrawn)", got, alice)
	}
	if got := roles(readmodels.RoleAssignmentFilter{OrgID: domain.PlatformOrg}); !reflect.DeepEqual(got, []ur{{"root", string(domain.RoleSuperadmin)}}) {
		t.Fatalf("platform roles: %v", got)
	}
	if got := roles(readmodels.RoleAssignmentFilter{OrgID: acme, Role: string(domain.RoleOwner)}); !reflect.DeepEqual(got, alice[1:]) {
		t.Fatalf("acme's owners: %v", got)
	}
	if got := roles(readmodels.RoleAssignmentFilter{OrgID: acme, UserID: "carol"}); got != nil {
		t.Fatalf("carol in acme: %v", got)
	}
	if got := roles(readmodels.RoleAssignmentFilter{OrgID: acme, After: &readmodels.RoleAssignmentKey{UserID: "alice", Role: string(domain.RoleAuditor)}}); !reflect.DeepEqual(got, alice[1:]) {
		t.Fatalf("after alice/auditor: %v", got)
	}
	pages(t, 1, func(after *readmodels.RoleAssignmentKey, limit int) ([]readmodels.RoleAssignment, error) {
		return f.q.ListRoleAssignments(ctx, readmodels.RoleAssignmentFilter{OrgID: acme, After: after, Limit: limit})
	}, func(r readmodels.RoleAssignment) *readmodels.RoleAssignmentKey {
		return &readmodels.RoleAssignmentKey{UserID: r.UserID, Role: r.Role}
	})

	search := func(filter readmodels.AuditFilter) []readmodels.AuditEntry {
		t.Helper()
		filter.Limit = 100
		got, err := f.q.SearchAudit(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Position >= got[i-1].Position {
				t.Fatalf("audit not newest first: %d after %d", got[i].Position, got[i-1].Position)
			}
		}
		return got
	}
	everything := search(readmodels.AuditFilter{AllOrgs: true})
	if int64(len(everything)) != int64(f.last)+1 { // every record, the genesis included
		t.Fatalf("%d entries for a log of %d records", len(everything), f.last+1)
	}
	acmes := search(readmodels.AuditFilter{OrgID: acme})
	if len(acmes) != 5 { // created, three assignments, one withdrawal
		t.Fatalf("acme's audit: %d entries, want 5", len(acmes))
	}
	for _, e := range acmes {
		if e.OrgID == nil || *e.OrgID != acme {
			t.Fatalf("acme's audit holds %+v", e)
		}
	}
	byCorr := search(readmodels.AuditFilter{OrgID: acme, CorrelationID: "corr-1"})
	if len(byCorr) != 2 || *byCorr[0].RequestID != "req-2" || *byCorr[1].RequestID != "req-1" {
		t.Fatalf("by correlation id: %+v", byCorr)
	}
	if got := search(readmodels.AuditFilter{AllOrgs: true, Actor: "bob", Type: domain.TypeRoleAssigned}); len(got) != 1 || got[0].StreamID != domain.RoleStream(acme, "alice") {
		t.Fatalf("by actor and type: %+v", got)
	}
	if got := search(readmodels.AuditFilter{AllOrgs: true, StreamID: domain.OrgStream(globex)}); len(got) != 1 || got[0].Type != domain.TypeOrganizationCreated {
		t.Fatalf("by stream: %+v", got)
	}
	if got := search(readmodels.AuditFilter{OrgID: acme, RequestID: "req-1"}); len(got) != 1 || *got[0].Actor != "root" {
		t.Fatalf("by request id: %+v", got)
	}
	if got := search(readmodels.AuditFilter{OrgID: acme, After: &readmodels.AuditKey{Position: acmes[1].Position}}); !reflect.DeepEqual(got, acmes[2:]) {
		t.Fatalf("after %d: %+v", acmes[1].Position, got)
	}
	// Since is inclusive, until exclusive.
	at := acmes[2].RecordedAt
	for _, e := range search(readmodels.AuditFilter{AllOrgs: true, Since: &at}) {
		if e.RecordedAt.Before(at) {
			t.Fatalf("since %s: %+v", at, e)
		}
	}
	for _, e := range search(readmodels.AuditFilter{AllOrgs: true, Until: &at}) {
		if !e.RecordedAt.Before(at) {
			t.Fatalf("until %s: %+v", at, e)
		}
	}
	if got := search(readmodels.AuditFilter{AllOrgs: true, Since: &at, Until: &at}); len(got) != 0 {
		t.Fatalf("an empty window: %+v", got)
	}
	pages(t, 3, func(after *readmodels.AuditKey, limit int) ([]readmodels.AuditEntry, error) {
		return f.q.SearchAudit(ctx, readmodels.AuditFilter{AllOrgs: true, After: after, Limit: limit})
	}, func(e readmodels.AuditEntry) *readmodels.AuditKey { return &readmodels.AuditKey{Position: e.Position} })
}

// A rebuild swaps a new generation in; the queries read the one in force, before and after.
func TestReadsTheGenerationInForce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	acme := f.org("acme")
	f.tunnel(acme, "llm", "alice")
	f.caughtUp()
	list := func() []readmodels.Tunnel {
		t.Helper()
		got, err := f.q.ListTunnels(ctx, readmodels.TunnelFilter{OrgID: acme, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	before := list()
	st, err := f.runner.Rebuild(ctx, projections.Tunnels, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation < 2 {
		t.Fatalf("rebuilt into generation %d", st.Generation)
	}
	if after := list(); len(before) != 1 || !reflect.DeepEqual(before, after) {
		t.Fatalf("before the rebuild %+v, after %+v", before, after)
	}
}

func TestBadFilters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	org := newID()
	for name, run := range map[string]func() error{
		"no limit": func() error { _, err := f.q.ListOrgs(ctx, readmodels.OrgFilter{All: true}); return err },
		"tunnels without an org": func() error {
			_, err := f.q.ListTunnels(ctx, readmodels.TunnelFilter{Limit: 1})
			return err
		},
		"unknown tunnel state": func() error {
			_, err := f.q.ListTunnels(ctx, readmodels.TunnelFilter{OrgID: org, State: "all", Limit: 1})
			return err
		},
		"tunnel cursor without an id": func() error {
			_, err := f.q.ListTunnels(ctx, readmodels.TunnelFilter{OrgID: org, After: &readmodels.TunnelKey{Name: "a"}, Limit: 1})
			return err
		},
		"unknown node state": func() error { _, err := f.q.ListNodes(ctx, readmodels.NodeFilter{State: "gone", Limit: 1}); return err },
		"token tunnel not an id": func() error {
			_, err := f.q.ListAgentTokens(ctx, readmodels.AgentTokenFilter{OrgID: org, TunnelID: "x", Limit: 1})
			return err
		},
		"unknown token state": func() error {
			_, err := f.q.ListAgentTokens(ctx, readmodels.AgentTokenFilter{OrgID: org, State: "all", Limit: 1})
			return err
		},
		"sessions without an org": func() error {
			_, err := f.q.ListAgentSessions(ctx, readmodels.AgentSessionFilter{Limit: 1})
			return err
		},
		"session node not an id": func() error {
			_, err := f.q.ListAgentSessions(ctx, readmodels.AgentSessionFilter{OrgID: org, NodeID: "n", Limit: 1})
			return err
		},
		"roles without an org": func() error {
			_, err := f.q.ListRoleAssignments(ctx, readmodels.RoleAssignmentFilter{Limit: 1})
			return err
		},
		"audit without an org": func() error { _, err := f.q.SearchAudit(ctx, readmodels.AuditFilter{Limit: 1}); return err },
		"get tunnel without an org": func() error {
			_, err := f.q.GetTunnel(ctx, "", newID())
			return err
		},
	} {
		if err := run(); !errors.Is(err, readmodels.ErrBadFilter) {
			t.Errorf("%s: %v, want ErrBadFilter", name, err)
		}
	}
}

// A database that does not answer is eventstore.ErrUnavailable (retry later); the caller's own
// cancellation is not.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	u := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, u)
	q := readmodels.New(pool)
	ctx := context.Background()
	if err := q.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := q.ListOrgs(ctx, readmodels.OrgFilter{All: true, Limit: 10}); err != nil || len(got) != 0 {
		t.Fatalf("an empty view: %v, %v", got, err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := q.ListOrgs(cancelled, readmodels.OrgFilter{All: true, Limit: 10}); !errors.Is(err, context.Canceled) || errors.Is(err, eventstore.ErrUnavailable) {
		t.Fatalf("cancelled: %v", err)
	}
	pool.Close()
	if err := q.Ping(ctx); err == nil {
		t.Fatal("Ping on a closed pool succeeded")
	}
	checks := map[string]error{}
	_, checks["ListOrgs"] = q.ListOrgs(ctx, readmodels.OrgFilter{All: true, Limit: 10})
	_, checks["ResolveOrg"] = q.ResolveOrg(ctx, "acme")
	_, checks["GetTunnel"] = q.GetTunnel(ctx, newID(), newID())
	_, checks["SearchAudit"] = q.SearchAudit(ctx, readmodels.AuditFilter{AllOrgs: true, Limit: 10})
	for name, err := range checks {
		if !errors.Is(err, eventstore.ErrUnavailable) {
			t.Errorf("%s on a closed pool: %v, want ErrUnavailable", name, err)
		}
	}
}
