package node_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
)

// corsUpstream is an upstream that grants every origin itself (the node must replace that when
// the tunnel lists its origins), answers preflights with a body, and streams events.
type corsUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	options  []http.Header // the preflights that reached it
	requests int
}

func newCORSUpstream(t *testing.T) *corsUpstream {
	u := &corsUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.requests++
		if r.Method == http.MethodOptions {
			u.options = append(u.options, r.Header.Clone())
		}
		u.mu.Unlock()
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("X-Request-Id", "req-7")
		switch {
		case r.Method == http.MethodOptions:
			h.Set("Access-Control-Allow-Origin", "https://upstream-says.example")
			h.Set("Access-Control-Allow-Methods", "PUT")
			io.WriteString(w, "the upstream's preflight body")
		case r.URL.Path == "/events":
			h.Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(20 * time.Millisecond)
			}
		default:
			io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *corsUpstream) counts() (requests, preflights int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests, len(u.options)
}

// corsEnv is a node on a real view with tunnel llm.one (its agent running, upstream u) and
// tunnel second.one (no agent), and an access key for each.
func corsEnv(t *testing.T) (e *env, kv *keyView, u *corsUpstream, key, key2 string) {
	kv = newKeyView(t)
	e = newEnv(t, withNodeConfig(func(c *node.Config) {
		c.Router, c.Authorizer = kv.v, kv.v
		c.FailoverWait = -1 // calls to second.one, which has no agent, are answered at once
	}))
	u = newCORSUpstream(t)
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = u.URL })
	e.waitHeld("tun-llm")
	return e, kv, u, kv.issue("cors", "tun-llm"), kv.issue("cors-2", "tun-2")
}

func (kv *keyView) setCORS(tunnel string, c domain.TunnelCORS) {
	kv.apply(domain.TunnelUpdated{TunnelID: tunnel, OrgID: "org-1", CORS: &c})
}

func (e *env) send(method, path string, headers ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req := e.request(method, path, nil, "")
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	return e.do(req)
}

const appOrigin = "https://app.example.com"

// A tunnel that lists its origins: the node answers their preflights itself without a credential
// and refuses other origins'; every answer to a listed origin carries the node's grant (the
// upstream's replaced), the node's own refusals and a streamed response included; a tunnel
// without a setting behaves as before.
func TestCORSOrigins(t *testing.T) {
	t.Parallel()
	e, kv, u, key, key2 := corsEnv(t)
	kv.setCORS("tun-llm", domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{appOrigin, "http://localhost:5173"}})
	kv.setCORS("tun-2", domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{appOrigin}})

	status, h, body := e.send("OPTIONS", "/t/llm.one/v1/chat/completions", "Origin: "+appOrigin,
		"Access-Control-Request-Method: POST", "Access-Control-Request-Headers: Authorization, content-type,X-Tunnel-Key")
	if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != appOrigin || h.Get("Access-Control-Allow-Credentials") != "true" ||
		h.Get("Access-Control-Allow-Methods") != "POST" || h.Get("Access-Control-Allow-Headers") != "authorization, content-type, x-tunnel-key" ||
		h.Get("Access-Control-Max-Age") != "600" || !strings.Contains(h.Get("Vary"), "Origin") || len(body) != 0 {
		t.Fatalf("preflight: %d %v %s", status, h, body)
	}
	if _, n := u.counts(); n != 0 {
		t.Fatalf("the node's own preflight reached the upstream %d times", n)
	}
	status, h, body = e.send("OPTIONS", "/t/llm.one/v1/chat/completions", "Origin: https://evil.example", "Access-Control-Request-Method: POST")
	if p := mustProblem(t, status, h, body, http.StatusForbidden); p.Error.Code != "cors-origin-refused" || h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("another origin's preflight: %v %s", h, body)
	}
	status, h, body = e.send("OPTIONS", "/t/llm.one/", "Origin: "+appOrigin, "Access-Control-Request-Method: GET",
		"Access-Control-Request-Headers: "+strings.Repeat("x-a, ", 65)+"x-b")
	if p := mustProblem(t, status, h, body, http.StatusBadRequest); p.Error.Code != "bad-preflight" || h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("a preflight asking for 66 headers: %v %s", h, body)
	}

	granted := func(name string, h http.Header, expose string) {
		t.Helper()
		if h.Get("Access-Control-Allow-Origin") != appOrigin || len(h.Values("Access-Control-Allow-Origin")) != 1 ||
			h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(h.Get("Access-Control-Expose-Headers"), expose) ||
			!strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Errorf("%s: not granted to %s: %v", name, appOrigin, h)
		}
	}
	// The node's refusals, readable by the page.
	status, h, body = e.send("GET", "/t/llm.one/v1/models", "Origin: "+appOrigin)
	mustProblem(t, status, h, body, http.StatusUnauthorized)
	granted("401", h, "Www-Authenticate")
	walled := kv.issue("walled", "tun-llm", "10.0.0.0/8")
	status, h, body = e.send("GET", "/t/llm.one/v1/models", "Origin: "+appOrigin, "X-Tunnel-Key: "+walled)
	mustProblem(t, status, h, body, http.StatusForbidden)
	granted("403", h, "")
	status, h, body = e.send("GET", "/t/second.one/", "Origin: "+appOrigin, "X-Tunnel-Key: "+key2)
	mustProblem(t, status, h, body, http.StatusServiceUnavailable)
	granted("503", h, "Retry-After")

	// The upstream's answers: the node's grant instead of the upstream's "*".
	status, h, body = e.send("GET", "/t/llm.one/v1/models", "Origin: "+appOrigin, "Authorization: Bearer "+key)
	if status != 200 || string(body) != "ok" {
		t.Fatalf("GET: %d %s", status, body)
	}
	granted("GET", h, "X-Request-Id")
	req := e.request("GET", "/t/llm.one/events", nil, key)
	req.Header.Set("Origin", appOrigin)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	granted("event stream", resp.Header, "X-Request-Id")
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		br.ReadString('\n')
	}
	resp.Body.Close()

	// Another origin gets no grant, the upstream's "*" included.
	status, h, _ = e.send("GET", "/t/llm.one/v1/models", "Origin: https://evil.example", "Authorization: Bearer "+key)
	if status != 200 || h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("another origin: %d %v", status, h)
	}

	// Without a setting, as before: a preflight needs a credential, responses carry the upstream's headers.
	kv.setCORS("tun-llm", domain.TunnelCORS{Mode: domain.CORSOff})
	status, h, body = e.send("OPTIONS", "/t/llm.one/", "Origin: "+appOrigin, "Access-Control-Request-Method: POST")
	mustProblem(t, status, h, body, http.StatusUnauthorized)
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("a tunnel without CORS granted a preflight: %v", h)
	}
	if status, h, _ = e.send("GET", "/t/llm.one/", "Origin: "+appOrigin, "Authorization: Bearer "+key); status != 200 || h.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("a tunnel without CORS: %d %v", status, h)
	}
}

