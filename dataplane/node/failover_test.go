package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
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

// labeledMetric is the value of name's sample whose (one) label has value.
func labeledMetric(t *testing.T, e *env, name, value string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func waitingCalls(t *testing.T, e *env) float64 {
	t.Helper()
	return metricValue(t, e, "tunnelplane_node_failover_waiting_calls")
}

// A call made while no agent is connected waits for one, and is served when it connects.
func TestFailoverCallWaitsForTheAgent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.FailoverWait = 10 * time.Second }))
	start := time.Now()
	got := e.call(e.request("POST", "/t/llm/echo", strings.NewReader("made while offline"), e.alice))
	poll.Until(t, 5*time.Second, "the call waits", func() bool { return waitingCalls(t, e) == 1 })
	// The agent connects 300 ms after the call was made.
	time.Sleep(time.Until(start.Add(300 * time.Millisecond)))
	e.startAgent("tun-llm", nil)
	a := <-got
	a.mustOK(t, "the waiting call")
	if string(a.body) != "made while offline" {
		t.Fatalf("body %q", a.body)
	}
	if a.took < 300*time.Millisecond {
		t.Fatalf("answered after %v: it cannot have waited for an agent that connected after 300ms", a.took)
	}
	if w := waitingCalls(t, e); w != 0 {
		t.Fatalf("%v calls still counted waiting", w)
	}
	if v := labeledMetric(t, e, "tunnelplane_node_failover_waits_total", "served"); v != 1 {
		t.Fatalf("waits served %v", v)
	}
	// Once it is there, calls do not wait.
	if status, _, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice)); status != http.StatusOK {
		t.Fatalf("next call: %d %s", status, body)
	}
	if v := metricValue(t, e, "tunnelplane_node_failover_waits_total"); v != 1 {
		t.Fatalf("waits %v after a call to a connected agent", v)
	}
}

// When no agent comes within FailoverWait, the call is answered 503 agent-absent with
// Retry-After; with FailoverWait off it is answered at once.
func TestFailoverWaitEnds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		wait     time.Duration
		min, max time.Duration
		outcome  float64 // waits counted timed out
	}{
		{name: "after FailoverWait", wait: 200 * time.Millisecond, min: 200 * time.Millisecond, max: 2 * time.Second, outcome: 1},
		{name: "at once when off", wait: -1, min: 0, max: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withNodeConfig(func(c *node.Config) { c.FailoverWait = tc.wait }))
			a := <-e.call(e.request("GET", "/t/offline/api/tags", nil, e.alice))
			if a.err != nil {
				t.Fatal(a.err)
			}
			p := mustProblem(t, a.status, a.h, a.body, http.StatusServiceUnavailable)
			if p.Type != domain.ProblemTypeBase+"agent-absent" || !strings.Contains(p.Detail, `"offline"`) || a.h.Get("Retry-After") == "" {
				t.Fatalf("problem %+v, Retry-After %q", p, a.h.Get("Retry-After"))
			}
			if a.took < tc.min || a.took > tc.max {
				t.Fatalf("answered after %v, want %v to %v", a.took, tc.min, tc.max)
			}
			if v := labeledMetric(t, e, "tunnelplane_node_failover_waits_total", "timeout"); v != tc.outcome {
				t.Fatalf("waits timed out %v, want %v", v, tc.outcome)
			}
			if v := labeledMetric(t, e, "tunnelplane_node_ingress_errors_total", node.ClassAgentAbsent); v != 1 {
				t.Fatalf("agent_absent errors %v", v)
			}
		})
	}
}

// At most MaxQueuedPerTunnel calls wait per tunnel: the next is refused at once. A caller that
// leaves frees its place.
func TestFailoverQueueIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.FailoverWait, c.MaxQueuedPerTunnel = 20*time.Second, 2
	}))
	first := e.call(e.request("GET", "/t/llm/healthz", nil, e.alice))
	leaver, leave := context.WithCancel(context.Background())
	defer leave()
	left := e.call(e.request("GET", "/t/llm/healthz", nil, e.alice).WithContext(leaver))
	poll.Until(t, 5*time.Second, "two calls wait", func() bool { return waitingCalls(t, e) == 2 })

	a := <-e.call(e.request("GET", "/t/llm/healthz", nil, e.alice))
	if a.err != nil {
		t.Fatal(a.err)
	}
	p := mustProblem(t, a.status, a.h, a.body, http.StatusServiceUnavailable)
	if p.Type != domain.ProblemTypeBase+"failover-queue-full" || a.h.Get("Retry-After") == "" || a.took > 2*time.Second {
		t.Fatalf("third call after %v: %+v, Retry-After %q", a.took, p, a.h.Get("Retry-After"))
	}
	// Another tunnel has a queue of its own.
	other := e.call(e.request("GET", "/t/second/healthz", nil, e.alice))
	poll.Until(t, 5*time.Second, "a call for another tunnel waits", func() bool { return waitingCalls(t, e) == 3 })

	leave()
	if a := <-left; a.err == nil {
		t.Fatalf("the caller that left got an answer: %d", a.status)
	}
	poll.Until(t, 5*time.Second, "the place of the caller that left is free", func() bool { return waitingCalls(t, e) == 2 })
	if v := labeledMetric(t, e, "tunnelplane_node_failover_waits_total", "canceled"); v != 1 {
		t.Fatalf("waits canceled %v", v)
	}
	again := e.call(e.request("GET", "/t/llm/healthz", nil, e.alice))
	poll.Until(t, 5*time.Second, "a new call takes the free place", func() bool { return waitingCalls(t, e) == 3 })

	e.startAgent("tun-llm", nil)
	e.startAgent("tun-2", nil)
	for i, ch := range []<-chan answer{first, other, again} {
		(<-ch).mustOK(t, fmt.Sprintf("waiting call %d", i))
	}
	if w := waitingCalls(t, e); w != 0 {
		t.Fatalf("%v calls still counted waiting", w)
	}
	if v := labeledMetric(t, e, "tunnelplane_node_failover_waits_total", "queue_full"); v != 1 {
		t.Fatalf("waits refused %v", v)
	}
}

