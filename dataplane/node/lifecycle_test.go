package node_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

func newTestServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestAgentRestartReconnects(t *testing.T) {
	t.Parallel()
	// FailoverWait off: the call while the agent is away is answered at once (failover_test.go
	// has calls that wait for it).
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.FailoverWait = -1 }))
	a := e.startAgent("tun-llm", nil)
	s1 := e.waitHeld("tun-llm")
	if err := a.stop(); err != nil {
		t.Fatalf("Run on cancel: %v", err)
	}
	if !a.states.has("stopped") {
		t.Fatalf("states:\n%s", a.states)
	}
	poll.Until(t, 5*time.Second, "AgentDisconnected", func() bool { return len(e.sink.disconnectsFor(s1.SessionID)) == 1 })
	if d := e.sink.disconnectsFor(s1.SessionID)[0]; d.Reason != "agent: agent stopping" || d.BytesIn == 0 || d.BytesOut == 0 {
		t.Fatalf("fact %+v", d)
	}
	status, h, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice))
	mustProblem(t, status, h, body, http.StatusServiceUnavailable)

	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm", s1.SessionID)
	if status, _, _ := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice)); status != 200 {
		t.Fatalf("after restart: %d", status)
	}
}

func TestNodeRestartAgentReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.startAgent("tun-llm", nil)
	s1 := e.waitHeld("tun-llm")
	e.stopNode()
	poll.Until(t, 5*time.Second, "agent noticed", func() bool { return a.states.has("disconnected: ") })
	if !a.states.has("node stopping") {
		t.Fatalf("the agent should say why:\n%s", a.states)
	}
	e.startNode() // same address, same host key
	e.waitHeld("tun-llm", s1.SessionID)
	if status, _, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice)); status != 200 {
		t.Fatalf("after node restart: %d %s", status, body)
	}
}

func TestVanishedAgentIsDetectedByKeepalivesOnBothSides(t *testing.T) {
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.KeepaliveInterval, c.KeepaliveTimeout = 100*time.Millisecond, 300*time.Millisecond
	}))
	// The agent vanishes as far as the node can tell: nothing moves, nothing closes.
	fz := newFreezer(t, e.addr)
	a := e.startAgent("tun-llm", func(c *agent.Config) {
		c.NodeURL = "ws://" + fz.addr() + "/v1/agent"
		c.KeepaliveInterval, c.KeepaliveTimeout = 100*time.Millisecond, 300*time.Millisecond
	})
	s1 := e.waitHeld("tun-llm")
	// The node holds the tunnel once it granted it; the agent runs keepalives only once it has
	// the grant (before that its dial timeout applies), so stall only then.
	poll.Until(t, 5*time.Second, "agent connected", func() bool { return a.states.has("connected to") })
	fz.freeze()
	poll.Until(t, 5*time.Second, "node released the tunnel", func() bool { return len(e.sink.disconnectsFor(s1.SessionID)) == 1 })
	if d := e.sink.disconnectsFor(s1.SessionID)[0]; !strings.Contains(d.Reason, "agent unresponsive: no keepalive answer within 300ms") {
		t.Fatalf("reason %q", d.Reason)
	}
	poll.Until(t, 5*time.Second, "agent gave up too", func() bool { return a.states.has("keepalive timeout") })
	// A reconnect (here straight to the node) takes the tunnel at once.
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm", s1.SessionID)
}

