package node_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/tracing/otlptest"
)

// enrolled plays the log's key history: the event keys in force per node.
type enrolled struct {
	mu sync.Mutex
	m  map[string][]ed25519.PublicKey
}

func (e *enrolled) NodeKeys(id string) []ed25519.PublicKey {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[id]
}

func (e *enrolled) set(id string, k ed25519.PublicKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if k == nil {
		delete(e.m, id)
		return
	}
	e.m[id] = []ed25519.PublicKey{k}
}

// peerEnv is a node that forwards: its id and enrolled key.
func peerEnv(t *testing.T, log *enrolled, enroll bool, mod func(*node.Config)) (*env, string, ed25519.PublicKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7()).String()
	if enroll {
		log.set(id, pub)
	}
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.NodeID, c.Peers, c.PeerKey = id, log, signer
		if mod != nil {
			mod(c)
		}
	}))
	return e, id, pub
}

func (e *env) peerURL() string { return "ws://" + e.addr + "/v1/peer" }

// sumUpstream answers a POST with the SHA-256 of its body, anything else with "hello".
func sumUpstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			if _, err := io.Copy(h, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
			return
		}
		io.WriteString(w, "hello "+r.Host)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestACallEnteringAtANodeWithoutTheAgentIsForwarded(t *testing.T) {
	log := &enrolled{m: map[string][]ed25519.PublicKey{}}
	up := sumUpstream(t)
	a, _, _ := peerEnv(t, log, true, nil)
	b, bID, _ := peerEnv(t, log, true, nil)
	b.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	b.waitHeld("tun-llm")

	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	for i := range 20 {
		status, _, body := a.do(a.request("GET", "/t/llm/x", nil, a.alice))
		if status != 200 || !strings.HasPrefix(string(body), "hello ") {
			t.Fatalf("call %d through the node without the agent: %d %s", i, status, body)
		}
	}
	payload := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	sum := sha256.Sum256([]byte(payload))
	status, _, body := a.do(a.request("POST", "/t/llm/sum", strings.NewReader(payload), a.alice))
	if status != 200 || string(body) != hex.EncodeToString(sum[:]) {
		t.Fatalf("POST through the hop: %d %s", status, body)
	}
}

func TestARouteNamingANodeNotEnrolledAttractsNothing(t *testing.T) {
	log := &enrolled{m: map[string][]ed25519.PublicKey{}}
	up := sumUpstream(t)
	a, _, _ := peerEnv(t, log, true, func(c *node.Config) { c.FailoverWait = 300 * time.Millisecond })
	b, bID, bKey := peerEnv(t, log, true, nil)
	b.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	b.waitHeld("tun-llm")

	log.set(bID, nil) // removed: its key is no longer in force
	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	status, h, body := a.do(a.request("GET", "/t/llm/x", nil, a.alice))
	mustProblem(t, status, h, body, 503)

	// An entry naming an enrolled node at another node's address reaches nothing either: the
	// host key there is not the named node's.
	_, cID, _ := peerEnv(t, log, true, nil)
	a.nodeNow().DeleteRoute("tun-llm", bID)
	a.nodeNow().PutRoute("tun-llm", cID, b.peerURL())
	status, h, body = a.do(a.request("GET", "/t/llm/x", nil, a.alice))
	mustProblem(t, status, h, body, 503)

	// Enrolled again, the route serves.
	log.set(bID, bKey)
	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	poll.Until(t, 5*time.Second, "served through b", func() bool {
		status, _, _ := a.do(a.request("GET", "/t/llm/x", nil, a.alice))
		return status == 200
	})
}

