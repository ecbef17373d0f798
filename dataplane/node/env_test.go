package node_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

func TestMain(m *testing.M) {
	// net/http lingers 500ms after refusing a request whose body it did not read (RST
	// avoidance); that goroutine ends by itself and is not ours. fasthttp's worker-pool cleaner
	// notices a stopped server within its 10s idle period, and its clock goroutine serves the
	// whole process.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

const issuer = token.DefaultIssuer

// The tunnels every test environment knows. alice owns them all; bob owns none.
var routes = map[string]node.Route{
	"llm":     {OrgID: "org-1", TunnelID: "tun-llm", Name: "llm"},
	"llm.one": {OrgID: "org-1", TunnelID: "tun-llm", Name: "llm"},
	"second":  {OrgID: "org-1", TunnelID: "tun-2", Name: "second"},
	"offline": {OrgID: "org-1", TunnelID: "tun-offline", Name: "offline"},
}

type staticRouter map[string]node.Route

func (r staticRouter) Resolve(ref string, _ node.Principal) (node.Route, bool) {
	rt, ok := r[ref]
	return rt, ok
}

// ownerAuthorizer is a real authorizer on commands/token: the user token must verify and its
// subject must own the tunnel.
type ownerAuthorizer struct {
	v      *token.Verifier
	owners map[string]string // tunnel id → user id
}

func (a ownerAuthorizer) AuthenticateCaller(_ context.Context, bearer string) (node.Principal, error) {
	c, err := a.v.VerifyUser(bearer)
	if err != nil {
		return node.Principal{}, fmt.Errorf("%w: %w", node.ErrUnauthenticated, err)
	}
	return node.Principal{UserID: c.Subject}, nil
}

func (a ownerAuthorizer) AuthorizeIngress(_ context.Context, p node.Principal, r node.Route) error {
	if a.owners[r.TunnelID] != p.UserID {
		return fmt.Errorf("%w: %s may not use tunnel %s", node.ErrForbidden, p.UserID, r.Name)
	}
	return nil
}

// countingAuthenticator counts the tokens that reached the node.
// It hands out seal as the token issuer's sealing key (as the view does), when set.
type countingAuthenticator struct {
	node.TokenAuthenticator
	calls atomic.Int64
	seal  node.SealKey
}

func (c *countingAuthenticator) AuthenticateAgent(ctx context.Context, raw string) (node.AgentIdentity, error) {
	c.calls.Add(1)
	id, err := c.TokenAuthenticator.AuthenticateAgent(ctx, raw)
	id.Seal = c.seal
	return id, err
}

// sink records the node's facts.
type sink struct {
	mu           sync.Mutex
	connected    []domain.AgentConnected
	disconnected []domain.AgentDisconnected
	replaced     []domain.AgentReplaced
	usage        []domain.UsageRecorded
	reported     []domain.Event
}

func (s *sink) AgentReplaced(e domain.AgentReplaced) {
	s.mu.Lock()
	s.replaced = append(s.replaced, e)
	s.mu.Unlock()
}

func (s *sink) replacements() []domain.AgentReplaced {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]domain.AgentReplaced(nil), s.replaced...)
}

func (s *sink) AgentConnected(e domain.AgentConnected) {
	s.mu.Lock()
	s.connected = append(s.connected, e)
	s.mu.Unlock()
}

func (s *sink) AgentDisconnected(e domain.AgentDisconnected) {
	s.mu.Lock()
	s.disconnected = append(s.disconnected, e)
	s.mu.Unlock()
}

func (s *sink) UsageRecorded(e domain.UsageRecorded) {
	s.mu.Lock()
	s.usage = append(s.usage, e)
	s.mu.Unlock()
}

func (s *sink) snapshot() ([]domain.AgentConnected, []domain.AgentDisconnected, []domain.UsageRecorded) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]domain.AgentConnected(nil), s.connected...), append([]domain.AgentDisconnected(nil), s.disconnected...),
		append([]domain.UsageRecorded(nil), s.usage...)
}

func (s *sink) disconnectsFor(sessionID string) []domain.AgentDisconnected {
	_, d, _ := s.snapshot()
	var out []domain.AgentDisconnected
	for _, e := range d {
		if e.SessionID == sessionID {
			out = append(out, e)
		}
	}
	return out
}