// In passthrough mode a preflight, and nothing else, reaches the upstream without a credential:
// without any credential or cookie, and only the status and header of its answer come back.
func TestCORSPassthrough(t *testing.T) {
	t.Parallel()
	e, kv, u, key, _ := corsEnv(t)
	kv.setCORS("tun-llm", domain.TunnelCORS{Mode: domain.CORSPassthrough})

	status, h, body := e.send("OPTIONS", "/t/llm.one/v1/chat/completions", "Origin: "+appOrigin, "Access-Control-Request-Method: PUT",
		"Cookie: session=secret", "X-Tunnel-Key: "+key, "Authorization: Bearer upstream-key")
	if status != 200 || h.Get("Access-Control-Allow-Origin") != "https://upstream-says.example" || h.Get("Access-Control-Allow-Methods") != "PUT" || len(body) != 0 {
		t.Fatalf("passed-through preflight: %d %v %q", status, h, body)
	}
	u.mu.Lock()
	seen := u.options
	u.mu.Unlock()
	if len(seen) != 1 || seen[0].Get("Origin") != appOrigin || seen[0].Get("Access-Control-Request-Method") != "PUT" ||
		seen[0].Get("Cookie") != "" || seen[0].Get("X-Tunnel-Key") != "" || seen[0].Get("Authorization") != "" {
		t.Fatalf("the upstream saw %v", seen)
	}

	before, _ := u.counts()
	for _, c := range []struct {
		name    string
		method  string
		headers []string
	}{
		{"OPTIONS without Access-Control-Request-Method", "OPTIONS", []string{"Origin: " + appOrigin}},
		{"GET with an Origin", "GET", []string{"Origin: " + appOrigin, "Access-Control-Request-Method: GET"}},
		{"POST with an Origin", "POST", []string{"Origin: " + appOrigin}},
	} {
		status, h, body := e.send(c.method, "/t/llm.one/v1/models", c.headers...)
		mustProblem(t, status, h, body, http.StatusUnauthorized)
	}
	resp, body := rawExchange(t, e, "OPTIONS /t/llm.one/ HTTP/1.1\r\nHost: x\r\nOrigin: "+appOrigin+
		"\r\nAccess-Control-Request-Method: POST\r\nContent-Length: 5\r\n\r\nhello")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "bad-preflight") {
		t.Fatalf("a preflight with a body: %d %s", resp.StatusCode, body)
	}
	if after, _ := u.counts(); after != before {
		t.Fatalf("%d requests without a credential reached the upstream", after-before)
	}
	// With a credential, the upstream's own grant passes untouched.
	if status, h, _ = e.send("GET", "/t/llm.one/", "Origin: "+appOrigin, "X-Tunnel-Key: "+key); status != 200 || h.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("an actual request: %d %v", status, h)
	}
}

