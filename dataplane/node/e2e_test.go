package node_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

func TestGetAndPostThroughTheTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startAgent("tun-llm", nil)
	sess := e.waitHeld("tun-llm")
	if sess.Protocol != node.ProtocolV2 || sess.KeyExchange != "mlkem768x25519-sha256" || sess.Cipher != "aes128-gcm@openssh.com" ||
		sess.HostKeyAlgo != "ssh-ed25519" || sess.AgentVersion != "1.2.3-test" {
		t.Fatalf("session %+v", sess)
	}

	status, _, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice))
	if status != 200 || string(body) != "ok\n" {
		t.Fatalf("GET: %d %q", status, body)
	}

	req := e.request("POST", "/t/llm/echo/a%2Fb?x=1", strings.NewReader("hello upstream"), e.alice)
	req.Header.Set("Content-Type", "text/plain")
	status, h, body := e.do(req)
	if status != 200 || string(body) != "hello upstream" || h.Get("X-Echo-Method") != "POST" {
		t.Fatalf("POST: %d %q %v", status, body, h)
	}
	if uri := h.Get("X-Echo-URI"); uri != "/echo/a%2Fb?x=1" {
		t.Fatalf("the upstream saw %q: the /t/llm prefix must go, the escaping stay", uri)
	}
	var hdr http.Header
	json.Unmarshal([]byte(h.Get("X-Echo-Headers")), &hdr)
	if hdr.Get("Authorization") != "" {
		t.Fatal("the caller's Authorization header reached the upstream")
	}
	if hdr.Get("X-Forwarded-For") == "" || hdr.Get("X-Forwarded-Prefix") != "/t/llm" {
		t.Fatalf("forwarding headers: %v", hdr)
	}
	// v2: the upstream sees its own host name, as local LLM servers require.
	if host := h.Get("X-Echo-Host"); host != strings.TrimPrefix(e.upstream.URL, "http://") {
		t.Fatalf("upstream saw Host %q", host)
	}

	// Host routing: <tunnel>.<base domain>.
	req = e.request("GET", "/echo?via=host", nil, e.alice)
	req.Host = "llm.tunnels.test"
	status, h, _ = e.do(req)
	if status != 200 || h.Get("X-Echo-URI") != "/echo?via=host" {
		t.Fatalf("host routing: %d %v", status, h)
	}
	// … and <tunnel>.<org>.<base domain>, any case, with a port; deeper names are no tunnel's.
	req = e.request("GET", "/echo?via=org-host", nil, e.alice)
	req.Host = "LLM.One.tunnels.test:8443"
	status, h, _ = e.do(req)
	if status != 200 || h.Get("X-Echo-URI") != "/echo?via=org-host" {
		t.Fatalf("host routing with the org: %d %v", status, h)
	}
	req = e.request("GET", "/echo", nil, e.alice)
	req.Host = "x.llm.one.tunnels.test"
	if status, _, _ = e.do(req); status != http.StatusNotFound {
		t.Fatalf("three labels under the base domain: %d", status)
	}
}

func TestStreamedTokensKeepTheirSpacing(t *testing.T) {
	e := newEnv(t)
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	const tokens, spacing = 6, 100 * time.Millisecond // the demo upstream's delay
	start := time.Now()
	req := e.request("POST", "/t/llm/api/generate", strings.NewReader(fmt.Sprintf(`{"prompt":"a b c","options":{"num_predict":%d}}`, tokens)), e.alice)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	var at []time.Duration
	var text string
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var c demo.GenerateChunk
		if err := json.Unmarshal(line, &c); err != nil {
			t.Fatal(err)
		}
		if !c.Done {
			at = append(at, time.Since(start))
			text += c.Response
		}
	}
	if len(at) != tokens || text != "a b c a b c " {
		t.Fatalf("got %d tokens %q", len(at), text)
	}
	// The first token arrives before the upstream even produced the second: nothing buffers.
	if at[0] > spacing*6/10 {
		t.Fatalf("first token after %v (the next one is due at %v): the response was buffered", at[0], spacing)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i] - at[i-1]; gap < spacing*6/10 {
			t.Fatalf("tokens %d and %d arrived %v apart; the upstream spaced them %v (arrivals %v)", i-1, i, gap, spacing, at)
		}
	}
}

func TestWebSocketThroughTheTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	d := websocket.Dialer{}
	c, resp, err := d.Dial("ws://"+e.addr+"/t/llm/ws", http.Header{"Authorization": {"Bearer " + e.alice}})
	if err != nil {
		t.Fatalf("dial through the tunnel: %v (%v)", err, resp)
	}
	defer c.Close()
	for i := range 20 {
		msg := fmt.Sprintf("message %d %s", i, strings.Repeat("x", i*1000))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		typ, p, err := c.ReadMessage()
		if err != nil || typ != websocket.TextMessage || string(p) != msg {
			t.Fatalf("echo %d: %v %d", i, err, len(p))
		}
	}
}

// patternReader streams n deterministic bytes without holding them.
type patternReader struct{ off, n int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	m := int(min(int64(len(p)), r.n-r.off))
	demo.Pattern(p[:m], r.off)
	r.off += int64(m)
	return m, nil
}

func TestLargeBodyArrivesIntactAndStreams(t *testing.T) {
	e := newEnv(t)
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	size := int64(256 << 20)
	if raceEnabled {
		size = 32 << 20 // the race detector makes every byte ~10× dearer; the path is the same
	}
	want := sha256.New()
	io.Copy(want, &patternReader{n: size})

	var peak atomic.Uint64
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	req := e.request("POST", "/t/llm/echo", &patternReader{n: size}, e.alice)
	req.ContentLength = size
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	close(stop)
	<-sampled
	if err != nil || n != size {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("the body came back different")
	}
	// Client, node, agent and upstream share this heap: together they may hold a few buffers
	// per hop, never the body.
	if grew := int64(peak.Load()) - int64(base.HeapAlloc); grew > 64<<20 {
		t.Fatalf("heap grew by %d MiB while %d MiB went through: the body is being held", grew>>20, size>>20)
	}
}

func TestTwoHundredConcurrentRequests(t *testing.T) {
	e := newEnv(t)
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			body := fmt.Sprintf("request %d %s", i, strings.Repeat("y", i*37))
			req := e.request("POST", fmt.Sprintf("/t/llm/echo?i=%d", i), strings.NewReader(body), e.alice)
			resp, err := e.client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(b) != body || resp.Header.Get("X-Echo-URI") != fmt.Sprintf("/echo?i=%d", i) {
				errs <- fmt.Errorf("request %d: %d %v %q", i, resp.StatusCode, err, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// With FailoverWait off (--failover-wait 0) a call for a tunnel without an agent is answered at
// once, as before calls waited for one (failover_test.go).
func TestAgentAbsentIsAnsweredAtOnce(t *testing.T) {
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.FailoverWait = -1 }))
	start := time.Now()
	status, h, body := e.do(e.request("GET", "/t/offline/api/tags", nil, e.alice))
	took := time.Since(start)
	p := mustProblem(t, status, h, body, http.StatusServiceUnavailable)
	if !strings.Contains(p.Detail, "offline") || h.Get("Retry-After") == "" {
		t.Fatalf("problem %+v", p)
	}
	if took > time.Second {
		t.Fatalf("an absent agent took %v to report", took)
	}

	// An agent whose upstream is down: 502 naming the reason.
	e.startAgent("tun-2", func(c *agent.Config) { c.Upstream = "http://127.0.0.1:1" })
	e.waitHeld("tun-2")
	status, h, body = e.do(e.request("GET", "/t/second/", nil, e.alice))
	p = mustProblem(t, status, h, body, http.StatusBadGateway)
	if !strings.Contains(p.Detail, "127.0.0.1:1") {
		t.Fatalf("upstream down: %+v", p)
	}

	// Unknown tunnels and requests naming none are 404s, to callers with a valid token; a missing
	// or invalid one learns nothing about which tunnels exist.
	status, h, body = e.do(e.request("GET", "/t/nope/", nil, e.alice))
	mustProblem(t, status, h, body, http.StatusNotFound)
	for _, bearer := range []string{"", "not-a-jwt", e.userToken("alice", -time.Hour)} {
		for _, path := range []string{"/t/nope/", "/t/second/"} {
			status, h, body = e.do(e.request("GET", path, nil, bearer))
			mustProblem(t, status, h, body, http.StatusUnauthorized)
		}
	}
	status, h, body = e.do(e.request("GET", "/elsewhere", nil, e.alice))
	mustProblem(t, status, h, body, http.StatusNotFound)
}

func TestCallersMustBeAuthenticatedAndAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	cases := []struct {
		name   string
		bearer string
		status int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"garbage", "not-a-jwt", http.StatusUnauthorized},
		{"expired", e.userToken("alice", -time.Hour), http.StatusUnauthorized},
		{"agent token is not a user token", e.agentToken("tun-llm", "x", time.Now().Add(time.Hour)), http.StatusUnauthorized},
		{"not the owner", e.userToken("bob", time.Hour), http.StatusForbidden},
		{"owner", e.alice, http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, h, body := e.do(e.request("GET", "/t/llm/healthz", nil, c.bearer))
			if c.status == http.StatusOK {
				if status != 200 {
					t.Fatalf("%d %s", status, body)
				}
				return
			}
			mustProblem(t, status, h, body, c.status)
			if c.status == http.StatusUnauthorized && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer challenge: %v", h)
			}
		})
	}
}

func TestV1AgentWorksAndUnknownVersionsAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startAgent("tun-llm", func(c *agent.Config) { c.Protocols = []string{node.ProtocolV1} })
	sess := e.waitHeld("tun-llm")
	if sess.Protocol != node.ProtocolV1 {
		t.Fatalf("protocol %q", sess.Protocol)
	}
	status, h, body := e.do(e.request("GET", "/t/llm/echo", nil, e.alice))
	if status != 200 || string(body) != "" {
		t.Fatalf("v1 tunnel: %d %s", status, body)
	}
	// v1 has no agent-info: the caller's Host goes through unchanged.
	if h.Get("X-Echo-Host") != e.addr {
		t.Fatalf("v1 upstream saw Host %q", h.Get("X-Echo-Host"))
	}

	for _, offered := range [][]string{{"tunnelplane.v9"}, nil} {
		d := websocket.Dialer{Subprotocols: offered}
		_, resp, err := d.Dial(e.agentURL(), nil)
		if err == nil || resp == nil {
			t.Fatalf("offering %v: connected", offered)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p := mustProblem(t, resp.StatusCode, resp.Header, body, http.StatusBadRequest)
		if !strings.Contains(p.Detail, node.ProtocolV1) || len(p.Supported) != 2 {
			t.Fatalf("refusal should name the supported versions: %+v", p)
		}
	}
}

func TestHostKeyMismatchIsRefusedBeforeTheTokenIsSent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	a := e.startAgent("tun-llm", func(c *agent.Config) { c.HostKeyFingerprint = wrong })
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent kept retrying a host key mismatch:\n%s", a.states)
	}
	if !errors.Is(a.err, agent.ErrHostKeyMismatch) || !errors.Is(a.err, agent.ErrPermanent) ||
		!strings.Contains(a.err.Error(), "node host key "+e.fp+" does not match the pinned "+wrong) {
		t.Fatalf("Run: %v", a.err)
	}
	if a.states.has("connected to") || a.states.has("retrying in") {
		t.Fatalf("states:\n%s", a.states)
	}
	if n := e.auth.calls.Load(); n != 0 {
		t.Fatalf("the token reached the node %d times", n)
	}
}

