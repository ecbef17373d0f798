package node_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// Regression tests of the ingress's security findings (docs/security.md names each).

// rawUpstream is an HTTP/1.1 keep-alive server that records the raw head of every request it
// reads and answers each with answer (or 200 "ok").
type rawUpstream struct {
	addr   string
	answer string
	mu     sync.Mutex
	heads  []string
}

func newRawUpstream(t *testing.T, answer string) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{addr: ln.Addr().String(), answer: answer}
	if u.answer == "" {
		u.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					// Bodies are read by their declared length (the node always declares one).
					req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head.String())))
					if err == nil && req.ContentLength > 0 {
						io.CopyN(io.Discard, br, req.ContentLength)
					}
					u.mu.Lock()
					u.heads = append(u.heads, head.String())
					u.mu.Unlock()
					if _, err := io.WriteString(c, u.answer); err != nil {
						return
					}
				}
			})
		}
	})
	return u
}

func (u *rawUpstream) lastHead() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.heads) == 0 {
		return ""
	}
	return u.heads[len(u.heads)-1]
}

// rawExchange sends raw bytes on a new connection to the node and returns the first response.
func rawExchange(t *testing.T, e *env, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body
}

// HIGH 1, cause A: a header name or value an upstream might parse differently is refused with 400
// and never forwarded; the node's Host and framing precede everything the caller wrote.
func TestMalformedHeadersAreRefusedAndFramingComesFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	up := newRawUpstream(t, "")
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = "http://" + up.addr })
	e.waitHeld("tun-llm")
	auth := "Authorization: Bearer " + e.alice + "\r\n"
	for _, raw := range []string{
		"POST /t/llm/first HTTP/1.1\r\nHost: x\r\n" + auth + "X Foo: bar\r\nContent-Length: 44\r\n\r\nPOST /attacker-chosen HTTP/1.1\r\nHost: x\r\nX-Pad: ",
		"GET /t/llm/a HTTP/1.1\r\nHost: x\r\n" + auth + "X(Foo): bar\r\n\r\n",
		"GET /t/llm/a HTTP/1.1\r\nHost: x y\r\n" + auth + "\r\n",
		"GET /t/llm/a#frag HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n",
		"GET /t/llm/../../metrics HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n",
		"GET /t/llm/%2e%2E/x HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n",
		"GET ftp://x/t/llm/a HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n",
		"GET http://us@x/t/llm/a HTTP/1.1\r\nHost: x\r\n" + auth + "\r\n",
	} {
		resp, body := rawExchange(t, e, raw)
		if resp.StatusCode != http.StatusBadRequest || !resp.Close {
			t.Errorf("%q: %d (close %v) %s, want 400 and the connection closed", raw, resp.StatusCode, resp.Close, body)
		}
		if bytes.Contains(body, []byte(e.alice)) || bytes.Contains(body, []byte("Foo")) {
			t.Errorf("%q: the answer echoes the request: %s", raw, body)
		}
	}
	if h := up.lastHead(); h != "" {
		t.Fatalf("a refused request reached the upstream:\n%s", h)
	}

	// A good request with a body: the framing comes right after Host, before the caller's headers;
	// raw bytes above 0x7f in the path arrive percent-encoded.
	resp, body := rawExchange(t, e, "POST /t/llm/caf\xc3\xa9?q=1 HTTP/1.1\r\nHost: x\r\n"+auth+"X-Zeta: 1\r\nContent-Length: 3\r\n\r\nabc")
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("good request: %d %s", resp.StatusCode, body)
	}
	lines := strings.Split(up.lastHead(), "\r\n")
	if lines[0] != "POST /caf%C3%A9?q=1 HTTP/1.1" || !strings.HasPrefix(lines[1], "Host: ") || lines[2] != "Content-Length: 3" {
		t.Fatalf("the upstream's request head begins %q", lines[:3])
	}
}