// A draining or stopping node answers its waiting calls at once and queues no new ones.
func TestFailoverLeavingNodeDoesNotQueue(t *testing.T) {
	t.Parallel()
	for name, leave := range map[string]func(*node.Node){
		"drain":    func(n *node.Node) { n.Drain(context.Background()) },
		"EndWaits": (*node.Node).EndWaits, // before the server shuts down (nodeapp)
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withNodeConfig(func(c *node.Config) { c.FailoverWait = 20 * time.Second }))
			waiting := e.call(e.request("GET", "/t/llm/healthz", nil, e.alice))
			poll.Until(t, 5*time.Second, "the call waits", func() bool { return waitingCalls(t, e) == 1 })
			leave(e.nodeNow())
			for i, ch := range []<-chan answer{waiting, e.call(e.request("GET", "/t/llm/healthz", nil, e.alice))} {
				a := <-ch
				if a.err != nil {
					t.Fatal(a.err)
				}
				if p := mustProblem(t, a.status, a.h, a.body, http.StatusServiceUnavailable); p.Type != domain.ProblemTypeBase+"agent-absent" || a.took > 5*time.Second {
					t.Fatalf("call %d after %v: %+v", i, a.took, p)
				}
			}
			if v := labeledMetric(t, e, "tunnelplane_node_failover_waits_total", "draining"); v != 1 {
				t.Fatalf("waits ended by the node leaving %v", v)
			}
			if w := waitingCalls(t, e); w != 0 {
				t.Fatalf("%v calls still counted waiting", w)
			}
		})
	}
}

// A call whose channel the agent refused because it is stopping, or whose agent's connection
// ended while the channel was being opened, has reached no agent: it waits for the next agent and
// is sent there, once.
func TestFailoverRetriesACallThatReachedNoAgent(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(ssh.Conn, ssh.NewChannel){
		"refused: the agent is stopping": func(_ ssh.Conn, nc ssh.NewChannel) { nc.Reject(ssh.ResourceShortage, "the agent is stopping") },
		"the connection ends":            func(sc ssh.Conn, _ ssh.NewChannel) { sc.Close() },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testFailoverRetry(t, open)
		})
	}
}

func testFailoverRetry(t *testing.T, open func(ssh.Conn, ssh.NewChannel)) {
	var seen atomic.Int64
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		io.Copy(w, r.Body)
	}))
	t.Cleanup(upstream.Close)
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.FailoverWait = 10 * time.Second }))
	// A hand-made agent with the real agent's token id: the real one replaces it when it connects.
	sc, chans, reqs := e.dialSSHAgent("jti-tun-llm", "tun-llm")
	var wg sync.WaitGroup
	refused := make(chan struct{}, 16)
	wg.Go(func() { ssh.DiscardRequests(reqs) })
	wg.Go(func() {
		for nc := range chans {
			open(sc, nc)
			refused <- struct{}{}
		}
	})
	t.Cleanup(func() { sc.Close(); wg.Wait() })
	if ok, _, err := sc.SendRequest(node.RequestForward, true, ssh.Marshal(node.ForwardRequest{})); err != nil || !ok {
		t.Fatalf("forward: %v %v", ok, err)
	}
	e.waitHeld("tun-llm")

	got := e.call(e.request("POST", "/t/llm/once", strings.NewReader("sent once"), e.alice))
	<-refused
	poll.Until(t, 5*time.Second, "the refused call waits for another agent", func() bool { return waitingCalls(t, e) == 1 })
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = upstream.URL })
	a := <-got
	a.mustOK(t, "the refused call")
	if string(a.body) != "sent once" || seen.Load() != 1 {
		t.Fatalf("body %q, the upstream saw %d calls", a.body, seen.Load())
	}
	if v := metricValue(t, e, "tunnelplane_node_failover_retries_total"); v != 1 {
		t.Fatalf("retries %v", v)
	}
}