// An access key for a label selector calls the tunnels of its organization that carry the labels
// at the time of the call, those labelled after it was issued included, and nothing else: not
// another tunnel of its organization, not another organization's tunnel with the same labels.
// Relabelling a tunnel away ends its access for new calls.
func TestLabelAccessKeysAtTheIngress(t *testing.T) {
	t.Parallel()
	kv := newKeyView(t)
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.Router, c.Authorizer = kv.v, kv.v }))
	u := newCORSUpstream(t) // answers "ok" on every path
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = u.URL })
	e.startAgent("tun-2", func(c *agent.Config) { c.Upstream = u.URL })
	e.waitHeld("tun-llm")
	e.waitHeld("tun-2")
	ml := map[string]string{"team": "ml"}
	kv.apply(domain.TunnelUpdated{TunnelID: "tun-llm", OrgID: "org-1", Labels: &map[string]string{"team": "ml", "env": "dev"}})
	kv.apply(domain.OrganizationCreated{OrgID: "org-2", Name: "two"})
	kv.apply(domain.TunnelCreated{TunnelID: "tun-x", OrgID: "org-2", Owner: "olga", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http", Labels: ml})
	secret := domain.AccessKeyPrefix + "team-ml"
	kv.apply(domain.AccessKeyIssued{KeyID: "key-ml", OrgID: "org-1", Selector: ml, SecretHash: domain.HashAccessKey(secret),
		ExpiresAt: time.Now().Add(time.Hour), IssuedBy: "alice"})

	call := func(path string) (int, []byte) {
		t.Helper()
		status, _, body := e.send("GET", path, "X-Tunnel-Key: "+secret)
		return status, body
	}
	want := func(name, path string, status int) {
		t.Helper()
		if got, body := call(path); got != status {
			t.Errorf("%s: %d %s, want %d", name, got, body, status)
		}
	}
	want("a matching tunnel", "/t/llm.one/v1/models", 200)
	want("a matching tunnel by bare name", "/t/llm/v1/models", 200)
	want("a matching tunnel by id", "/t/tun-llm/v1/models", 200)
	want("a tunnel without the label", "/t/second.one/v1/models", 404)
	want("another organization's tunnel with the label", "/t/llm.two/v1/models", 404)
	want("another organization's tunnel by id", "/t/tun-x/v1/models", 404)

	kv.apply(domain.TunnelUpdated{TunnelID: "tun-2", OrgID: "org-1", Labels: &ml})
	want("a tunnel labelled after the key was issued", "/t/second.one/v1/models", 200)
	kv.apply(domain.TunnelUpdated{TunnelID: "tun-llm", OrgID: "org-1", Labels: &map[string]string{"team": "cv"}})
	want("a tunnel relabelled away", "/t/llm.one/v1/models", 404)
	want("a tunnel relabelled away, by bare name", "/t/llm/v1/models", 404)
	want("the other tunnel still", "/t/second.one/v1/models", 200)
	kv.apply(domain.AccessKeyRevoked{KeyID: "key-ml", OrgID: "org-1", Reason: "done"})
	want("revoked", "/t/second.one/v1/models", 401)
}

// anonRouter counts the lookups made for nobody (a request without a credential).
type anonRouter struct {
	node.Router
	anon atomic.Int64
}

func (r *anonRouter) Resolve(ref string, caller node.Principal) (node.Route, bool) {
	if caller == (node.Principal{}) {
		r.anon.Add(1)
	}
	return r.Router.Resolve(ref, caller)
}

// A request with an Origin header makes the node look its tunnel up for nobody only when it names
// one fully: a bare name resolves within a caller's organizations alone, and the view finds that
// out with a pass over every organization, which anyone sending an Origin header could otherwise
// have the node make for free. Such a request is refused as any without a credential.
func TestCORSLookupOnlyForQualifiedNames(t *testing.T) {
	t.Parallel()
	kv := newKeyView(t)
	rt := &anonRouter{Router: kv.v}
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.Router, c.Authorizer = rt, kv.v }))
	kv.setCORS("tun-llm", domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{appOrigin}})
	for _, c := range []struct{ method, path string }{{"GET", "/t/llm/v1/models"}, {"OPTIONS", "/t/llm/v1/models"}} {
		status, h, _ := e.send(c.method, c.path, "Origin: "+appOrigin, "Access-Control-Request-Method: POST")
		if status != http.StatusUnauthorized || h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s %s by bare name: %d %v, want 401 without a grant", c.method, c.path, status, h)
		}
	}
	if n := rt.anon.Load(); n != 0 {
		t.Fatalf("%d lookups for nobody by a bare name", n)
	}
	status, h, _ := e.send("OPTIONS", "/t/llm.one/v1/models", "Origin: "+appOrigin, "Access-Control-Request-Method: POST")
	if status != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != appOrigin || rt.anon.Load() != 1 {
		t.Fatalf("preflight by full name: %d %v, %d lookups for nobody", status, h, rt.anon.Load())
	}
}
