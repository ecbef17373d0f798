package agent_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
	"github.com/tunnelplane/tunnelplane/internal/logbuf"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

const (
	orgID    = "0193f2a4-7c1e-7d3a-9b2e-000000000001"
	tunnelID = "0193f2a4-7c1e-7d3a-9b2e-000000000002"
)

// cluster is a real node in process whose agents and callers are decided by a real view of the
// log, fed the events the control plane would relay: organization "acme" with tunnel "llm",
// owned by alice.
type cluster struct {
	t       *testing.T
	key     *ledger.SigningKey
	view    *view.View
	node    *node.Node
	fp      string
	addr    string
	nodeLog *logbuf.Buffer
	alice   string // user token

	mu  sync.Mutex
	pos uint64
}

func newCluster(t *testing.T, upstream string, opts ...func(*node.Config)) *cluster {
	t.Helper()
	key, err := ledger.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, key: key, fp: ssh.FingerprintSHA256(hk.PublicKey()), nodeLog: &logbuf.Buffer{}}
	var n *node.Node
	// As internal/nodeapp wires them: a revocation or deletion ends the sessions at once.
	c.view = view.New(token.DefaultIssuer, view.Hooks{
		TokenRevoked:  func(id, reason string) { n.DisconnectToken(id, reason) },
		TunnelDeleted: func(id, reason string) { n.DisconnectTunnel(id, reason) },
	})
	c.view.Keys().Put(key.ID(), key.Public())
	c.apply(domain.OrganizationCreated{OrgID: orgID, Name: "acme", CreatedBy: "alice"})
	c.apply(domain.RoleAssigned{OrgID: orgID, UserID: "alice", Role: domain.RoleAdmin})
	c.apply(domain.TunnelCreated{TunnelID: tunnelID, OrgID: orgID, Owner: "alice", Name: "llm", Upstream: upstream, Protocol: domain.ProtocolHTTP})
	cfg := node.Config{NodeID: "node-test", HostKey: hk, Authenticator: c.view, Router: c.view, Authorizer: c.view,
		Logger: slog.New(slog.NewTextHandler(c.nodeLog, nil))}
	for _, o := range opts {
		o(&cfg)
	}
	n, err = node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.node = n
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := n.NewServer(map[string]http.Handler{"/v1/agent": n.AgentHandler()})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	c.addr = ln.Addr().String()
	t.Cleanup(func() {
		_ = srv.Close()
		<-served
		n.Stop()
	})
	c.alice, err = token.MintUser(key, token.DefaultIssuer, "alice", "Alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// apply feeds one event to the view, as the relay would.
func (c *cluster) apply(e domain.Event) {
	c.t.Helper()
	b, _ := json.Marshal(e)
	c.mu.Lock()
	pos := c.pos
	c.pos++
	c.mu.Unlock()
	if err := c.view.Apply(view.Event{Position: pos, EventID: fmt.Sprint("ev-", pos), StreamID: "s", Type: e.EventType(), Payload: b}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) agentToken(jti string) string {
	c.t.Helper()
	tok, err := token.MintAgent(c.key, token.DefaultIssuer, jti, orgID, tunnelID, time.Now().Add(time.Hour), time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

func (c *cluster) agentURL() string { return "ws://" + c.addr + "/v1/agent" }

// held reports whether an agent session holds the tunnel.
func (c *cluster) held() bool {
	for _, s := range c.node.Sessions() {
		if s.TunnelID == tunnelID && s.HoldsTunnel {
			return true
		}
	}
	return false
}

// running is an agent.Run in progress.
type running struct {
	cancel   context.CancelFunc
	done     chan struct{}
	err      error
	returned time.Time
	states   *stateLog
}

type stateLog struct {
	mu  sync.Mutex
	log []string
}

func (s *stateLog) add(st agent.State, detail string) {
	s.mu.Lock()
	s.log = append(s.log, st.String()+"|"+detail)
	s.mu.Unlock()
}

func (s *stateLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.log, "\n")
}

func (c *cluster) config(jti string) agent.Config {
	return agent.Config{NodeURL: c.agentURL(), Token: c.agentToken(jti), HostKeyFingerprint: c.fp, Version: "test",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
}

func (c *cluster) start(cfg agent.Config) *running {
	c.t.Helper()
	r := &running{done: make(chan struct{}), states: &stateLog{}}
	cfg.OnState = r.states.add
	var ctx context.Context
	ctx, r.cancel = context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		r.err = agent.Run(ctx, cfg)
		r.returned = time.Now()
	}()
	c.t.Cleanup(func() {
		r.cancel()
		<-r.done
	})
	return r
}

// wait waits for Run to return and gives its error.
func (r *running) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(within):
		t.Fatalf("Run did not return within %v; states:\n%s", within, r.states)
		return nil
	}
}

// call sends GET path through the node's ingress as alice.
func (c *cluster) call(path string) (*http.Response, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+c.addr+"/t/llm.acme"+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.alice)
	return http.DefaultClient.Do(req)
}

