package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

// every is how often the upstream sends an event on each of its streams.
const every = 200 * time.Millisecond

// chromium finds the browser: skipped without one, failed without one under CI=true.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium on this machine (Debian package chromium; make deps installs it), and CI=true")
	}
	t.Skip("no Chromium on this machine (Debian package chromium; make deps installs it)")
	return ""
}

// upstream is the tunnel's upstream: a page that opens an event stream, a streamed fetch and a
// WebSocket back through the tunnel, and those three streams, each sending every 200 ms. It
// records the cookies it is sent.
type upstream struct {
	mu      sync.Mutex
	cookies []string
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.cookies = append(u.cookies, r.Header.Values("Cookie")...)
	u.mu.Unlock()
	switch r.URL.Path {
	case "/":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Set-Cookie", "theirs=upstream; Path=/")
		io.WriteString(w, pageHTML)
	case "/events":
		w.Header().Set("Content-Type", "text/event-stream")
		stream(w, r, func(i int) string { return fmt.Sprintf("data: %d\n\n", i) })
	case "/stream":
		w.Header().Set("Content-Type", "text/plain")
		stream(w, r, func(i int) string { return fmt.Sprintf("chunk %d\n", i) })
	case "/ws":
		c, err := (&websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for i := 0; ; i++ {
			if c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint("tick ", i))) != nil {
				return
			}
			time.Sleep(every)
		}
	default:
		http.NotFound(w, r)
	}
}

func (u *upstream) sawCookie(sub string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.ContainsFunc(u.cookies, func(c string) bool { return strings.Contains(c, sub) })
}

