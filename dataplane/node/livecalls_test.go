package node_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/streamtest"
)

// liveEnv is a node whose view (routes, roles, grants, access keys) has the node decide its live
// calls again whenever it applies an event that may withdraw access, as nodeapp wires it.
type liveEnv struct {
	*env
	kv     *keyView
	client *http.Client
}

func newLiveEnv(t *testing.T, before ...func(*view.View)) *liveEnv {
	return newLiveEnvWith(t, nil, true, before...)
}

// newLiveEnvWith is newLiveEnv with more node configuration (mod), and without an agent of
// tun-llm on the node unless withAgent.
func newLiveEnvWith(t *testing.T, mod func(*node.Config), withAgent bool, before ...func(*view.View)) *liveEnv {
	var n atomic.Pointer[node.Node]
	kv := newKeyViewWith(t, view.Hooks{
		AccessWithdrawn: func() {
			if n := n.Load(); n != nil {
				n.ForgetAuthorizations()
				n.Reauthorize(false)
			}
		},
		CredentialsRevoked: func() {
			if n := n.Load(); n != nil {
				n.Reauthorize(true)
			}
		},
	})
	for _, f := range before {
		f(kv.v) // before the node serves anything
	}
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.Router, c.Authorizer = kv.v, kv.v
		if mod != nil {
			mod(c)
		}
	}))
	n.Store(e.nodeNow())
	b, _ := json.Marshal(ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", e.key))
	if err := kv.v.Apply(view.Event{Position: kv.pos, EventID: "ev-key", StreamID: ledger.LogStream, Type: ledger.TypeKeyAdded, Payload: b}); err != nil {
		t.Fatal(err)
	}
	kv.pos++
	kv.apply(domain.RoleAssigned{OrgID: "org-1", UserID: "vic", Role: domain.RoleViewer})
	if withAgent {
		e.startAgent("tun-llm", nil) // the demo upstream: /events and /ws/ticks
		e.waitHeld("tun-llm")
	}
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	return &liveEnv{env: e, kv: kv, client: client}
}

// grant lets user call tunnel tun-llm (or another) until ttl from now, which it returns.
func (l *liveEnv) grant(id, user string, ttl time.Duration, tunnel ...string) time.Time {
	exp := time.Now().Add(ttl)
	tun := "tun-llm"
	if len(tunnel) > 0 {
		tun = tunnel[0]
	}
	l.kv.apply(domain.GrantCreated{GrantID: id, OrgID: "org-1", TunnelID: tun, SubjectKind: domain.GrantToUser, Subject: user,
		ExpiresAt: exp, GrantedBy: "alice"})
	return exp
}

// sse opens the demo's event stream with a credential (in Authorization).
func (l *liveEnv) sse(cred string) *streamtest.Stream {
	req := l.request(http.MethodGet, "/t/llm.one/events?every=20ms", nil, cred)
	s := streamtest.SSE(l.t, l.client, req)
	s.Flowing(l.t, 2, 5*time.Second)
	return s
}

func (l *liveEnv) ws(cred string) *streamtest.Stream {
	s := streamtest.WebSocket(l.t, "ws://"+l.addr+"/t/llm.one/ws/ticks?every=20ms", http.Header{"Authorization": {"Bearer " + cred}})
	s.Flowing(l.t, 2, 5*time.Second)
	return s
}