// HIGH 1: a response header a caller's parser might misread is never passed on: 502, and the
// channel it came on is not reused.
func TestMalformedResponseHeadersAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	up := newRawUpstream(t, "HTTP/1.1 200 OK\r\nX Bad: y\r\nContent-Length: 2\r\n\r\nok")
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = "http://" + up.addr })
	e.waitHeld("tun-llm")
	status, h, body := e.do(e.request("GET", "/t/llm/x", nil, e.alice))
	if p := mustProblem(t, status, h, body, http.StatusBadGateway); !strings.Contains(p.Type, "upstream-invalid-response") {
		t.Fatalf("problem %+v", p)
	}
}

// LOW 5: without a valid credential every answer is the same, whether the tunnel exists or not,
// the connection closes after it, and none of it is counted in a tenant's usage.
func TestUnauthenticatedAnswersAreIdenticalAndUncounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.UsageWindow = 50 * time.Millisecond }))
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	answers := map[string]string{}
	for _, bearer := range []string{"", "not-a-jwt", e.userToken("alice", -time.Hour)} {
		var first string
		for _, target := range []string{"/t/llm/x", "/t/no-such-tunnel/x", "/t/second/x"} {
			auth := ""
			if bearer != "" {
				auth = "Authorization: Bearer " + bearer + "\r\n"
			}
			resp, body := rawExchange(t, e, "GET "+target+" HTTP/1.1\r\nHost: x\r\n"+auth+"\r\n")
			got := fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
			if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
				t.Errorf("bearer %.10q %s: %s (close %v), want 401 and the connection closed", bearer, target, got, resp.Close)
			}
			if first == "" {
				first = got
			} else if got != first {
				t.Errorf("bearer %.10q: %s answered\n%s\nbut another tunnel\n%s", bearer, target, got, first)
			}
		}
		answers[bearer] = first
	}
	// Host routing answers the same too.
	req := e.request("GET", "/x", nil, "")
	req.Host = "no-such.tunnels.test"
	status, h, body := e.do(req)
	if got := fmt.Sprintf("%d %s %s", status, h.Get("WWW-Authenticate"), body); got != answers[""] {
		t.Errorf("host routing: %s, want %s", got, answers[""])
	}
	// A real request, so that a usage window is emitted for the tunnel.
	if status, _, _ := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice)); status != 200 {
		t.Fatal(status)
	}
	poll.Until(t, 5*time.Second, "a usage window", func() bool { _, _, u := e.sink.snapshot(); return len(u) > 0 })
	time.Sleep(100 * time.Millisecond) // the window the anonymous requests fell in has closed too
	_, _, usage := e.sink.snapshot()
	var requests int64
	for _, u := range usage {
		requests += u.Requests
		if u.Errors[node.ClassUnauthenticated] > 0 {
			t.Fatalf("unauthenticated requests in tunnel usage: %+v", u)
		}
	}
	if requests != 1 {
		t.Fatalf("tenant usage counts %d requests, want the 1 authenticated one", requests)
	}
	if v := metricValue(t, e, "tunnelplane_node_ingress_refused_total"); v < 10 {
		t.Fatalf("node-level refusals counted %v, want at least 10", v)
	}
}

// LOW 7: an answer to a request fasthttp could not parse never echoes its bytes (a bearer token
// among them).
func TestParseErrorsNeverEchoTheRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, raw := range []string{
		"GET /t/llm/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-token-123\r\nX-A: b\x01c\r\n\r\n",
		"GET /t/llm/x HTTP/1.1\r\nHost: x\r\nHost: y\r\nAuthorization: Bearer secret-token-123\r\n\r\n",
		"POST /t/llm/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-token-123\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	} {
		resp, body := rawExchange(t, e, raw)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: %d %s", raw, resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte("secret-token-123")) || bytes.Contains(body, []byte("Host")) {
			t.Errorf("%q: the answer echoes the request: %s", raw, body)
		}
	}
}