func stream(w http.ResponseWriter, r *http.Request, msg func(int) string) {
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; i++ {
		if _, err := io.WriteString(w, msg(i)); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

// pageHTML records, with the browser's clock (Date.now(), ms), when each message of each stream
// arrived and when each stream ended.
const pageHTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>through the tunnel</title></head>
<body><p id="ready">the tunnel's page</p>
<script>
const r = window.results = {cookie: document.cookie, sse: [], sseEnd: 0, fetch: [], fetchEnd: 0, ws: [], wsOpen: 0, wsEnd: 0, wsCode: 0};
const es = new EventSource('/events');
es.onmessage = e => r.sse.push(Date.now());
es.onerror = () => { if (!r.sseEnd) r.sseEnd = Date.now(); es.close(); };
(async () => {
  try {
    const res = await fetch('/stream');
    r.fetchStatus = res.status;
    const rd = res.body.getReader();
    for (;;) {
      const {done} = await rd.read();
      if (done) break;
      r.fetch.push(Date.now());
    }
  } catch (e) { r.fetchErr = String(e); }
  r.fetchEnd = Date.now();
})();
const ws = new WebSocket('ws://' + location.host + '/ws');
ws.onopen = () => { r.wsOpen = Date.now(); };
ws.onmessage = () => r.ws.push(Date.now());
ws.onclose = e => { r.wsEnd = Date.now(); r.wsCode = e.code; };
</script></body></html>
`

// results is what the page recorded.
type results struct {
	Cookie   string  `json:"cookie"`
	SSE      []int64 `json:"sse"`
	SSEEnd   int64   `json:"sseEnd"`
	Fetch    []int64 `json:"fetch"`
	FetchEnd int64   `json:"fetchEnd"`
	FetchErr string  `json:"fetchErr"`
	WS       []int64 `json:"ws"`
	WSOpen   int64   `json:"wsOpen"`
	WSEnd    int64   `json:"wsEnd"`
	WSCode   int     `json:"wsCode"`
}

// system is a control plane, a node and NATS (serve's assembly) with browser login on, a provider
// and an upstream with its agent.
type system struct {
	t          *testing.T
	sv         *serveapp.App
	idp        *oidctest.Provider
	up         *upstream
	admin      string // a superadmin's token
	apiURL     string
	tunnelHost string // web.acme.localhost:<port>
	tunnelID   string
	user       string // alice's user id
}

func listen(t *testing.T) (net.Listener, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return ln, port
}

func startSystem(t *testing.T) *system {
	s := &system{t: t, up: &upstream{}}
	s.idp = oidctest.Start(t, oidctest.Options{Users: []oidctest.User{{Subject: "u-alice", Name: "Alice Doe", Username: "alice", Groups: []string{"ml-team"}}},
		RedirectURIs: []string{"http://127.0.0.1" + api.BrowserCallbackPath}})
	s.user = domain.ExternalUserID(s.idp.Issuer, "u-alice")
	apiLn, apiPort := listen(t)
	nodeLn, nodePort := listen(t)
	s.apiURL = "http://127.0.0.1:" + apiPort
	s.tunnelHost = "web.acme.localhost:" + nodePort
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("TUNNELPLANE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	sv, err := serveapp.New(serveapp.Config{
		Control: controlapp.Config{DatabaseURL: pgtest.NewEmptyDatabase(t), DataDir: t.TempDir(), Listener: apiLn,
			OIDCIssuer: s.idp.Issuer, OIDCClientID: "tunnelplane-cli", PublicURL: s.apiURL,
			BrowserLoginOrigins: []string{"http://*.localhost:" + nodePort}},
		Node:     nodeapp.Config{Name: "node-1", Listener: nodeLn, BaseDomain: "localhost", LoginURL: s.apiURL},
		NATSHost: "127.0.0.1", NATSPort: -1, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sv.Close)
	s.sv = sv
	if s.admin, err = token.MintUser(sv.CP.Service.TokenKey(), token.DefaultIssuer, serveapp.Actor, "", time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Organization acme, tunnel web to the upstream, alice a viewer with a grant on it.
	upLn, _ := listen(t)
	hs := &http.Server{Handler: s.up, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(upLn)
	t.Cleanup(func() { hs.Close() })
	s.call("POST", "/api/v1/orgs", api.OrgInput{Name: "acme", Owner: "owner-1"}, 201)
	var tun struct{ ID string }
	s.decode(s.call("POST", "/api/v1/tunnels?org=acme", api.TunnelInput{Name: "web", Upstream: "http://" + upLn.Addr().String()}, 201), &tun)
	s.tunnelID = tun.ID
	s.call("POST", "/api/v1/role-assignments?org=acme", api.RoleInput{UserID: s.user, Role: "viewer"}, 201)
	var agentTok struct{ Token string }
	s.decode(s.call("POST", "/api/v1/tunnels/"+s.tunnelID+"/tokens?org=acme", api.TokenInput{TTL: "1h"}, 201), &agentTok)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(ctx, agent.Config{NodeURL: sv.Node.URL + "/v1/agent", Token: agentTok.Token, Upstream: "http://" + upLn.Addr().String(),
			HostKeyFingerprint: sv.Node.Fingerprint, Logger: log})
	}()
	t.Cleanup(func() { cancel(); <-done })
	poll.Until(t, 30*time.Second, "the agent holding the tunnel", func() bool {
		for _, si := range sv.Node.Node.Sessions() {
			if si.TunnelID == s.tunnelID {
				return true
			}
		}
		return false
	})
	return s
}

// call is an admin API call that must answer want; it returns the body.
func (s *system) call(method, path string, body any, want int) []byte {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(method, s.apiURL+path, bytes.NewReader(b))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		s.t.Fatalf("%s %s: %d, want %d: %s", method, path, res.StatusCode, want, out)
	}
	return out
}

func (s *system) decode(b []byte, v any) {
	s.t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		s.t.Fatal(err)
	}
}

// refused is the node's count of refusals for reason.
func (s *system) refused(reason string) float64 {
	mfs, err := s.sv.CP.Registry.Gather() // serve's node registers in the control plane's registry
	if err != nil {
		s.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tunnelplane_node_ingress_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// newBrowser starts a headless Chromium (no sandbox: CI runs as root; a fresh profile).
func newBrowser(t *testing.T) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.Headless,
		chromedp.UserDataDir(t.TempDir()), chromedp.DisableGPU)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil { // start the browser outside any timeout
		t.Fatal(err)
	}
	return ctx
}

func run[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

func pageResults(t *testing.T, ctx context.Context) results {
	t.Helper()
	raw := run(t, ctx, "read the page's results", chromedp.Evaluate[string](`JSON.stringify(window.results)`))
	var r results
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// gaps checks that stamps (ms) arrived spaced as sent: no two bunched, their mean near every.
func gaps(t *testing.T, what string, stamps []int64) {
	t.Helper()
	if len(stamps) < 6 {
		t.Fatalf("%s: %d messages", what, len(stamps))
	}
	var sum int64
	ds := make([]int64, 0, len(stamps))
	for i := 2; i < len(stamps); i++ { // the first ones may wait on the connection's setup
		d := stamps[i] - stamps[i-1]
		ds = append(ds, d)
		sum += d
	}
	mean := time.Duration(sum/int64(len(ds))) * time.Millisecond
	t.Logf("%s: gaps %v ms, mean %v", what, ds, mean)
	if mean < every*8/10 || mean > every*12/10 {
		t.Errorf("%s: mean gap %v, want %v ± 20%%", what, mean, every)
	}
	for _, d := range ds {
		if time.Duration(d)*time.Millisecond < every/4 {
			t.Errorf("%s: messages bunched (a gap of %d ms)", what, d)
		}
	}
}

// A browser logs in through the provider and lands back on the tunnel's page with an HttpOnly
// session cookie for the tunnel host; the page's event stream, streamed fetch and WebSocket come
// through the tunnel spaced as sent; a page of another origin cannot open the WebSocket with the
// cookie; revoking the user's grant ends the three in the browser within a second.
func TestBrowserLoginStreamsAndRevocation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system and a browser")
	}
	t.Parallel()
	chromium(t)
	s := startSystem(t)
	var grant struct{ ID string }
	s.decode(s.call("POST", "/api/v1/tunnels/"+s.tunnelID+"/grants?org=acme", api.GrantInput{User: s.user, TTL: "1h"}, 201), &grant)
	ctx := newBrowser(t)
	page := "http://" + s.tunnelHost + "/"

	// Log in: the node sends the browser to the control plane, which sends it to the provider.
	run(t, ctx, "open the tunnel's page", chromedp.Navigate(page))
	run(t, ctx, "the provider's login form", chromedp.WaitVisible(chromedp.ID("username")))
	if loc := run(t, ctx, "location", chromedp.Location()); !strings.HasPrefix(loc, s.idp.Issuer+"/login?") {
		t.Fatalf("at %s, want the provider's login page", loc)
	}
	run(t, ctx, "type the user", chromedp.SendKeys(chromedp.ID("username"), "alice"))
	run(t, ctx, "log in", chromedp.Click(chromedp.ID("login")))
	run(t, ctx, "back on the tunnel's page", chromedp.WaitVisible(chromedp.ID("ready")))
	if loc := run(t, ctx, "location", chromedp.Location()); loc != page {
		t.Fatalf("landed at %s, want %s", loc, page)
	}
	if s.idp.Logins() != 1 {
		t.Fatalf("logins at the provider: %d", s.idp.Logins())
	}
	cookies := run(t, ctx, "the browser's cookies", func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{page}})
		return res.Cookies, err
	})
	var session *network.Cookie
	for _, c := range cookies {
		if c.Name == domain.SessionCookie {
			session = c
		}
	}
	if session == nil || !session.HTTPOnly || !session.Secure || session.SameSite != network.CookieSameSiteLax || session.Domain != strings.Split(s.tunnelHost, ":")[0] {
		t.Fatalf("session cookie: %+v", session)
	}
	if time.Until(time.Unix(int64(session.Expires), 0)) > api.DefaultLoginTTL+time.Minute {
		t.Fatalf("the cookie outlives the token: %v", time.Unix(int64(session.Expires), 0))
	}

	// The three streams flow, spaced as sent.
	poll.Until(t, 20*time.Second, "the page's streams flowing", func() bool {
		r := pageResults(t, ctx)
		return len(r.SSE) >= 10 && len(r.Fetch) >= 10 && len(r.WS) >= 10
	})
	r := pageResults(t, ctx)
	if strings.Contains(r.Cookie, domain.SessionCookie) || !strings.Contains(r.Cookie, "theirs=upstream") {
		t.Fatalf("document.cookie: %q (the session cookie must be HttpOnly; the upstream's own stays readable)", r.Cookie)
	}
	if r.SSEEnd != 0 || r.FetchEnd != 0 || r.WSEnd != 0 {
		t.Fatalf("a stream ended early: %+v", r)
	}
	gaps(t, "event stream", r.SSE)
	gaps(t, "streamed fetch", r.Fetch)
	gaps(t, "WebSocket", r.WS)
	if s.up.sawCookie(domain.SessionCookie) || s.up.sawCookie(domain.LoginNonceCookie) {
		t.Fatal("the upstream was sent the node's cookies")
	}
	if !s.up.sawCookie("theirs=upstream") {
		t.Fatal("the upstream's own cookie did not come back to it")
	}

	// A page of another origin of the same site (acme.localhost: Chromium takes the unknown
	// top-level domain as a public suffix, as it would take example.com's) makes the browser send
	// the cookie with its
	// WebSocket to the tunnel ; the node refuses it for
	// its Origin.
	evilLn, evilPort := listen(t)
	evil := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><p id="evil">other origin</p><script>
window.probe = {open: 0, end: 0};
const ws = new WebSocket('ws://%s/ws');
ws.onopen = () => { window.probe.open = Date.now(); };
ws.onclose = e => { window.probe.end = Date.now(); window.probe.code = e.code; };
</script>`, s.tunnelHost)
	})}
	go evil.Serve(evilLn)
	t.Cleanup(func() { evil.Close() })
	before := s.refused("websocket_origin")
	run(t, ctx, "open the other origin's page", chromedp.Navigate("http://evil.acme.localhost:"+evilPort+"/"))
	probe := run(t, ctx, "the other origin's WebSocket ending", chromedp.Poll[map[string]any](`window.probe && (window.probe.end || window.probe.open) ? window.probe : null`))
	if probe["open"] != float64(0) {
		t.Fatalf("a page of another origin opened the tunnel's WebSocket with the cookie: %v", probe)
	}
	if got := s.refused("websocket_origin"); got != before+1 {
		t.Fatalf("the node's Origin refusals: %v, want %v (the browser sent the cookie, the node refused the Origin)", got, before+1)
	}

	// Back on the tunnel's page, its streams flow again.
	run(t, ctx, "back to the tunnel's page", chromedp.Navigate(page))
	poll.Until(t, 20*time.Second, "the page's streams flowing again", func() bool {
		r := pageResults(t, ctx)
		return len(r.SSE) >= 3 && len(r.Fetch) >= 3 && len(r.WS) >= 3
	})

	// Revoke the grant through the API: the browser's three streams end within a second.
	start := time.Now()
	s.call("DELETE", "/api/v1/tunnels/"+s.tunnelID+"/grants/"+grant.ID+"?org=acme", nil, 200)
	poll.Until(t, 10*time.Second, "the page's streams ending", func() bool {
		r = pageResults(t, ctx)
		return r.SSEEnd != 0 && r.FetchEnd != 0 && r.WSEnd != 0
	})
	for what, end := range map[string]int64{"event stream": r.SSEEnd, "streamed fetch": r.FetchEnd, "WebSocket": r.WSEnd} {
		took := time.UnixMilli(end).Sub(start)
		t.Logf("%s ended in the browser %v after the revocation was asked for", what, took)
		if took > time.Second {
			t.Errorf("%s ended %v after the revocation, want within 1s", what, took)
		}
	}
	if r.WSCode != 1008 {
		t.Errorf("the WebSocket closed with %d, want 1008 (policy violation)", r.WSCode)
	}
	// The next call with the cookie is refused.
	status := run(t, ctx, "a call after the revocation", chromedp.Evaluate[int](`fetch('/events', {method: 'HEAD'}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if status != http.StatusForbidden {
		t.Fatalf("after the revocation: %d, want 403", status)
	}
}