type env struct {
	t        *testing.T
	key      *ledger.SigningKey
	verifier *token.Verifier
	hostKey  ssh.Signer
	fp       string
	sink     *sink
	auth     *countingAuthenticator
	sealPriv []byte // the private half of auth.seal
	reg      *prometheus.Registry
	cfgMod   func(*node.Config)

	mu     sync.Mutex
	node   *node.Node
	srv    *node.Server
	addr   string // node address, kept across restarts
	served chan struct{}

	upstream *httptest.Server
	client   *http.Client
	alice    string // user token of the owner
}

type envOption func(*env)

func withNodeConfig(f func(*node.Config)) envOption { return func(e *env) { e.cfgMod = f } }

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	key, err := ledger.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := token.NewKeySet()
	keys.Put(key.ID(), key.Public())
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, key: key, verifier: &token.Verifier{Keys: keys, Issuer: issuer},
		hostKey: hk, fp: ssh.FingerprintSHA256(hk.PublicKey()), sink: &sink{},
	}
	e.auth = &countingAuthenticator{TokenAuthenticator: node.TokenAuthenticator{Verifier: e.verifier}}
	sealPriv, sealPub, err := sealbox.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e.sealPriv, e.auth.seal = sealPriv, node.SealKey{Subject: "user-alice", Generation: 3, Public: sealPub}
	for _, o := range opts {
		o(e)
	}
	e.upstream = httptest.NewServer(demo.Handler(demo.Config{TokenDelay: 100 * time.Millisecond}))
	t.Cleanup(e.upstream.Close)
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	t.Cleanup(e.client.CloseIdleConnections)
	e.alice = e.userToken("alice", time.Hour)
	e.startNode()
	t.Cleanup(e.stopNode)
	return e
}