// LOW 8: what the upstream learns about the client comes from the node: claims a caller makes in
// client-identity headers (or their underscore twins) are dropped, X-Forwarded-Host is the host
// the request was routed by.
func TestForwardingHeadersAreTheNodesOwn(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	up := newRawUpstream(t, "")
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = "http://" + up.addr })
	e.waitHeld("tun-llm")
	forged := []string{"X_Forwarded_For: 6.6.6.6", "X-Real-Ip: 6.6.6.6", "True-Client-Ip: 6.6.6.6", "X-Original-Url: /admin",
		"X-Forwarded-Port: 6666", "X-Client-Ip: 6.6.6.6", "Forwarded: for=6.6.6.6", "X-Forwarded-Host: evil.example", "X-Rewrite-Url: /admin"}
	raw := "GET http://llm.tunnels.test/path HTTP/1.1\r\nHost: other.example\r\nAuthorization: Bearer " + e.alice + "\r\n" +
		strings.Join(forged, "\r\n") + "\r\n\r\n"
	resp, body := rawExchange(t, e, raw)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	head := up.lastHead()
	for _, f := range []string{"6.6.6.6", "/admin", "6666", "evil.example", "X_Forwarded_For", "other.example"} {
		if strings.Contains(head, f) {
			t.Errorf("the upstream saw %q:\n%s", f, head)
		}
	}
	_, port, _ := net.SplitHostPort(e.addr)
	for _, want := range []string{"X-Forwarded-For: 127.0.0.1\r\n", "X-Real-Ip: 127.0.0.1\r\n", "X-Forwarded-Host: llm.tunnels.test\r\n",
		"X-Forwarded-Port: " + port + "\r\n", "GET /path HTTP/1.1\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("the upstream's request lacks %q:\n%s", want, head)
		}
	}
}

// LOW 8: an upstream's cookie stays with its tunnel: no Domain (host-only for the tunnel's host),
// and under path routing a Path inside the tunnel's prefix.
func TestCookiesStayWithTheirTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	up := newTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Add("Set-Cookie", "a=1; Domain=tunnels.test; Path=/; HttpOnly")
		w.Header().Add("Set-Cookie", "b=2; domain=.tunnels.test")
		w.Header().Add("Set-Cookie", "c=3; Path=/api; Secure")
	}))
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")
	check := func(req *http.Request, want []string) {
		t.Helper()
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Values("Set-Cookie")
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("Set-Cookie %q, want %q", got, want)
		}
	}
	check(e.request("GET", "/t/llm/", nil, e.alice), []string{"a=1; Path=/t/llm; HttpOnly", "b=2; Path=/t/llm", "c=3; Path=/t/llm/api; Secure"})
	req := e.request("GET", "/", nil, e.alice)
	req.Host = "llm.tunnels.test"
	check(req, []string{"a=1; Path=/; HttpOnly", "b=2", "c=3; Path=/api; Secure"})
}

// LOW 9: on a tunnel's host every path is the tunnel's, the node's own endpoints included; under
// path routing a dot segment cannot climb out of the tunnel to them.
func TestNodeEndpointsAreNotReachableThroughTunnels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	up := newRawUpstream(t, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nupstream")
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = "http://" + up.addr })
	e.waitHeld("tun-llm")
	req := e.request("GET", "/v1/agent", nil, e.alice)
	req.Host = "llm.tunnels.test"
	if status, _, body := e.do(req); status != 200 || string(body) != "upstream" {
		t.Fatalf("/v1/agent on a tunnel's host: %d %s, want the tunnel's answer", status, body)
	}
	resp, body := rawExchange(t, e, "GET /t/llm/../../v1/agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a dot segment out of the tunnel: %d %s", resp.StatusCode, body)
	}
	// On the node's own host, the agent endpoint still answers (a plain GET is not a WebSocket).
	status, _, body := e.do(e.request("GET", "/v1/agent", nil, ""))
	if status == 200 || bytes.Contains(body, []byte("upstream")) {
		t.Fatalf("/v1/agent on the node's host: %d %s", status, body)
	}
}