func TestDisconnectTunnelTokenAndDrain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.nodeNow()
	// Reconnecting agents would race the assertions below; these wait long between attempts.
	slow := func(c *agent.Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Minute }
	a1 := e.startAgent("tun-llm", slow)
	s1 := e.waitHeld("tun-llm")
	if got := n.DisconnectTunnel("tun-llm", "tunnel deleted"); got != 1 {
		t.Fatalf("DisconnectTunnel: %d", got)
	}
	// The fact is out by the time DisconnectTunnel returns.
	if d := e.sink.disconnectsFor(s1.SessionID); len(d) != 1 || d[0].Reason != "tunnel deleted" || d[0].DurationMS < 0 {
		t.Fatalf("facts %+v", d)
	}
	poll.Until(t, 5*time.Second, "agent told", func() bool { return a1.states.has("disconnected: tunnel deleted") })

	e.startAgent("tun-2", slow)
	s2 := e.waitHeld("tun-2")
	if got := n.DisconnectToken("jti-tun-2", "token revoked"); got != 1 {
		t.Fatalf("DisconnectToken: %d", got)
	}
	if d := e.sink.disconnectsFor(s2.SessionID); len(d) != 1 || d[0].Reason != "token revoked" || d[0].TokenID != "jti-tun-2" {
		t.Fatalf("facts %+v", d)
	}
	if got := n.DisconnectToken("no-such-token", ""); got != 0 {
		t.Fatalf("unknown token: %d", got)
	}

	// Drain lets a request in flight finish, then disconnects.
	a3 := e.startAgent("tun-llm", slow)
	s3 := e.waitHeld("tun-llm", s1.SessionID)
	if v := metricValue(t, e, "tunnelplane_node_agents_connected"); v != 1 {
		t.Fatalf("agents_connected %v", v)
	}
	started := make(chan struct{})
	streamDone := make(chan string, 1)
	go func() {
		req := e.request("POST", "/t/llm/api/generate", strings.NewReader(`{"prompt":"x","options":{"num_predict":4}}`), e.alice)
		resp, err := e.client.Do(req)
		if err != nil {
			close(started)
			streamDone <- err.Error()
			return
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		first, _ := br.ReadString('\n')
		close(started)
		rest, _ := io.ReadAll(br)
		streamDone <- first + string(rest)
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := n.Drain(ctx); got != 1 {
		t.Fatalf("Drain: %d", got)
	}
	if body := <-streamDone; strings.Count(body, "\n") != 5 {
		t.Fatalf("the request in flight was cut: %q", body)
	}
	if d := e.sink.disconnectsFor(s3.SessionID); len(d) != 1 || d[0].Reason != "node draining" {
		t.Fatalf("facts %+v", d)
	}
	poll.Until(t, 5*time.Second, "agent told", func() bool { return a3.states.has("node draining") })
	if v := metricValue(t, e, "tunnelplane_node_agents_connected"); v != 0 {
		t.Fatalf("agents_connected after drain %v", v)
	}
	// A draining node takes no agents.
	a4 := e.startAgent("tun-llm", nil)
	poll.Until(t, 5*time.Second, "refused while draining", func() bool { return a4.states.has("HTTP 503") })
	if len(n.Sessions()) != 0 {
		t.Fatalf("sessions while draining: %+v", n.Sessions())
	}
}

// metricValue sums a metric's samples in the node's registry.
func metricValue(t *testing.T, e *env, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				v += m.GetGauge().GetValue()
			case m.Counter != nil:
				v += m.GetCounter().GetValue()
			case m.Histogram != nil:
				v += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return v
}

func TestUsageWindowsAggregatePerTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.UsageWindow = 300 * time.Millisecond
		c.FailoverWait = -1 // calls to the offline tunnel count at once
	}))
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	bob := e.userToken("bob", time.Hour)
	burst := time.Now()
	for range 10 {
		if status, _, _ := e.do(e.request("POST", "/t/llm/echo", strings.NewReader("0123456789"), e.alice)); status != 200 {
			t.Fatal(status)
		}
	}
	for range 3 {
		e.do(e.request("GET", "/t/llm/echo", nil, bob))
	}
	e.do(e.request("GET", "/t/offline/", nil, e.alice))
	// The burst spans as many windows as its duration covers, plus the two it may straddle (a
	// loaded machine can make 14 calls last longer than a window).
	maxWindows := int(time.Since(burst)/(300*time.Millisecond)) + 2

	// sum adds a tunnel's facts; n counts its windows (a window holds one fact per caller).
	sum := func(tunnel string) (req, in, out, latencies, ttfbs int64, errs map[string]int64, n int) {
		errs = map[string]int64{}
		windows := map[time.Time]bool{}
		_, _, usage := e.sink.snapshot()
		for _, u := range usage {
			if u.TunnelID != tunnel {
				continue
			}
			windows[u.WindowStart] = true
			req += u.Requests
			in += u.BytesIn
			out += u.BytesOut
			latencies += u.Latency.Count()
			ttfbs += u.TTFB.Count()
			for k, v := range u.Errors {
				errs[k] += v
			}
			if u.NodeID != "node-test" || u.OrgID != "org-1" || u.CallerKind != domain.CallerUser || u.Validate() != nil {
				t.Fatalf("usage %+v: %v", u, u.Validate())
			}
		}
		return req, in, out, latencies, ttfbs, errs, len(windows)
	}
	poll.Until(t, 5*time.Second, "usage for both tunnels", func() bool {
		r1, _, _, _, _, _, _ := sum("tun-llm")
		r2, _, _, _, _, _, _ := sum("tun-offline")
		return r1 == 13 && r2 == 1
	})
	req, in, out, latencies, ttfbs, errs, windows := sum("tun-llm")
	// Every call has its duration; only the 10 that reached the upstream have a first byte.
	if in != 100 || out != 100 || latencies != req || ttfbs != 10 || errs["forbidden"] != 3 || len(errs) != 1 {
		t.Fatalf("tun-llm: requests %d in %d out %d latencies %d ttfbs %d errors %v", req, in, out, latencies, ttfbs, errs)
	}
	if windows > maxWindows {
		t.Fatalf("%d windows for a burst that spans at most %d", windows, maxWindows)
	}
	if _, _, _, _, _, errs, _ := sum("tun-offline"); errs["agent_absent"] != 1 {
		t.Fatalf("offline errors %v", errs)
	}
	// Idle windows produce nothing: while another tunnel's windows close twice, tun-llm is quiet.
	for i := range 2 {
		e.do(e.request("GET", "/t/offline/", nil, e.alice))
		poll.Until(t, 5*time.Second, "the offline tunnel's next window", func() bool {
			r, _, _, _, _, _, _ := sum("tun-offline")
			return r == int64(2+i)
		})
	}
	if r, _, _, _, _, _, n := sum("tun-llm"); r != 13 || n != windows {
		t.Fatalf("idle windows produced facts: %d requests in %d windows (was %d)", r, n, windows)
	}
	if v := metricValue(t, e, "tunnelplane_node_ingress_errors_total"); v != 6 {
		t.Fatalf("ingress_errors_total %v, want 3 forbidden + 3 agent_absent", v)
	}
}