func (e *env) startNode() {
	e.t.Helper()
	e.reg = prometheus.NewRegistry()
	owners := map[string]string{}
	for _, r := range routes {
		owners[r.TunnelID] = "alice"
	}
	cfg := node.Config{
		NodeID: "node-test", HostKey: e.hostKey, Authenticator: e.auth, Router: staticRouter(routes),
		Authorizer: ownerAuthorizer{v: e.verifier, owners: owners}, Sink: e.sink, BaseDomain: "tunnels.test",
		Registerer: e.reg,
	}
	if e.cfgMod != nil {
		e.cfgMod(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	addr := e.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the old listener's port is released asynchronously
	}
	if err != nil {
		e.t.Fatal(err)
	}
	srv := n.NewServer(map[string]http.Handler{"/v1/agent": n.AgentHandler(), "/v1/peer": n.PeerHandler()})
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	e.mu.Lock()
	e.node, e.srv, e.addr, e.served = n, srv, ln.Addr().String(), served
	e.mu.Unlock()
}

func (e *env) stopNode() {
	e.mu.Lock()
	n, srv, served := e.node, e.srv, e.served
	e.node = nil
	e.mu.Unlock()
	if n == nil {
		return
	}
	srv.Close()
	<-served
	n.Stop()
	n.Stop() // safe twice
}

func (e *env) nodeNow() *node.Node {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.node
}

func (e *env) agentURL() string   { return "ws://" + e.addr + "/v1/agent" }
func (e *env) ingressURL() string { return "http://" + e.addr }

func (e *env) agentToken(tunnel, jti string, exp time.Time) string {
	e.t.Helper()
	var org string
	for _, r := range routes {
		if r.TunnelID == tunnel {
			org = r.OrgID
		}
	}
	tok, err := token.MintAgent(e.key, issuer, jti, org, tunnel, exp, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) userToken(sub string, ttl time.Duration) string {
	e.t.Helper()
	tok, err := token.MintUser(e.key, issuer, sub, sub, ttl, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// states records an agent's OnState calls.
type states struct {
	mu  sync.Mutex
	log []string
}

func (s *states) add(st agent.State, detail string) {
	s.mu.Lock()
	s.log = append(s.log, st.String()+"|"+detail)
	s.mu.Unlock()
}

func (s *states) has(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.log {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func (s *states) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.log {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func (s *states) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.log, "\n")
}

type runningAgent struct {
	states *states
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (a *runningAgent) stop() error {
	a.cancel()
	select {
	case <-a.done:
		return a.err
	case <-time.After(10 * time.Second):
		return errors.New("agent did not stop")
	}
}

// startAgent runs an agent for tunnel with an upstream (default: the demo server).
func (e *env) startAgent(tunnel string, mod func(*agent.Config)) *runningAgent {
	e.t.Helper()
	st := &states{}
	cfg := agent.Config{
		NodeURL: e.agentURL(), Token: e.agentToken(tunnel, "jti-"+tunnel, time.Now().Add(time.Hour)),
		Upstream: e.upstream.URL, HostKeyFingerprint: e.fp, Version: "1.2.3-test",
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, OnState: st.add,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{states: st, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ra.done)
		ra.err = agent.Run(ctx, cfg)
	}()
	e.t.Cleanup(func() { ra.stop() })
	return ra
}

// waitHeld waits until a session holds tunnel and returns it.
func (e *env) waitHeld(tunnel string, not ...string) node.SessionInfo {
	e.t.Helper()
	var got node.SessionInfo
	poll.Until(e.t, 10*time.Second, "tunnel "+tunnel+" held", func() bool {
		n := e.nodeNow()
		if n == nil {
			return false
		}
		for _, s := range n.Sessions() {
			if s.TunnelID == tunnel && s.HoldsTunnel && !contains(not, s.SessionID) {
				got = s
				return true
			}
		}
		return false
	})
	return got
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (e *env) request(method, path string, body io.Reader, bearer string) *http.Request {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ingressURL()+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return req
}

// do sends a request and returns the status, headers and body.
func (e *env) do(req *http.Request) (int, http.Header, []byte) {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

type problemDoc struct {
	Type      string   `json:"type"`
	Title     string   `json:"title"`
	Status    int      `json:"status"`
	Detail    string   `json:"detail"`
	Supported []string `json:"supported_protocols"`
	// What OpenAI client libraries read (they ignore the rest).
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

func mustProblem(t *testing.T, status int, h http.Header, body []byte, wantStatus int) problemDoc {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status %d, want %d: %s", status, wantStatus, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json (%s)", ct, body)
	}
	var p problemDoc
	if err := json.Unmarshal(body, &p); err != nil || p.Status != wantStatus || p.Title == "" {
		t.Fatalf("problem document %s: %v", body, err)
	}
	// An OpenAI client shows error.message: the detail, or the title when there is none.
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	if p.Error.Message != msg || p.Error.Type == "" || p.Error.Code == "" || !strings.HasSuffix(p.Type, ":"+p.Error.Code) {
		t.Fatalf("problem document %s: its error member is not what an OpenAI client reads (message %q, type %q, code %q)",
			body, p.Error.Message, p.Error.Type, p.Error.Code)
	}
	return p
}

// dialSSHAgent logs in as an agent of tunnel by hand (token id tokenID), below the agent
// package, for tests whose agent misbehaves in ways the real one cannot.
func (e *env) dialSSHAgent(tokenID, tunnel string) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request) {
	e.t.Helper()
	d := websocket.Dialer{Subprotocols: node.SupportedProtocols, ReadBufferSize: wsconn.ReadBufferSize}
	ws, _, err := d.Dial(e.agentURL(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	wc := wsconn.New(ws, wsconn.Options{Client: true})
	sc, chans, reqs, err := ssh.NewClientConn(wc, e.addr, &ssh.ClientConfig{
		User: node.AgentUser, Auth: []ssh.AuthMethod{ssh.Password(e.agentToken(tunnel, tokenID, time.Now().Add(time.Hour)))},
		HostKeyCallback: ssh.FixedHostKey(e.hostKey.PublicKey()),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return sc, chans, reqs
}

func (s *sink) AgentReported(e domain.Event) {
	s.mu.Lock()
	s.reported = append(s.reported, e)
	s.mu.Unlock()
}

func (s *sink) agentReports() []domain.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]domain.Event(nil), s.reported...)
}

// answer is what a caller got, and how long it took.
type answer struct {
	status int
	h      http.Header
	body   []byte
	took   time.Duration
	err    error
}

// call sends req on its own goroutine; its answer comes on the channel.
func (e *env) call(req *http.Request) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		start := time.Now()
		resp, err := e.client.Do(req)
		if err != nil {
			out <- answer{err: err, took: time.Since(start)}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- answer{status: resp.StatusCode, h: resp.Header, body: b, took: time.Since(start), err: err}
	}()
	return out
}

func (a answer) mustOK(t *testing.T, what string) {
	t.Helper()
	if a.err != nil || a.status != http.StatusOK {
		t.Fatalf("%s: %d %v %s", what, a.status, a.err, a.body)
	}
}
