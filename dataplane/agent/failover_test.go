package agent_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// peer is one more node deciding by the cluster's view (the same log), with its own id, host
// key and address, which can be killed and started again on the same address.
type peer struct {
	t    *testing.T
	c    *cluster
	id   string
	hk   ssh.Signer
	fp   string
	addr string

	mu       sync.Mutex
	node     *node.Node
	srv      *node.Server
	served   chan struct{}
	reported []domain.Event
}

func newPeer(t *testing.T, c *cluster, id string) *peer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, c: c, id: id, hk: hk, fp: ssh.FingerprintSHA256(hk.PublicKey())}
	p.start("127.0.0.1:0")
	t.Cleanup(p.kill)
	return p
}

func (p *peer) start(addr string) {
	p.t.Helper()
	n, err := node.New(node.Config{NodeID: p.id, HostKey: p.hk, Authenticator: p.c.view, Router: p.c.view, Authorizer: p.c.view,
		Sink: p, KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		p.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	srv := n.NewServer(map[string]http.Handler{"/v1/agent": n.AgentHandler()})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	p.mu.Lock()
	p.node, p.srv, p.served, p.addr = n, srv, served, ln.Addr().String()
	p.mu.Unlock()
}

// kill takes the node away: its listener and every connection close at once.
func (p *peer) kill() {
	p.mu.Lock()
	n, srv, served := p.node, p.srv, p.served
	p.node = nil
	p.mu.Unlock()
	if n == nil {
		return
	}
	_ = srv.Close()
	<-served
	n.Stop()
}

func (p *peer) url() string { return "ws://" + p.addr + "/v1/agent" }

func (p *peer) held() bool {
	p.mu.Lock()
	n := p.node
	p.mu.Unlock()
	if n == nil {
		return false
	}
	for _, s := range n.Sessions() {
		if s.TunnelID == tunnelID && s.HoldsTunnel {
			return true
		}
	}
	return false
}

func (p *peer) body(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr+"/t/llm.acme"+path, nil)
	req.Header.Set("Authorization", "Bearer "+p.c.alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *peer) AgentConnected(domain.AgentConnected)       {}
func (p *peer) AgentDisconnected(domain.AgentDisconnected) {}
func (p *peer) AgentReplaced(domain.AgentReplaced)         {}
func (p *peer) UsageRecorded(domain.UsageRecorded)         {}
func (p *peer) AgentReported(e domain.Event) {
	p.mu.Lock()
	p.reported = append(p.reported, e)
	p.mu.Unlock()
}

// reports are what agents reported through this node.
func (p *peer) reports() []domain.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]domain.Event(nil), p.reported...)
}

func reportedAnywhere(peers []*peer, match func(domain.Event) bool) bool {
	for _, p := range peers {
		for _, e := range p.reports() {
			if match(e) {
				return true
			}
		}
	}
	return false
}

func threePeers(t *testing.T, upstream string) (*cluster, []*peer, agent.Config) {
	c := newCluster(t, upstream)
	peers := []*peer{newPeer(t, c, "node-a"), newPeer(t, c, "node-b"), newPeer(t, c, "node-c")}
	cfg := agent.Config{Token: c.agentToken("jti-1"), Upstream: upstream, Version: "test", Connections: 2,
		FailbackDelay: 300 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 500 * time.Millisecond}
	for _, p := range peers {
		cfg.NodeURLs = append(cfg.NodeURLs, p.url())
		cfg.HostKeyFingerprints = append(cfg.HostKeyFingerprints, p.fp)
	}
	return c, peers, cfg
}