// Never duplicated: POSTs (bodies sent with the head, streamed, chunked) run while the agent is
// restarted, cut by the node, and the node restarted. The upstream counts each request id: none
// may arrive twice, and each call answered 2xx arrived exactly once.
func TestFailoverNeverSendsACallTwice(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		mu.Lock()
		seen[id]++
		mu.Unlock()
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		// Calls stay in flight a moment, so that disruptions find some half way.
		time.Sleep(10 * time.Millisecond)
		io.WriteString(w, id)
	}))
	t.Cleanup(upstream.Close)
	e := newEnv(t) // the default FailoverWait (5s)
	withUpstream := func(c *agent.Config) { c.Upstream = upstream.URL }
	a := e.startAgent("tun-llm", withUpstream)
	e.waitHeld("tun-llm")

	type result struct {
		id     string
		status int
		body   string
	}
	var (
		results []result
		rmu     sync.Mutex
		ok      atomic.Int64
		stop    = make(chan struct{})
		stopped sync.Once
		wg      sync.WaitGroup
	)
	// The callers stop before the node and the agent do, however the test ends.
	halt := func() { stopped.Do(func() { close(stop) }); wg.Wait() }
	t.Cleanup(halt)
	target := e.ingressURL() + "/t/llm/submit" // the node keeps its address across restarts
	big := bytes.Repeat([]byte("b"), 64<<10)   // more than is sent with the head: streamed
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				var body io.Reader
				switch i % 3 {
				case 0:
					body = strings.NewReader(id)
				case 1:
					body = bytes.NewReader(big)
				default:
					body = io.MultiReader(strings.NewReader(id)) // no length: chunked
				}
				req, _ := http.NewRequest("POST", target, body)
				req.Header.Set("Authorization", "Bearer "+e.alice)
				req.Header.Set("X-Request-Id", id)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := e.client.Do(req.WithContext(ctx))
				r := result{id: id}
				if err == nil {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					if rerr == nil {
						r.status, r.body = resp.StatusCode, string(b)
					}
				}
				cancel()
				if r.status/100 == 2 {
					ok.Add(1)
				}
				rmu.Lock()
				results = append(results, r)
				rmu.Unlock()
			}
		})
	}
	// flowing waits until calls succeed again after a disruption.
	flowing := func(what string) {
		t.Helper()
		from := ok.Load()
		poll.Until(t, 20*time.Second, "calls succeed after "+what, func() bool { return ok.Load() >= from+16 })
	}
	flowing("the start")
	for round := range 9 {
		switch round % 3 {
		case 0:
			e.stopNode()
			e.startNode()
			flowing("a node restart")
		case 1:
			e.nodeNow().DisconnectTunnel("tun-llm", "cut by the test")
			flowing("a cut")
		case 2:
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
			a = e.startAgent("tun-llm", withUpstream)
			flowing("an agent restart")
		}
	}
	halt()
	waited := labeledMetric(t, e, "tunnelplane_node_failover_waits_total", "served")

	mu.Lock()
	defer mu.Unlock()
	failed := map[int]int{} // by status (0: no answer)
	for _, r := range results {
		if n := seen[r.id]; n > 1 {
			t.Errorf("request %s reached the upstream %d times (answered %d)", r.id, n, r.status)
		}
		switch {
		case r.status/100 == 2 && (seen[r.id] != 1 || r.body != r.id):
			t.Errorf("request %s answered %d %q, seen %d times", r.id, r.status, r.body, seen[r.id])
		case r.status/100 != 2:
			failed[r.status]++
		}
	}
	t.Logf("%d calls, failed by status %v; after the last agent restart %v calls waited for the agent", len(results), failed, waited)
	if waited == 0 {
		t.Error("no call waited for the agent across its restart")
	}
}

// A CORS preflight carried without a credential (passthrough) does not wait for an agent:
// callers without a credential take no place in the queue of a tunnel's callers.
func TestFailoverPreflightDoesNotWait(t *testing.T) {
	t.Parallel()
	kv := newKeyView(t)
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.Router, c.Authorizer, c.FailoverWait = kv.v, kv.v, 20*time.Second }))
	kv.setCORS("tun-2", domain.TunnelCORS{Mode: domain.CORSPassthrough})
	start := time.Now()
	status, h, body := e.send("OPTIONS", "/t/second.one/v1/models", "Origin: "+appOrigin, "Access-Control-Request-Method: POST")
	if p := mustProblem(t, status, h, body, http.StatusServiceUnavailable); p.Type != domain.ProblemTypeBase+"agent-absent" || time.Since(start) > 5*time.Second {
		t.Fatalf("preflight after %v: %+v", time.Since(start), p)
	}
	if v := metricValue(t, e, "tunnelplane_node_failover_waits_total"); v != 0 {
		t.Fatalf("%v waits", v)
	}
}