// LOW 10: an anonymous caller keeps no connection open after its 401, and one address cannot
// hold more than MaxConnsPerSource connections.
func TestAnonymousConnectionsCloseAndSourcesAreCapped(t *testing.T) {
	t.Parallel()
	// FailoverWait off: the last call, to a tunnel without an agent, is answered at once.
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.MaxConnsPerSource, c.FailoverWait = 8, -1 }))
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /t/llm/ HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the node did not close an anonymous connection after its 401: %v", err)
	}

	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 8 {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The listener may not have accepted every held connection yet: poll until one is refused.
	poll.Until(t, 5*time.Second, "a connection beyond the limit refused with 429", func() bool {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == http.StatusTooManyRequests
	})
	for _, c := range held {
		c.Close()
	}
	held = nil
	// Until the node has seen the held connections close, a new one may still be cut at the cap
	// (a transport error here, not a failure).
	poll.Until(t, 5*time.Second, "connections accepted again once the others closed", func() bool {
		resp, err := e.client.Do(e.request("GET", "/t/llm/", nil, e.alice))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode != http.StatusTooManyRequests
	})
}

// hostileAgent logs in, takes its tunnel, and then never answers a channel open.
type hostileAgent struct {
	sc    ssh.Conn
	mu    sync.Mutex
	held  []ssh.NewChannel
	close func()
}

func startHostileAgent(t *testing.T, e *env, tunnel string) *hostileAgent {
	t.Helper()
	sc, chans, reqs := e.dialSSHAgent("hostile-"+tunnel, tunnel)
	h := &hostileAgent{sc: sc}
	var wg sync.WaitGroup
	wg.Go(func() {
		for r := range reqs {
			if r.WantReply {
				r.Reply(r.Type == node.RequestKeepalive, nil)
			}
		}
	})
	wg.Go(func() {
		for nc := range chans {
			h.mu.Lock()
			h.held = append(h.held, nc) // never accepted, never rejected
			h.mu.Unlock()
		}
	})
	if ok, _, err := sc.SendRequest(node.RequestForward, true, ssh.Marshal(node.ForwardRequest{})); err != nil || !ok {
		t.Fatalf("forward: %v %v", ok, err)
	}
	h.close = func() { sc.Close(); wg.Wait() }
	t.Cleanup(h.close)
	return h
}

func (h *hostileAgent) opens() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

// busyGoroutines counts goroutines other than fasthttp's idle workers.
func busyGoroutines() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\ngoroutine ")) {
		if !bytes.Contains(g, []byte("fasthttp.(*workerPool).workerFunc")) || bytes.Contains(g, []byte("dataplane/node.")) {
			n++
		}
	}
	return n
}

// closeWaits counts this process's TCP sockets in CLOSE_WAIT on port: connections whose peer
// left and which nobody closed.
func closeWaits(t *testing.T, port string) int {
	t.Helper()
	p, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X ", p)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 3 && strings.HasSuffix(fs[1]+" ", want) && fs[3] == "08" {
				n++
			}
		}
	}
	return n
}