func TestExpiredAgentTokenIsRefusedWithTheReason(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.startAgent("tun-llm", func(c *agent.Config) {
		c.Token = e.agentToken("tun-llm", "old", time.Now().Add(-time.Minute))
	})
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent kept retrying an expired token:\n%s", a.states)
	}
	if !errors.Is(a.err, agent.ErrTokenExpired) || !errors.Is(a.err, agent.ErrAuthFailed) || !strings.Contains(a.err.Error(), "expired") {
		t.Fatalf("Run: %v", a.err)
	}
}

func TestSecondAgentReplacesTheFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.startAgent("tun-llm", func(c *agent.Config) { c.MaxBackoff = 30 * time.Second })
	s1 := e.waitHeld("tun-llm")

	other := newUpstream(t, "second upstream")
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = other })
	s2 := e.waitHeld("tun-llm", s1.SessionID)

	poll.Until(t, 5*time.Second, "first session's AgentDisconnected", func() bool { return len(e.sink.disconnectsFor(s1.SessionID)) == 1 })
	if d := e.sink.disconnectsFor(s1.SessionID)[0]; d.Reason != "replaced" || d.TunnelID != "tun-llm" {
		t.Fatalf("fact %+v", d)
	}
	poll.Until(t, 5*time.Second, "first agent told why", func() bool { return first.states.has("disconnected: replaced") })
	status, _, body := e.do(e.request("GET", "/t/llm/", nil, e.alice))
	if status != 200 || string(body) != "second upstream" {
		t.Fatalf("requests should reach the second agent: %d %q", status, body)
	}
	if s2.SessionID == s1.SessionID {
		t.Fatal("same session")
	}
}

func newUpstream(t *testing.T, body string) string {
	srv := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
	return srv
}

// switchableAuthorizer wraps an authorizer: deny withdraws the permission, reject the credential.
type switchableAuthorizer struct {
	node.IngressAuthorizer
	deny, reject *atomic.Bool
}

func (a switchableAuthorizer) AuthenticateCaller(ctx context.Context, bearer string) (node.Principal, error) {
	if a.reject.Load() {
		return node.Principal{}, fmt.Errorf("%w: key revoked", node.ErrUnauthenticated)
	}
	return a.IngressAuthorizer.AuthenticateCaller(ctx, bearer)
}

func (a switchableAuthorizer) AuthorizeIngress(ctx context.Context, p node.Principal, r node.Route) error {
	if a.deny.Load() {
		return fmt.Errorf("%w: withdrawn", node.ErrForbidden)
	}
	return a.IngressAuthorizer.AuthorizeIngress(ctx, p, r)
}

// A withdrawn permission stops working on the next request: authorization is decided per
// request. A credential the node stops trusting (a revoked token key) stops working once the
// node is told (ForgetAuthorizations), not when the cached authentication would expire.
func TestWithdrawnAccessEndsAtOnceAndForgetAuthorizationsEndsCachedTokens(t *testing.T) {
	t.Parallel()
	var deny, reject atomic.Bool
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.AuthCacheTTL = time.Hour
		c.Authorizer = switchableAuthorizer{IngressAuthorizer: c.Authorizer, deny: &deny, reject: &reject}
	}))
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	get := func() int {
		status, _, _ := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice))
		return status
	}
	if s := get(); s != http.StatusOK {
		t.Fatalf("allowed caller: %d", s)
	}
	deny.Store(true)
	if s := get(); s != http.StatusForbidden {
		t.Fatalf("withdrawn permission: %d, want 403 at once", s)
	}
	deny.Store(false)
	reject.Store(true)
	if s := get(); s != http.StatusOK {
		t.Fatalf("cached authentication: %d, want 200 until the node is told", s)
	}
	e.nodeNow().ForgetAuthorizations()
	if s := get(); s != http.StatusUnauthorized {
		t.Fatalf("after ForgetAuthorizations: %d, want 401", s)
	}
}
