package view_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

const (
	org   = "0193f2a4-7c1e-7d3a-9b2e-000000000001"
	org2  = "0193f2a4-7c1e-7d3a-9b2e-000000000009"
	tun   = "0193f2a4-7c1e-7d3a-9b2e-000000000002"
	tun2  = "0193f2a4-7c1e-7d3a-9b2e-000000000003"
	tokID = "0193f2a4-7c1e-7d3a-9b2e-000000000004"
)

type feed struct {
	t   *testing.T
	v   *view.View
	pos uint64
}

func (f *feed) domain(e domain.Event) {
	f.t.Helper()
	b, _ := json.Marshal(e)
	f.apply("s", e.EventType(), b)
}

func (f *feed) apply(stream, typ string, payload []byte) {
	f.t.Helper()
	if err := f.v.Apply(view.Event{Position: f.pos, EventID: fmt.Sprint("ev-", f.pos), StreamID: stream, Type: typ, Payload: payload}); err != nil {
		f.t.Fatal(err)
	}
	f.pos++
}

func (f *feed) log(typ string, p any) {
	f.t.Helper()
	b, _ := json.Marshal(p)
	f.apply(ledger.LogStream, typ, b)
}

func TestViewDecidesLikeTheControlPlane(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var revoked, deleted []string
	v := view.New(token.DefaultIssuer, view.Hooks{
		TokenRevoked:  func(id, _ string) { mu.Lock(); revoked = append(revoked, id); mu.Unlock() },
		TunnelDeleted: func(id, _ string) { mu.Lock(); deleted = append(deleted, id); mu.Unlock() },
	})
	f := &feed{t: t, v: v}
	key, _ := ledger.GenerateSigningKey()
	f.log(ledger.TypeKeyAdded, ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", key))
	f.domain(domain.OrganizationCreated{OrgID: org, Name: "acme"})
	f.domain(domain.OrganizationCreated{OrgID: org2, Name: "globex"})
	f.domain(domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.TunnelCreated{TunnelID: tun2, OrgID: org2, Owner: "zed", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "carol", Role: domain.RoleAdmin})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "vic", Role: domain.RoleViewer})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "alice", Role: domain.RoleOperator})
	f.domain(domain.RoleAssigned{OrgID: org2, UserID: "zed", Role: domain.RoleOperator})

	// Routing: by id, by name.org, by a name only when unique.
	// Routing: by id, by name.org, and by a bare name only within the caller's organizations.
	anyone := node.Principal{UserID: "nobody"}
	if r, ok := v.Resolve("llm.acme", anyone); !ok || r.TunnelID != tun {
		t.Fatalf("llm.acme → %+v %v", r, ok)
	}
	if r, ok := v.Resolve(tun2, anyone); !ok || r.OrgID != org2 {
		t.Fatalf("by id → %+v %v", r, ok)
	}
	if _, ok := v.Resolve("llm", anyone); ok {
		t.Fatal("a bare name resolved for a caller with no organization")
	}
	if r, ok := v.Resolve("llm", node.Principal{UserID: "alice"}); !ok || r.TunnelID != tun {
		t.Fatalf("alice's bare llm → %+v %v", r, ok)
	}
	if r, ok := v.Resolve("llm", node.Principal{UserID: "zed"}); !ok || r.TunnelID != tun2 {
		t.Fatalf("zed's bare llm → %+v %v", r, ok)
	}
	// Another tenant naming a tunnel like acme's changes nothing for acme's callers.
	f.domain(domain.OrganizationCreated{OrgID: "org-evil", Name: "evil"})
	f.domain(domain.TunnelCreated{TunnelID: "tun-evil", OrgID: "org-evil", Owner: "mallory", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.RoleAssigned{OrgID: "org-evil", UserID: "mallory", Role: domain.RoleOperator})
	if r, ok := v.Resolve("llm", node.Principal{UserID: "alice"}); !ok || r.TunnelID != tun {
		t.Fatalf("alice's bare llm after another org made one → %+v %v", r, ok)
	}
	// A member of two organizations with the name must say which.
	f.domain(domain.RoleAssigned{OrgID: "org-evil", UserID: "carol", Role: domain.RoleViewer})
	if _, ok := v.Resolve("llm", node.Principal{UserID: "carol"}); ok {
		t.Fatal("an ambiguous bare name resolved")
	}

	// Ingress: the owner and org admins may call; viewers and strangers may not.
	now := time.Now()
	user := func(sub string) string {
		s, err := token.MintUser(key, token.DefaultIssuer, sub, "", time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	route, _ := v.Resolve("llm.acme", anyone)
	// zed has no role in acme: the tunnel is unknown to him, not forbidden.
	for sub, want := range map[string]error{"alice": nil, "carol": nil, "vic": node.ErrForbidden, "zed": node.ErrUnknownTunnel} {
		err := authorizeBearer(v, user(sub), route)
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("%s: err = %v, want %v", sub, err, want)
		}
	}
	if err := authorizeBearer(v, "", route); !errors.Is(err, node.ErrUnauthenticated) {
		t.Errorf("no token: %v", err)
	}
	// An owner who left the organization no longer may.
	f.domain(domain.RoleUnassigned{OrgID: org, UserID: "alice", Role: domain.RoleOperator})
	if err := authorizeBearer(v, user("alice"), route); !errors.Is(err, node.ErrUnknownTunnel) {
		t.Errorf("owner without a role: %v", err)
	}
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "alice", Role: domain.RoleViewer})
	if err := authorizeBearer(v, user("alice"), route); err != nil {
		t.Errorf("owner back as a viewer: %v", err)
	}

	// Agents: a token for the tunnel works until it is revoked or the tunnel deleted.
	agentTok, _ := token.MintAgent(key, token.DefaultIssuer, tokID, org, tun, now.Add(time.Hour), now)
	id, err := v.AuthenticateAgent(context.Background(), agentTok)
	if err != nil || id.TunnelID != tun || id.TokenID != tokID {
		t.Fatalf("agent: %+v %v", id, err)
	}
	f.domain(domain.AgentTokenRevoked{TokenID: tokID, OrgID: org, TunnelID: tun})
	if _, err := v.AuthenticateAgent(context.Background(), agentTok); !errors.Is(err, node.ErrUnauthenticated) || !errors.Is(err, node.ErrTokenRevoked) {
		t.Fatalf("revoked token: %v", err)
	}
	other, _ := token.MintAgent(key, token.DefaultIssuer, "0193f2a4-7c1e-7d3a-9b2e-000000000005", org, tun, now.Add(time.Hour), now)
	f.domain(domain.TunnelDeleted{TunnelID: tun, OrgID: org, Name: "llm"})
	if _, err := v.AuthenticateAgent(context.Background(), other); !errors.Is(err, node.ErrUnauthenticated) || !errors.Is(err, node.ErrTunnelDeleted) {
		t.Fatalf("deleted tunnel: %v", err)
	}
	if _, ok := v.Resolve("llm.acme", anyone); ok {
		t.Fatal("a deleted tunnel still routes")
	}
	if _, ok := v.Resolve("llm", node.Principal{UserID: "alice"}); ok {
		t.Fatal("alice's bare llm resolves to another organization's tunnel")
	}
	mu.Lock()
	if len(revoked) != 1 || revoked[0] != tokID || len(deleted) != 1 || deleted[0] != tun {
		t.Fatalf("hooks: revoked %v deleted %v", revoked, deleted)
	}
	mu.Unlock()

	// A rotated token key keeps verifying user tokens for a day and agent tokens until they
	// expire; a revoked one stops at once.
	next, _ := ledger.GenerateSigningKey()
	zedRoute := node.Route{OrgID: org2, TunnelID: tun2, Name: "llm"}
	zedAgent, _ := token.MintAgent(key, token.DefaultIssuer, "0193f2a4-7c1e-7d3a-9b2e-000000000006", org2, tun2, now.Add(30*24*time.Hour), now)
	f.log(ledger.TypeKeyRotated, ledger.NewKeyRotation("o", ledger.PurposeToken, "control-plane", key, next))
	if err := authorizeBearer(v, user("zed"), zedRoute); err != nil {
		t.Fatalf("old key after rotation: %v", err)
	}
	// (the same view, had the rotation been recorded 25 hours ago)
	g := &feed{t: t, v: view.New(token.DefaultIssuer, view.Hooks{})}
	g.log(ledger.TypeKeyAdded, ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", key))
	g.domain(domain.OrganizationCreated{OrgID: org2, Name: "globex"})
	g.domain(domain.TunnelCreated{TunnelID: tun2, OrgID: org2, Owner: "zed", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	g.domain(domain.RoleAssigned{OrgID: org2, UserID: "zed", Role: domain.RoleOperator})
	rotation, _ := json.Marshal(ledger.NewKeyRotation("o", ledger.PurposeToken, "control-plane", key, next))
	if err := g.v.Apply(view.Event{Position: g.pos, EventID: "rot", StreamID: ledger.LogStream, Type: ledger.TypeKeyRotated,
		Payload: rotation, RecordedAt: time.Now().Add(-25 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := authorizeBearer(g.v, user("zed"), zedRoute); !errors.Is(err, node.ErrUnauthenticated) {
		t.Fatalf("a user token of a key rotated out 25 hours ago: %v", err)
	}
	if _, err := g.v.AuthenticateAgent(context.Background(), zedAgent); err != nil {
		t.Fatalf("an agent token of a key rotated out 25 hours ago: %v", err)
	}
	f.log(ledger.TypeKeyRevoked, ledger.KeyRevokedPayload{KeyID: key.ID()})
	if err := authorizeBearer(v, user("zed"), node.Route{OrgID: org2, TunnelID: tun2, Name: "llm"}); !errors.Is(err, node.ErrUnauthenticated) {
		t.Fatalf("revoked key: %v", err)
	}

	// Redelivery is ignored; WaitFor sees the position.
	if err := v.Apply(view.Event{Position: 1, StreamID: "s", Type: domain.TypeTunnelDeleted, Payload: []byte(`{"tunnel_id":"nope"}`)}); err != nil {
		t.Fatalf("redelivered event: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, f.pos-1); err != nil {
		t.Fatal(err)
	}
}

// AccessWithdrawn fires for exactly the events after which an earlier ingress decision may no
// longer hold, so the node can drop its cached authorizations.
func TestAccessWithdrawnHook(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var fired []uint64
	var f *feed
	v := view.New(token.DefaultIssuer, view.Hooks{AccessWithdrawn: func() { mu.Lock(); fired = append(fired, f.pos); mu.Unlock() }})
	f = &feed{t: t, v: v, pos: 1}
	key, _ := ledger.GenerateSigningKey()
	f.log(ledger.TypeKeyAdded, ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", key)) // 1
	f.domain(domain.OrganizationCreated{OrgID: org, Name: "acme"})                                 // 2
	f.domain(domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "carol", Role: domain.RoleAdmin})             // 4
	f.domain(domain.TunnelUpdated{TunnelID: tun, OrgID: org, Upstream: ptr("http://127.0.0.1:2")}) // 5
	f.domain(domain.TunnelUpdated{TunnelID: tun, OrgID: org, Labels: &map[string]string{}})        // 6: fires (keys scoped by labels)
	f.domain(domain.TunnelUpdated{TunnelID: tun, OrgID: org, CORS: &domain.TunnelCORS{Mode: domain.CORSPassthrough}})
	f.domain(domain.RoleUnassigned{OrgID: org, UserID: "carol", Role: domain.RoleAdmin})      // 8: fires
	f.domain(domain.TunnelDeleted{TunnelID: tun, OrgID: org, Name: "llm"})                    // 9: fires
	f.log(ledger.TypeKeyRevoked, ledger.KeyRevokedPayload{KeyID: key.ID(), Reason: "leaked"}) // 10: fires
	f.domain(domain.AccessKeyRevoked{KeyID: "k1", OrgID: org, TunnelID: tun})                 // 11: fires
	mu.Lock()
	defer mu.Unlock()
	// The hook runs after Apply returns from the fold, before the feed moves its position on.
	if fmt.Sprint(fired) != "[6 8 9 10 11]" {
		t.Fatalf("AccessWithdrawn fired at positions %v, want [6 8 9 10 11]", fired)
	}
}

func ptr[T any](v T) *T { return &v }

// The view is ready once it has applied the log's last position at start, not before; an empty
// log is ready at once; a view never told the target is not ready.
func TestReadyOnceCaughtUp(t *testing.T) {
	t.Parallel()
	v := view.New(token.DefaultIssuer, view.Hooks{})
	if err := v.Ready(); err == nil {
		t.Fatal("ready before ReadyAt")
	}
	v.ReadyAt(2)
	f := &feed{t: t, v: v}
	for i := range 3 {
		err := v.Ready()
		if err == nil {
			t.Fatalf("ready after %d of 3 events", i)
		}
		if want := fmt.Sprintf("(%d of 3 events applied)", i); !strings.Contains(err.Error(), want) {
			t.Fatalf("%v, want %q", err, want)
		}
		f.domain(&domain.OrganizationCreated{OrgID: org, Name: fmt.Sprintf("acme%d", i)})
	}
	if err := v.Ready(); err != nil {
		t.Fatal(err)
	}
	f.domain(&domain.OrganizationCreated{OrgID: org2, Name: "later"})
	if err := v.Ready(); err != nil {
		t.Fatal(err)
	}

	empty := view.New(token.DefaultIssuer, view.Hooks{})
	empty.ReadyAt(-1)
	if err := empty.Ready(); err != nil {
		t.Fatal(err)
	}
}

// A node's facts stream holds only what nodes may report; a control-plane event found there (a
// node writing around the ingester) changes nothing, while the same event in its own stream does.
func TestNodeFactsCannotChangeTheView(t *testing.T) {
	t.Parallel()
	v := view.New(token.DefaultIssuer, view.Hooks{})
	f := &feed{t: t, v: v, pos: 1}
	f.domain(domain.OrganizationCreated{OrgID: org, Name: "acme"})
	f.domain(domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	deleted, _ := json.Marshal(domain.TunnelDeleted{TunnelID: tun, OrgID: org, Name: "llm"})
	f.apply(domain.NodeFactsStream("0193f2a4-7c1e-7d3a-9b2e-0000000000aa"), domain.TypeTunnelDeleted, deleted)
	if _, ok := v.Resolve("llm.acme", node.Principal{}); !ok {
		t.Fatal("a tunnel.deleted in a node's facts stream deleted the tunnel")
	}
	f.apply(domain.TunnelStream(tun), domain.TypeTunnelDeleted, deleted)
	if _, ok := v.Resolve("llm.acme", node.Principal{}); ok {
		t.Fatal("the tunnel survived its deletion")
	}
}

// A drain request is a decision a command may name, and the node's lasting state.
func TestDrainRequested(t *testing.T) {
	t.Parallel()
	const nodeID = "0193f2a4-7c1e-7d3a-9b2e-0000000000bb"
	var hooked []string
	v := view.New(token.DefaultIssuer, view.Hooks{DrainRequested: func(id string) { hooked = append(hooked, id) }})
	f := &feed{t: t, v: v}
	if v.DrainRequested(nodeID) {
		t.Fatal("drain requested before any event")
	}
	f.domain(domain.NodeDrainRequested{NodeID: nodeID})
	if !v.DrainRequested(nodeID) || v.DrainRequested("another") || len(hooked) != 1 || hooked[0] != nodeID {
		t.Fatalf("after the request: %v, hooked %v", v.DrainRequested(nodeID), hooked)
	}
	d, err := v.Decided(context.Background(), "ev-0")
	if err != nil || d != (view.Decision{Type: domain.TypeNodeDrainRequested, NodeID: nodeID}) {
		t.Fatalf("decision: %+v %v", d, err)
	}
	b, _, err := v.Snapshot("o")
	if err != nil {
		t.Fatal(err)
	}
	w := view.New(token.DefaultIssuer, view.Hooks{})
	if err := w.Restore(b, "o"); err != nil || !w.DrainRequested(nodeID) {
		t.Fatalf("restored: %v %v", w.DrainRequested(nodeID), err)
	}
}

// authorizeBearer is what the ingress asks the view for a request with bearer: authentication,
// then authorization.
func authorizeBearer(v *view.View, bearer string, r node.Route) error {
	p, err := v.AuthenticateCaller(context.Background(), bearer)
	if err != nil {
		return err
	}
	return v.AuthorizeIngress(context.Background(), p, r)
}