func helloUpstream(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A refusal that a retry cannot change ends Run at once with ErrPermanent and one line saying
// what happened: a revoked token and a deleted tunnel, both while connected (the node cuts the
// session, the agent's next login is refused) and before the first connection, and a host key
// that is not the pinned one.
func TestPermanentRefusalsEndRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		connected bool // reach the tunnel first, then make the refusal happen
		refuse    func(c *cluster, cfg *agent.Config)
		sentinel  error
		line      string
	}{
		{"revoked token while connected", true, func(c *cluster, _ *agent.Config) {
			c.apply(domain.AgentTokenRevoked{TokenID: "jti-1", OrgID: orgID, TunnelID: tunnelID})
		}, agent.ErrTokenRevoked, "agent token revoked (token jti-1)"},
		{"revoked token", false, func(c *cluster, _ *agent.Config) {
			c.apply(domain.AgentTokenRevoked{TokenID: "jti-1", OrgID: orgID, TunnelID: tunnelID})
		}, agent.ErrTokenRevoked, "agent token revoked (token jti-1)"},
		{"deleted tunnel while connected", true, func(c *cluster, _ *agent.Config) {
			c.apply(domain.TunnelDeleted{TunnelID: tunnelID, OrgID: orgID, Name: "llm"})
		}, agent.ErrTunnelDeleted, "tunnel deleted (tunnel " + tunnelID + ")"},
		{"deleted tunnel", false, func(c *cluster, _ *agent.Config) {
			c.apply(domain.TunnelDeleted{TunnelID: tunnelID, OrgID: orgID, Name: "llm"})
		}, agent.ErrTunnelDeleted, "tunnel deleted (tunnel " + tunnelID + ")"},
		{"host key mismatch", false, func(_ *cluster, cfg *agent.Config) {
			cfg.HostKeyFingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		}, agent.ErrHostKeyMismatch, "node host key SHA256:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, helloUpstream(t, "hi"))
			cfg := c.config("jti-1")
			cfg.Upstream = helloUpstream(t, "hi")
			if !tc.connected {
				tc.refuse(c, &cfg)
			}
			a := c.start(cfg)
			if tc.connected {
				poll.Until(t, 10*time.Second, "tunnel held", c.held)
				tc.refuse(c, &cfg)
			}
			err := a.wait(t, 5*time.Second)
			if !errors.Is(err, agent.ErrPermanent) || !errors.Is(err, tc.sentinel) {
				t.Fatalf("Run returned %v; want ErrPermanent and %v", err, tc.sentinel)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, tc.line) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line starting %q", msg, tc.line)
			}
			if tc.sentinel == agent.ErrHostKeyMismatch && !strings.Contains(err.Error(), "does not match the pinned "+cfg.HostKeyFingerprint) {
				t.Fatalf("error %q names not both keys", err)
			}
			if strings.Contains(a.states.String(), err.Error()) {
				t.Fatalf("the reason went to OnState too (it would be printed twice):\n%s", a.states)
			}
		})
	}
}