// MEDIUM 4: an agent that takes its tunnel and never answers channel opens holds nothing of the
// node's for long: opens time out (504), callers who leave stop waiting at once, calls beyond
// the tunnel's limit are answered 503 with Retry-After, and goroutines and sockets stay bounded.
func TestHostileAgentCannotHoldTheNode(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts sockets in /proc/net/tcp")
	}
	const limit = 16
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.ChannelOpenTimeout = 500 * time.Millisecond
		c.MaxCallsPerTunnel = limit
		c.MaxConnsPerSource = 1000
	}))
	h := startHostileAgent(t, e, "tun-llm")
	hostile := e.waitHeld("tun-llm")
	before := busyGoroutines()

	// A call waits for the open no longer than the timeout.
	start := time.Now()
	status, hdr, body := e.do(e.request("GET", "/t/llm/x", nil, e.alice))
	if p := mustProblem(t, status, hdr, body, http.StatusGatewayTimeout); !strings.Contains(p.Type, "agent-timeout") || time.Since(start) > 3*time.Second {
		t.Fatalf("%+v after %v", p, time.Since(start))
	}

	// 300 callers who give up after 50 ms: none of them stays in CLOSE_WAIT at the node.
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() {
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "GET /t/llm/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", e.alice)
			time.Sleep(50 * time.Millisecond)
			c.Close()
		})
	}
	wg.Wait()
	_, port, _ := net.SplitHostPort(e.addr)
	poll.Until(t, 5*time.Second, "no caller socket left in CLOSE_WAIT", func() bool { return closeWaits(t, port) == 0 })

	// The tunnel's slots are held by opens the agent never answered: more calls get 503 at once.
	start = time.Now()
	status, hdr, body = e.do(e.request("GET", "/t/llm/x", nil, e.alice))
	if p := mustProblem(t, status, hdr, body, http.StatusServiceUnavailable); !strings.Contains(p.Type, "tunnel-busy") || hdr.Get("Retry-After") == "" {
		t.Fatalf("%+v", p)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a call over the limit waited %v", d)
	}
	if n := h.opens(); n > limit+1 {
		t.Fatalf("the agent was asked for %d channels, want at most %d (+1 timed out)", n, limit)
	}
	// (fasthttp keeps idle workers for 10 s; they serve any caller and hold nothing.)
	poll.Until(t, 5*time.Second, "goroutines back near where they were", func() bool {
		return busyGoroutines() <= before+limit+8
	})

	// When the agent goes, everything it held is released.
	h.close()
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm", hostile.SessionID)
	if status, _, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice)); status != 200 {
		t.Fatalf("after the hostile agent left: %d %s", status, body)
	}
}

// MEDIUM 3: an agent with another token does not take a tunnel over silently. Without --replace
// it is refused while the holder is connected (it retries, a standby); with it the takeover is
// an AgentReplaced fact and the old session ends saying by whom.
func TestAnotherTokensAgentTakesATunnelOnlyWithReplace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := newUpstream(t, "first")
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = first })
	s1 := e.waitHeld("tun-llm")

	second := newUpstream(t, "second")
	other := e.agentToken("tun-llm", "other-token", time.Now().Add(time.Hour))
	standby := e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = second; c.Token = other })
	poll.Until(t, 5*time.Second, "the second agent refused", func() bool { return standby.states.has("held by another agent") })
	if status, _, body := e.do(e.request("GET", "/t/llm/", nil, e.alice)); status != 200 || string(body) != "first" {
		t.Fatalf("the tunnel moved without --replace: %d %q", status, body)
	}
	if r := e.sink.replacements(); len(r) != 0 {
		t.Fatalf("replacements %+v", r)
	}
	standby.stop()

	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = second; c.Token = other; c.Replace = true })
	s2 := e.waitHeld("tun-llm", s1.SessionID)
	if status, _, body := e.do(e.request("GET", "/t/llm/", nil, e.alice)); status != 200 || string(body) != "second" {
		t.Fatalf("after --replace: %d %q", status, body)
	}
	r := e.sink.replacements()
	if len(r) != 1 || r[0].OldSessionID != s1.SessionID || r[0].NewSessionID != s2.SessionID || r[0].OldTokenID != "jti-tun-llm" ||
		r[0].NewTokenID != "other-token" || r[0].TunnelID != "tun-llm" || r[0].NodeID != "node-test" {
		t.Fatalf("replacements %+v (sessions %s → %s)", r, s1.SessionID, s2.SessionID)
	}
	poll.Until(t, 5*time.Second, "the first session ended", func() bool { return len(e.sink.disconnectsFor(s1.SessionID)) == 1 })
	if d := e.sink.disconnectsFor(s1.SessionID)[0]; !strings.Contains(d.Reason, "replaced by session "+s2.SessionID) {
		t.Fatalf("first session's end: %q", d.Reason)
	}
}