func (l *liveEnv) cut(kind string) float64 {
	mfs, err := l.reg.Gather()
	if err != nil {
		l.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tunnelplane_node_ingress_calls_cut_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == kind {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A revoked grant ends the grantee's live event stream and WebSocket at once (the WebSocket with
// a close frame 1008), and its next call is refused; the owner's stream, beside them, goes on.
// Once the calls ended the registry holds nothing of them.
func TestRevokedGrantCutsLiveCalls(t *testing.T) {
	t.Parallel()
	l := newLiveEnv(t)
	vic := l.userToken("vic", time.Hour)
	l.grant("g-vic", "vic", time.Hour)
	sse, ws, owner := l.sse(vic), l.ws(vic), l.sse(l.alice)
	if n := l.nodeNow().LiveCalls(); n != 3 {
		t.Fatalf("live calls: %d, want 3", n)
	}
	start := time.Now()
	l.kv.apply(domain.GrantRevoked{GrantID: "g-vic", OrgID: "org-1", TunnelID: "tun-llm", RevokedBy: "alice"})
	t.Logf("event stream ended %v, WebSocket %v after the revocation", sse.EndsWithin(t, start, time.Second), ws.EndsWithin(t, start, time.Second))
	if _, code, err := ws.Ended(); code != 1008 {
		t.Fatalf("the WebSocket ended without a policy-violation close: %d %v", code, err)
	}
	owner.Flowing(t, 3, 5*time.Second)
	status, h, body := l.do(l.request(http.MethodGet, "/t/llm.one/api/tags", nil, vic))
	mustProblem(t, status, h, body, http.StatusForbidden)
	if l.cut("stream") != 1 || l.cut("websocket") != 1 {
		t.Fatalf("calls cut: stream %v, websocket %v", l.cut("stream"), l.cut("websocket"))
	}
	poll.Until(t, 5*time.Second, "the cut calls leaving the registry", func() bool { return l.nodeNow().LiveCalls() == 1 })
}

// A withdrawn role cuts the calls it allowed; an access key revoked cuts its stream; a grant's
// expiry by the node's clock cuts without any event.
func TestWithdrawalsCutLiveCalls(t *testing.T) {
	t.Parallel()
	l := newLiveEnv(t)
	l.kv.apply(domain.RoleAssigned{OrgID: "org-1", UserID: "olga", Role: domain.RoleAdmin})
	olga := l.userToken("olga", time.Hour)
	key := l.kv.issue("live", "tun-llm")
	gus := l.userToken("gus", time.Hour)
	l.kv.apply(domain.RoleAssigned{OrgID: "org-1", UserID: "gus", Role: domain.RoleViewer})
	expires := l.grant("g-gus", "gus", 1500*time.Millisecond)
	byRole, byKey, byGrant := l.sse(olga), l.sse(key), l.sse(gus)

	start := time.Now()
	l.kv.apply(domain.RoleUnassigned{OrgID: "org-1", UserID: "olga", Role: domain.RoleAdmin})
	t.Logf("role withdrawn: stream ended %v after", byRole.EndsWithin(t, start, time.Second))

	start = time.Now()
	l.kv.apply(domain.AccessKeyRevoked{KeyID: "key-live", OrgID: "org-1", TunnelID: "tun-llm", Reason: "leaked"})
	t.Logf("access key revoked: stream ended %v after", byKey.EndsWithin(t, start, time.Second))

	select {
	case <-byGrant.Done():
		t.Fatal("the grant's stream ended before the grant expired")
	default:
	}
	t.Logf("grant expired: stream ended %v after its expiry", byGrant.EndsWithin(t, expires, time.Second))
	if d := time.Until(expires); d > 0 {
		t.Fatalf("the grant's stream ended %v before the grant expired", d)
	}
	if got := l.cut("stream"); got != 3 {
		t.Fatalf("streams cut: %v, want 3", got)
	}
}

// A call still waiting for its response header when its grant is revoked is answered 403
// access-withdrawn, and its upstream connection closes.
func TestCutWhileWaitingForTheHeader(t *testing.T) {
	t.Parallel()
	l := newLiveEnv(t)
	var arrived, left atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-r.Context().Done()
		left.Add(1)
	}))
	t.Cleanup(hang.Close)
	l.startAgent("tun-2", func(c *agent.Config) { c.Upstream = hang.URL })
	l.waitHeld("tun-2")
	vic := l.userToken("vic", time.Hour)
	l.grant("g-vic", "vic", time.Hour, "tun-2")
	type answer struct {
		status int
		h      http.Header
		body   []byte
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := l.client.Do(l.request(http.MethodGet, "/t/second.one/slow", nil, vic))
		if err != nil {
			got <- answer{}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- answer{resp.StatusCode, resp.Header, b}
	}()
	poll.Until(t, 5*time.Second, "the call reaching the upstream", func() bool { return arrived.Load() == 1 })
	start := time.Now()
	l.kv.apply(domain.GrantRevoked{GrantID: "g-vic", OrgID: "org-1", TunnelID: "tun-2", RevokedBy: "alice"})
	select {
	case a := <-got:
		t.Logf("answered %v after the revocation", time.Since(start))
		if p := mustProblem(t, a.status, a.h, a.body, http.StatusForbidden); p.Error.Code != "access-withdrawn" {
			t.Fatalf("answer %s", a.body)
		}
	case <-time.After(time.Second):
		t.Fatal("the waiting call was not answered within 1s of the revocation")
	}
	poll.Until(t, 5*time.Second, "the upstream connection closing", func() bool { return left.Load() == 1 })
	if l.cut("waiting") != 1 {
		t.Fatalf("waiting calls cut: %v", l.cut("waiting"))
	}
}

// A token key revoked cuts the live calls of the user tokens it signed, although the roles that
// let them in remain: their credentials are authenticated again.
func TestRevokedTokenKeyCutsLiveCalls(t *testing.T) {
	t.Parallel()
	l := newLiveEnv(t)
	owner := l.sse(l.alice)
	b, _ := json.Marshal(ledger.KeyRevokedPayload{KeyID: l.key.ID(), Reason: "leaked"})
	start := time.Now()
	if err := l.kv.v.Apply(view.Event{Position: l.kv.pos, EventID: "ev-key-revoked", StreamID: ledger.LogStream, Type: ledger.TypeKeyRevoked, Payload: b}); err != nil {
		t.Fatal(err)
	}
	l.kv.pos++
	t.Logf("token key revoked: the owner's stream ended %v after", owner.EndsWithin(t, start, time.Second))
	status, h, body := l.do(l.request(http.MethodGet, "/t/llm.one/api/tags", nil, l.alice))
	mustProblem(t, status, h, body, http.StatusUnauthorized)
}

// A user token's own expiry ends the streams it opened, whatever role lets its user in (a role
// never ends by the clock; the token does): at the expiry the call is decided again and cut, and
// the token is refused from then on.
func TestTokenExpiryCutsItsLiveCalls(t *testing.T) {
	t.Parallel()
	l := newLiveEnv(t, func(v *view.View) { v.SetTokenLeeway(0) })
	l.kv.apply(domain.RoleAssigned{OrgID: "org-1", UserID: "tess", Role: domain.RoleAdmin})
	deadline := time.Now().Add(2 * time.Second) // the token's exp is this, to the second below
	tess := l.userToken("tess", 2*time.Second)
	s := l.sse(tess)
	select {
	case <-s.Done():
		t.Fatal("the stream ended before its token expired")
	case <-time.After(time.Until(deadline.Add(-1100 * time.Millisecond))):
	}
	t.Logf("token expired: stream ended %v after its expiry", s.EndsWithin(t, deadline, time.Second))
	if got := l.cut("stream"); got != 1 {
		t.Fatalf("streams cut: %v, want 1", got)
	}
}