// A token the node does not know yet, or a node that is starting, is retried: Run keeps going.
func TestTemporaryRefusalsAreRetried(t *testing.T) {
	t.Parallel()
	c := newCluster(t, helloUpstream(t, "hi"))
	cfg := c.config("jti-1")
	cfg.Upstream = helloUpstream(t, "hi")
	// A token for a tunnel the node has not heard of (yet).
	other, err := token.MintAgent(c.key, token.DefaultIssuer, "jti-2", orgID, "0193f2a4-7c1e-7d3a-9b2e-00000000000f", time.Now().Add(time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Token = other
	a := c.start(cfg)
	poll.Until(t, 10*time.Second, "three refused attempts", func() bool {
		return strings.Count(a.states.String(), "retrying in") >= 3
	})
	select {
	case <-a.done:
		t.Fatalf("Run returned %v on a refusal that may pass", a.err)
	default:
	}
	if !strings.Contains(a.states.String(), "does not exist (as far as this node knows)") {
		t.Fatalf("states:\n%s", a.states)
	}
}

// streamer is an upstream that streams chunks like a model generating tokens.
type streamer struct {
	chunks   int
	interval time.Duration
	started  chan struct{} // closed once the first chunk is out
	once     sync.Once

	mu       sync.Mutex
	finished time.Time // when the last chunk was written
}

// streamingCall starts an agent (cfg adjusted by edit) forwarding to a streamer of chunks at
// interval, and a call through it that has received its first chunk.
func streamingCall(t *testing.T, chunks int, interval time.Duration, edit func(*agent.Config), nodeOpts ...func(*node.Config)) (*streamer, *cluster, *running, *http.Response) {
	t.Helper()
	up, upURL := newStreamer(t, chunks, interval)
	c := newCluster(t, upURL, nodeOpts...)
	cfg := c.config("jti-1")
	cfg.Upstream = upURL
	edit(&cfg)
	a := c.start(cfg)
	poll.Until(t, 10*time.Second, "tunnel held", c.held)
	resp, err := c.call("/generate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	<-up.started
	return up, c, a, resp
}

func newStreamer(t *testing.T, chunks int, interval time.Duration) (*streamer, string) {
	t.Helper()
	s := &streamer{chunks: chunks, interval: interval, started: make(chan struct{})}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *streamer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for i := range s.chunks {
		fmt.Fprintf(w, "chunk %d\n", i)
		w.(http.Flusher).Flush()
		s.once.Do(func() { close(s.started) })
		if i == s.chunks-1 {
			break
		}
		select {
		case <-tick.C:
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	s.finished = time.Now()
	s.mu.Unlock()
}

func (s *streamer) want() string {
	var b strings.Builder
	for i := range s.chunks {
		fmt.Fprintf(&b, "chunk %d\n", i)
	}
	return b.String()
}

// Stopping the agent (SIGTERM in connect) lets a streamed call in flight finish: the caller gets
// the whole stream, new calls are answered 503 by the node meanwhile, and Run returns once the
// stream is over.
func TestStopLetsCallsInFlightFinish(t *testing.T) {
	t.Parallel()
	// About a second of stream.
	up, c, a, resp := streamingCall(t, 20, 50*time.Millisecond, func(cfg *agent.Config) { cfg.ShutdownTimeout = 20 * time.Second })
	a.cancel() // mid-stream
	// The node stops routing calls to the stopping agent.
	poll.Until(t, 5*time.Second, "the session no longer holds the tunnel", func() bool { return !c.held() })
	late, err := c.call("/generate")
	if err != nil {
		t.Fatal(err)
	}
	late.Body.Close()
	if late.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a call while the agent stops: %d, want 503", late.StatusCode)
	}

	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != up.want() {
		t.Fatalf("the caller got %d of %d bytes (%v):\n%s", len(body), len(up.want()), err, body)
	}
	if err := a.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	up.mu.Lock()
	finished := up.finished
	up.mu.Unlock()
	if finished.IsZero() || a.returned.Before(finished) {
		t.Fatalf("Run returned at %v, the stream ended at %v", a.returned, finished)
	}
	poll.Until(t, 5*time.Second, "the node logged why the session ended", func() bool {
		return strings.Contains(c.nodeLog.String(), `msg="agent disconnected" `) && strings.Contains(c.nodeLog.String(), `reason="agent: agent stopping"`)
	})
}

// A call that outlasts ShutdownTimeout is cut: Run returns after about the timeout.
func TestStopCutsCallsAfterTheShutdownTimeout(t *testing.T) {
	t.Parallel()
	// 20 s of stream.
	const shutdown = 500 * time.Millisecond
	up, _, a, resp := streamingCall(t, 1000, 20*time.Millisecond, func(cfg *agent.Config) { cfg.ShutdownTimeout = shutdown })
	start := time.Now()
	a.cancel()
	if err := a.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(start); took < shutdown || took > shutdown+3*time.Second {
		t.Fatalf("Run returned %v after the stop; the shutdown timeout is %v", took, shutdown)
	}
	body, _ := io.ReadAll(resp.Body)
	if len(body) == 0 || len(body) >= len(up.want()) {
		t.Fatalf("the caller got %d of %d bytes: the stream should have been cut", len(body), len(up.want()))
	}
}

// body calls path and returns the answer's status and body.
func (c *cluster) body(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := c.call(path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Without an upstream of its own the agent forwards to the tunnel's, as the node tells it, and
// follows a changed tunnel from its next connection on.
func TestAgentForwardsToTheTunnelsUpstream(t *testing.T) {
	t.Parallel()
	first := helloUpstream(t, "the tunnel's upstream")
	c := newCluster(t, first)
	a := c.start(c.config("jti-1")) // no Upstream
	poll.Until(t, 10*time.Second, "tunnel held", c.held)
	if status, body := c.body(t, "/"); status != http.StatusOK || body != "the tunnel's upstream" {
		t.Fatalf("%d %q", status, body)
	}
	if !strings.Contains(a.states.String(), "forwarding to "+first+" (the tunnel's upstream)") {
		t.Fatalf("states:\n%s", a.states)
	}
	if strings.Contains(c.nodeLog.String(), "overrides") {
		t.Fatalf("the node reported an override that is none:\n%s", c.nodeLog)
	}

	moved := helloUpstream(t, "the tunnel's new upstream")
	c.apply(domain.TunnelUpdated{TunnelID: tunnelID, OrgID: orgID, Upstream: &moved})
	c.node.DisconnectTunnel(tunnelID, "test: reconnect")
	poll.Until(t, 10*time.Second, "the agent forwards to the new upstream", func() bool {
		status, body := c.body(t, "/")
		return status == http.StatusOK && body == "the tunnel's new upstream"
	})
}

// An agent given its own upstream (connect --to) uses it, and the node says so.
func TestAgentUpstreamOverrideIsReportedByTheNode(t *testing.T) {
	t.Parallel()
	tunnelUp := helloUpstream(t, "the tunnel's upstream")
	c := newCluster(t, tunnelUp)
	cfg := c.config("jti-1")
	own := helloUpstream(t, "the agent's own upstream")
	cfg.Upstream = strings.Replace(own, "http://", "http://user:s3cret@", 1) // the password stays out of the node's log
	a := c.start(cfg)
	poll.Until(t, 10*time.Second, "tunnel held", c.held)
	if status, body := c.body(t, "/"); status != http.StatusOK || body != "the agent's own upstream" {
		t.Fatalf("%d %q", status, body)
	}
	const want = `msg="agent overrides the tunnel's upstream"`
	poll.Until(t, 5*time.Second, "the node's warning", func() bool { return strings.Contains(c.nodeLog.String(), want) })
	log := c.nodeLog.String()
	if strings.Count(log, want) != 1 || !strings.Contains(log, "tunnel_upstream="+tunnelUp+" agent_upstream="+strings.Replace(own, "http://", "http://user:xxxxx@", 1)) ||
		strings.Contains(log, "s3cret") {
		t.Fatalf("node log:\n%s", log)
	}
	if st := a.states.String(); !strings.Contains(st, "forwarding to "+strings.Replace(own, "http://", "http://user:xxxxx@", 1)+" (its own upstream)") ||
		strings.Contains(st, "s3cret") {
		t.Fatalf("states:\n%s", a.states)
	}
}

// upstreamUntold is an Authenticator that does not know tunnels' upstreams: the node then answers
// agent-info as nodes before it did, with no payload.
type upstreamUntold struct{ *view.View }

func (u upstreamUntold) AuthenticateAgent(ctx context.Context, raw string) (node.AgentIdentity, error) {
	id, err := u.View.AuthenticateAgent(ctx, raw)
	id.Upstream = ""
	return id, err
}

// A node that does not tell the tunnel's upstream, to an agent given none, ends Run with a clear
// error instead of a tunnel that cannot forward.
func TestAgentWithoutUpstreamNeedsANodeThatTellsIt(t *testing.T) {
	t.Parallel()
	var c *cluster
	c = newCluster(t, helloUpstream(t, "hi"), func(cfg *node.Config) { cfg.Authenticator = upstreamUntold{cfg.Authenticator.(*view.View)} })
	for _, proto := range []string{node.ProtocolV2, node.ProtocolV1} {
		cfg := c.config("jti-" + proto)
		cfg.Protocols = []string{proto}
		a := c.start(cfg)
		err := a.wait(t, 5*time.Second)
		if !errors.Is(err, agent.ErrNoUpstream) || !strings.Contains(err.Error(), "this node does not tell the tunnel's upstream; pass --to") {
			t.Fatalf("%s: Run returned %v", proto, err)
		}
	}
	if c.held() {
		t.Fatal("an agent without an upstream holds the tunnel")
	}
}

// With a node that does not drain on request (here a v1 session), the agent still lets the call
// in flight finish and refuses new ones itself, and returns by the shutdown timeout (the node's
// idle pooled channel holds it until then).
func TestStopWithANodeThatDoesNotDrain(t *testing.T) {
	t.Parallel()
	const shutdown = 2 * time.Second
	// A node that does not wait for another agent (FailoverWait off): the refusal is the answer.
	up, c, a, resp := streamingCall(t, 10, 50*time.Millisecond, func(cfg *agent.Config) {
		cfg.Protocols = []string{node.ProtocolV1}
		cfg.ShutdownTimeout = shutdown
	}, func(nc *node.Config) { nc.FailoverWait = -1 })
	stopped := time.Now()
	a.cancel()
	// The node still routes to the agent, which refuses the new channel: the caller hears why.
	poll.Until(t, 5*time.Second, "a new call refused by the stopping agent", func() bool {
		status, body := c.body(t, "/late")
		return status == http.StatusBadGateway && strings.Contains(body, "the agent is stopping")
	})
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != up.want() {
		t.Fatalf("the caller got %d of %d bytes (%v)", len(body), len(up.want()), err)
	}
	if err := a.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := a.returned.Sub(stopped); took > shutdown+3*time.Second {
		t.Fatalf("Run returned %v after the stop; the shutdown timeout is %v", took, shutdown)
	}
}