func TestConfigValidationNamesEveryProblem(t *testing.T) {
	t.Parallel()
	err := node.Config{UsageWindow: -1, MaxRequestBody: -5, BaseDomain: "http://x"}.Validate()
	if !errors.Is(err, node.ErrInvalidConfig) {
		t.Fatalf("%v", err)
	}
	for _, want := range []string{"NodeID", "HostKey", "Authenticator", "Router", "Authorizer", "UsageWindow", "MaxRequestBody", "BaseDomain"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("validation does not mention %s: %v", want, err)
		}
	}
	aerr := agent.Config{NodeURL: "ftp://x", Upstream: "gopher://y", Protocols: []string{"v9"}}.Validate()
	for _, want := range []string{"NodeURL", "Token", "Upstream", "HostKeyFingerprint", "v9"} {
		if aerr == nil || !strings.Contains(aerr.Error(), want) {
			t.Errorf("agent validation does not mention %s: %v", want, aerr)
		}
	}
	if err := agent.Run(context.Background(), agent.Config{}); !errors.Is(err, agent.ErrInvalidConfig) {
		t.Fatalf("Run with a bad config: %v", err)
	}
}

// A node whose Ready says no (its view still replaying the log) judges nobody: agents and callers
// get 503 with the reason and Retry-After, and both get through once it says yes.
func TestNotReadyRefusesAgentsAndCallers(t *testing.T) {
	t.Parallel()
	var ready atomic.Bool
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.Ready = func() error {
			if ready.Load() {
				return nil
			}
			return errors.New("catching up (3 of 9 events applied)")
		}
	}))
	status, h, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice))
	p := mustProblem(t, status, h, body, http.StatusServiceUnavailable)
	if p.Type != domain.ProblemTypeBase+"node-starting" || !strings.Contains(p.Detail, "3 of 9 events") || h.Get("Retry-After") != "1" {
		t.Fatalf("problem %+v, Retry-After %q", p, h.Get("Retry-After"))
	}
	a := e.startAgent("tun-llm", nil)
	poll.Until(t, 5*time.Second, "agent refused while not ready", func() bool { return a.states.has("This node is starting") })
	if len(e.nodeNow().Sessions()) != 0 || metricValue(t, e, "tunnelplane_node_agent_handshake_failures_total") < 1 {
		t.Fatalf("sessions %+v while not ready", e.nodeNow().Sessions())
	}
	ready.Store(true)
	e.waitHeld("tun-llm")
	if status, _, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice)); status != http.StatusOK {
		t.Fatalf("after ready: %d %s", status, body)
	}
}