// A traced call entering at a node without the agent is one trace across the hop: the ingress
// node's server span, the holding node's span as its child, the agent's span under that, and the
// agent's client span, which the upstream sees as its parent. With an agent that does not trace,
// the upstream sees the holding node's span.
func TestAForwardedCallIsOneTraceAcrossTheNodes(t *testing.T) {
	t.Parallel()
	recv := otlptest.Start(t)
	aTP, bTP, agentTP := otlpProvider(t, recv, "node-a"), otlpProvider(t, recv, "node-b"), otlpProvider(t, recv, "tunnelplane-agent")
	up := &traceUpstream{}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	log := &enrolled{m: map[string][]ed25519.PublicKey{}}
	a, _, _ := peerEnv(t, log, true, func(c *node.Config) { c.TracerProvider = aTP })
	b, bID, _ := peerEnv(t, log, true, func(c *node.Config) { c.TracerProvider = bTP })
	b.startAgent("tun-llm", func(c *agent.Config) { c.TracerProvider, c.Upstream = agentTP, upSrv.URL })
	b.startAgent("tun-2", func(c *agent.Config) { c.Upstream = upSrv.URL }) // does not trace
	b.waitHeld("tun-llm")
	b.waitHeld("tun-2")
	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	a.nodeNow().PutRoute("tun-2", bID, b.peerURL())
	flush := func() {
		for _, tp := range []interface{ ForceFlush(context.Context) error }{aTP, bTP, agentTP} {
			_ = tp.ForceFlush(context.Background())
		}
	}
	call := func(ref, traceID string) {
		t.Helper()
		req := a.request("POST", "/t/"+ref+"/x", strings.NewReader("hi"), a.alice)
		req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		if status, _, body := a.do(req); status != 200 || string(body) != "ok" {
			t.Fatalf("call %s: %d %q", ref, status, body)
		}
	}

	const traced = "4bf92f3577b34da6a3ce929d0e0e4736"
	call("llm", traced)
	atUpstream := up.last()
	var spans []otlptest.Span
	// Flushed on every look: a span that ends just after the response (the agent's, the
	// upstream client's) would otherwise wait for the batcher's own timer, as long as the wait.
	poll.Until(t, 10*time.Second, "four spans of the trace", func() bool { flush(); spans = recv.Trace(traced); return len(spans) >= 4 })
	byName := map[string]otlptest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	ingress, hop, ag, client := byName["tunnel ingress"], byName["tunnel peer"], byName["tunnel agent"], byName["upstream POST"]
	switch {
	case len(spans) != 4:
		t.Fatalf("%d spans, want 4: %+v", len(spans), spans)
	case ingress.Service != "node-a" || ingress.Parent != "00f067aa0ba902b7":
		t.Fatalf("ingress span %+v: want node a's, child of the caller's", ingress)
	case hop.Service != "node-b" || hop.Kind != tracepb.Span_SPAN_KIND_SERVER || hop.Parent != ingress.SpanID:
		t.Fatalf("hop span %+v: want node b's server span, child of the ingress span %s", hop, ingress.SpanID)
	case ag.Service != "tunnelplane-agent" || ag.Parent != hop.SpanID:
		t.Fatalf("agent span %+v: want the agent's, child of the hop span %s", ag, hop.SpanID)
	case client.Parent != ag.SpanID || atUpstream != "00-"+traced+"-"+client.SpanID+"-01":
		t.Fatalf("upstream span %+v, upstream saw %q: want the agent's client span as the upstream's parent", client, atUpstream)
	}

	const untraced = "5bf92f3577b34da6a3ce929d0e0e4737"
	call("second", untraced)
	atUpstream = up.last()
	poll.Until(t, 10*time.Second, "two spans of the second trace", func() bool { flush(); spans = recv.Trace(untraced); return len(spans) >= 2 })
	byName = map[string]otlptest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	hop = byName["tunnel peer"]
	if hop.Parent != byName["tunnel ingress"].SpanID || atUpstream != "00-"+untraced+"-"+hop.SpanID+"-01" {
		t.Fatalf("hop span %+v, upstream saw %q: want the hop span as the upstream's parent", hop, atUpstream)
	}
}

// A call for a tunnel with neither an agent on its node nor a route waits, and is served as
// soon as a route to a node holding the agent appears (not at the end of its wait).
func TestAWaitingCallIsServedWhenARouteAppears(t *testing.T) {
	t.Parallel()
	log := &enrolled{m: map[string][]ed25519.PublicKey{}}
	up := sumUpstream(t)
	a, _, _ := peerEnv(t, log, true, func(c *node.Config) { c.FailoverWait = 10 * time.Second })
	b, bID, _ := peerEnv(t, log, true, nil)
	b.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	b.waitHeld("tun-llm")
	start := time.Now()
	answer := a.call(a.request("GET", "/t/llm/x", nil, a.alice))
	poll.Until(t, 5*time.Second, "the call waiting", func() bool {
		return metricValue(t, a, "tunnelplane_node_failover_waiting_calls") == 1
	})
	a.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	got := <-answer
	got.mustOK(t, "the waiting call")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("served %v after it began: it waited out its wait instead of taking the route", d)
	}
}

// The ingress node holds a forwarded call: a withdrawal cuts it there, and the hop and the
// holding node's channel to its agent end with it.
func TestAWithdrawalCutsAForwardedCall(t *testing.T) {
	t.Parallel()
	log := &enrolled{m: map[string][]ed25519.PublicKey{}}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	aID := uuid.Must(uuid.NewV7()).String()
	log.set(aID, pub)
	l := newLiveEnvWith(t, func(c *node.Config) { c.NodeID, c.Peers, c.PeerKey = aID, log, signer }, false)
	b, bID, _ := peerEnv(t, log, true, nil)
	b.startAgent("tun-llm", nil) // the demo upstream
	b.waitHeld("tun-llm")
	l.nodeNow().PutRoute("tun-llm", bID, b.peerURL())
	vic := l.userToken("vic", time.Hour)
	l.grant("g-vic", "vic", time.Hour)
	sse, owner := l.sse(vic), l.sse(l.alice)
	served := metricValue(t, b, "tunnelplane_node_peer_calls_total")
	if served < 2 {
		t.Fatalf("the holding node served %v forwarded calls, want the two streams", served)
	}
	start := time.Now()
	l.kv.apply(domain.GrantRevoked{GrantID: "g-vic", OrgID: "org-1", TunnelID: "tun-llm", RevokedBy: "alice"})
	t.Logf("forwarded stream ended %v after the revocation", sse.EndsWithin(t, start, time.Second))
	owner.Flowing(t, 3, 5*time.Second)
	if l.cut("stream") != 1 {
		t.Fatalf("calls cut at the ingress node: %v", l.cut("stream"))
	}
}