// An agent given three nodes holds the two it prefers, each a full session serving calls. When
// one is lost it moves that connection to the third and says so through a node it holds
// (failover.started with the cause, failover.completed on the new node); when the preferred node
// is back and has stayed reachable for the failback delay, it moves back (failback.completed)
// and leaves the third.
func TestAnAgentHoldsTwoNodesFailsOverAndFailsBack(t *testing.T) {
	t.Parallel()
	up := helloUpstream(t, "hi")
	c, peers, cfg := threePeers(t, up)
	a, b, third := peers[0], peers[1], peers[2]
	r := c.start(cfg)
	poll.Until(t, 10*time.Second, "the two preferred nodes held", func() bool { return a.held() && b.held() })
	if third.held() {
		t.Fatalf("the third node holds the tunnel too; states:\n%s", r.states)
	}
	for _, p := range []*peer{a, b} {
		if code, body := p.body(t, "/x"); code != 200 || body != "hi" {
			t.Fatalf("through %s: %d %q", p.id, code, body)
		}
	}

	a.kill()
	poll.Until(t, 10*time.Second, "the lost node's connection moved to the third", func() bool { return third.held() && b.held() })
	if code, body := third.body(t, "/x"); code != 200 || body != "hi" {
		t.Fatalf("through node-c after the failover: %d %q", code, body)
	}
	poll.Until(t, 5*time.Second, "failover.started reported through a node the agent holds", func() bool {
		return reportedAnywhere([]*peer{b, third}, func(e domain.Event) bool {
			s, ok := e.(domain.FailoverStarted)
			return ok && s.FromNodeID == "node-a" && s.Cause == domain.CauseNodeLost && s.TunnelID == tunnelID && s.OrgID == orgID && !s.DetectedAt.IsZero()
		})
	})
	poll.Until(t, 5*time.Second, "failover.completed reported by the node it moved to", func() bool {
		return reportedAnywhere([]*peer{third}, func(e domain.Event) bool {
			d, ok := e.(domain.FailoverCompleted)
			return ok && d.NodeID == "node-c" && d.FromNodeID == "node-a" && d.Cause == domain.CauseNodeLost && d.TokenID == "jti-1"
		})
	})

	a.start(a.addr) // the preferred node comes back on its address
	poll.Until(t, 10*time.Second, "failback to the preferred node", func() bool { return a.held() && b.held() && !third.held() })
	poll.Until(t, 5*time.Second, "failback.completed reported by the preferred node", func() bool {
		return reportedAnywhere([]*peer{a}, func(e domain.Event) bool {
			f, ok := e.(domain.FailbackCompleted)
			return ok && f.NodeID == "node-a" && f.FromNodeID == "node-c" && f.HealthyForMS >= 300
		})
	})
	if code, body := a.body(t, "/x"); code != 200 || body != "hi" {
		t.Fatalf("through node-a after the failback: %d %q", code, body)
	}
	if s := r.states.String(); !strings.Contains(s, "holding node-a") || !strings.Contains(s, "failback from node-c") {
		t.Fatalf("the state lines do not say which nodes it holds and why it moved:\n%s", s)
	}
	r.cancel()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// A draining node keeps its calls in flight while the agent moves that connection to another
// node at once: a streamed call through the draining node completes whole, and the tunnel is
// held on the third node before the drain is over.
func TestADrainingNodeIsLeftWhileItsCallsFinish(t *testing.T) {
	t.Parallel()
	st, upURL := newStreamer(t, 40, 50*time.Millisecond) // about two seconds of stream
	c, peers, cfg := threePeers(t, upURL)
	b, third := peers[1], peers[2]
	r := c.start(cfg)
	poll.Until(t, 10*time.Second, "the two preferred nodes held", func() bool { return peers[0].held() && b.held() })

	req, _ := http.NewRequest(http.MethodGet, "http://"+b.addr+"/t/llm.acme/generate", nil)
	req.Header.Set("Authorization", "Bearer "+c.alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-st.started
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		b.mu.Lock()
		n := b.node
		b.mu.Unlock()
		n.Drain(context.Background())
	}()
	poll.Until(t, 5*time.Second, "the third node holds the tunnel", third.held)
	select {
	case <-drained:
		t.Fatalf("the drain was over before the agent moved: it should have moved at the drain's notice; states:\n%s", r.states)
	default:
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != st.want() {
		t.Fatalf("the streamed call through the draining node got %d of %d bytes (%v)", len(body), len(st.want()), err)
	}
	<-drained
	poll.Until(t, 5*time.Second, "failover.started with the drain as its cause", func() bool {
		return reportedAnywhere(peers, func(e domain.Event) bool {
			s, ok := e.(domain.FailoverStarted)
			return ok && s.FromNodeID == "node-b" && s.Cause == domain.CauseNodeDrain
		})
	})
}

// An agent given only the control plane's URL asks it, with its agent token, which nodes to hold
// and their host keys, and follows the list as it changes: a node no longer listed is not taken
// again, a new one is. A refused token ends Run for good.
func TestAnAgentHoldsTheNodesDiscoveryLists(t *testing.T) {
	t.Parallel()
	up := helloUpstream(t, "hi")
	c, peers, cfg := threePeers(t, up)
	a, b, third := peers[0], peers[1], peers[2]
	var mu sync.Mutex
	listed := []*peer{a, b}
	var asked int
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/tunnels/"+tunnelID+"/nodes" || r.Header.Get("Authorization") != "Bearer "+cfg.Token {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"detail":"this agent token is for another tunnel"}`)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		asked++
		var items []string
		for i, p := range listed {
			items = append(items, fmt.Sprintf(`{"id":%q,"agent_url":%q,"host_key_fingerprint":%q,"priority":%d,"weight":100}`, p.id, p.url(), p.fp, i+1))
		}
		fmt.Fprintf(w, `{"tunnel_id":%q,"items":[%s]}`, tunnelID, strings.Join(items, ","))
	}))
	t.Cleanup(control.Close)
	cfg.NodeURLs, cfg.HostKeyFingerprints = nil, nil
	cfg.Discover, cfg.DiscoverInterval = control.URL, 100*time.Millisecond
	r := c.start(cfg)
	poll.Until(t, 10*time.Second, "the two listed nodes held", func() bool { return a.held() && b.held() && !third.held() })

	mu.Lock()
	listed, asked = []*peer{third, a}, 0 // b leaves the list, c comes first
	mu.Unlock()
	poll.Until(t, 5*time.Second, "asked again", func() bool { mu.Lock(); defer mu.Unlock(); return asked > 0 })
	b.kill()
	poll.Until(t, 10*time.Second, "the lost node's connection moved to the newly listed one", func() bool { return third.held() && a.held() })
	b.start(b.addr)
	// Watched for longer than the failback delay: b is not listed, so it is not taken.
	for end := time.Now().Add(600 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if b.held() {
			t.Fatalf("a node no longer listed was taken again; states:\n%s", r.states)
		}
	}

	bad := cfg
	bad.Token = c.agentToken("jti-2") // the control plane here knows only the first token
	r2 := c.start(bad)
	if err := r2.wait(t, 5*time.Second); !errors.Is(err, agent.ErrPermanent) || !strings.Contains(err.Error(), "another tunnel") {
		t.Fatalf("a refused discovery: %v", err)
	}
}

// A node the agent holds is killed while calls flow through both nodes it holds: every call
// through the other node succeeds throughout, only calls through the killed node fail, and the
// third node takes over the lost connection and serves as soon as it holds the tunnel.
func TestKillingANodeUnderLoadLosesOnlyItsOwnCalls(t *testing.T) {
	t.Parallel()
	up := helloUpstream(t, "hi")
	c, peers, cfg := threePeers(t, up)
	a, b, third := peers[0], peers[1], peers[2]
	r := c.start(cfg)
	poll.Until(t, 10*time.Second, "the two preferred nodes held", func() bool { return a.held() && b.held() })

	client := &http.Client{Timeout: 10 * time.Second}
	call := func(p *peer) error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.addr+"/t/llm.acme/x", nil)
		req.Header.Set("Authorization", "Bearer "+c.alice)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != 200 || string(body) != "hi") {
			err = fmt.Errorf("%d %q", resp.StatusCode, body)
		}
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var throughB, failedB, throughA atomic.Int64
	var firstBErr atomic.Value
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				throughB.Add(1)
				if err := call(b); err != nil {
					failedB.Add(1)
					firstBErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if call(a) == nil {
				throughA.Add(1)
			}
		}
	})
	poll.Until(t, 5*time.Second, "calls flowing through both nodes", func() bool { return throughA.Load() > 20 && throughB.Load() > 20 })
	a.kill()
	poll.Until(t, 10*time.Second, "the lost node's connection moved to the third", third.held)
	if err := call(third); err != nil {
		t.Fatalf("through the third node after the failover: %v", err)
	}
	before := throughB.Load()
	poll.Until(t, 5*time.Second, "more calls through the surviving node", func() bool { return throughB.Load() > before+20 })
	close(stop)
	wg.Wait()
	if n := failedB.Load(); n != 0 {
		t.Fatalf("%d of %d calls through the surviving node failed (first: %v); states:\n%s", n, throughB.Load(), firstBErr.Load(), r.states)
	}
	r.cancel()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
