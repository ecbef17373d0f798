package node_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
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

// freezer is a TCP proxy that can stop moving bytes without closing anything, in either
// direction: as the node sees it, the agent's process was stopped (SIGSTOP). The connection
// stays open, nothing is read and nothing answers, and the node's writes pile up in buffers.
type freezer struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen bool
	thawed chan struct{} // closed by thaw
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, thawed: make(chan struct{})}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			f.wg.Go(func() { f.copy(up, c) })
			f.wg.Go(func() { f.copy(c, up) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.thaw()
		f.wg.Wait()
	})
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

// gate blocks while the proxy is frozen.
func (f *freezer) gate() {
	f.mu.Lock()
	frozen, thawed := f.frozen, f.thawed
	f.mu.Unlock()
	if frozen {
		<-thawed
	}
}

func (f *freezer) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		f.gate()
		n, err := src.Read(buf)
		f.gate() // a read that was under way when the freeze came delivers nothing either
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (f *freezer) freeze() { f.mu.Lock(); f.frozen = true; f.mu.Unlock() }

// thaw lets bytes move again (SIGCONT); safe to call twice.
func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen {
		f.frozen = false
		close(f.thawed)
	}
}

// The issue: a frozen agent (SIGSTOP) kept its callers waiting ~20 s. Its TCP connection stays
// open, so only an unanswered keepalive reveals it; the periodic ones (15 s apart) are far too
// rare, so the node probes as soon as a caller has waited a moment, and closes the session when
// the probe goes unanswered for KeepaliveTimeout. Every waiting caller gets 503 then.
func TestFrozenAgentsCallersAreAnsweredWithinTheKeepaliveTimeout(t *testing.T) {
	t.Run("three callers opening channels", func(t *testing.T) { testFrozenAgent(t, 3, false) })
	t.Run("a caller on a pooled channel", func(t *testing.T) { testFrozenAgent(t, 1, true) })
}

// testFrozenAgent freezes the agent and calls it. With pooled, a call made while the agent was
// alive leaves a channel in the pool, and the (one) caller takes it: it waits for a response
// header instead of a channel open.
func testFrozenAgent(t *testing.T, callers int, pooled bool) {
	const timeout = 2 * time.Second
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.KeepaliveTimeout = timeout // KeepaliveInterval stays 15s: the periodic probe comes too late
		// What is measured is how soon the frozen agent is found out; with a FailoverWait its
		// callers (nothing of whose calls reached it) would wait that much more for another agent.
		c.FailoverWait = -1
	}))
	fz := newFreezer(t, e.addr)
	e.startAgent("tun-llm", func(c *agent.Config) {
		c.NodeURL = "ws://" + fz.addr() + "/v1/agent"
	})
	t.Cleanup(fz.thaw) // before the agent stops (cleanups run last first): SIGCONT, then stop
	s1 := e.waitHeld("tun-llm")
	if pooled {
		if status, _, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice)); status != http.StatusOK {
			t.Fatalf("before the freeze: %d %s", status, body)
		}
	}

	fz.freeze()
	// Today's code answered after ChannelOpenTimeout (15s, 504) or the response-header timeout.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	answers := make([]<-chan answer, callers)
	for i := range answers {
		answers[i] = e.call(e.request("GET", "/t/llm/healthz", nil, e.alice).WithContext(ctx))
	}
	for _, ch := range answers {
		a := <-ch
		if a.err != nil {
			t.Fatalf("caller after %v: %v", a.took.Round(time.Millisecond), a.err)
		}
		if a.took > timeout+2*time.Second {
			t.Errorf("a caller was answered after %v; want at most KeepaliveTimeout (%v) + 2s", a.took.Round(time.Millisecond), timeout)
		}
		p := mustProblem(t, a.status, a.h, a.body, http.StatusServiceUnavailable)
		if p.Type != domain.ProblemTypeBase+"agent-unresponsive" || !strings.Contains(p.Detail, "keepalive within 2s") {
			t.Errorf("problem %+v", p)
		}
		if a.h.Get("Retry-After") == "" {
			t.Errorf("no Retry-After: %v", a.h)
		}
	}
	poll.Until(t, 5*time.Second, "AgentDisconnected", func() bool { return len(e.sink.disconnectsFor(s1.SessionID)) == 1 })
	if d := e.sink.disconnectsFor(s1.SessionID)[0]; d.Reason != "agent unresponsive: no keepalive answer within 2s" {
		t.Fatalf("reason %q", d.Reason)
	}
	// New callers learn at once that no agent is there.
	status, h, body := e.do(e.request("GET", "/t/llm/healthz", nil, e.alice))
	if p := mustProblem(t, status, h, body, http.StatusServiceUnavailable); p.Type != domain.ProblemTypeBase+"agent-absent" {
		t.Fatalf("after the close: %+v", p)
	}
}

// slowAgent answers keepalives at once but accepts channels only when the test says so: an
// agent whose upstream is slow to accept, alive all along.
type slowAgent struct {
	keepalives atomic.Int64
	opens      chan ssh.NewChannel
}

func startSlowAgent(t *testing.T, e *env, tunnel string) *slowAgent {
	t.Helper()
	sc, chans, reqs := e.dialSSHAgent("slow-"+tunnel, tunnel)
	a := &slowAgent{opens: make(chan ssh.NewChannel, 16)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for r := range reqs {
			if r.Type == node.RequestKeepalive {
				a.keepalives.Add(1)
			}
			if r.WantReply {
				r.Reply(r.Type == node.RequestKeepalive, nil)
			}
		}
	})
	wg.Go(func() {
		for nc := range chans {
			a.opens <- nc
		}
	})
	if ok, _, err := sc.SendRequest(node.RequestForward, true, ssh.Marshal(node.ForwardRequest{})); err != nil || !ok {
		t.Fatalf("forward: %v %v", ok, err)
	}
	t.Cleanup(func() { sc.Close(); wg.Wait() })
	return a
}

// The probes a waiting caller sets off must not cost a live agent its session: an agent that is
// slow to accept a channel but answers keepalives keeps its tunnel, and the call succeeds.
func TestSlowAgentThatAnswersKeepalivesKeepsItsSession(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.KeepaliveTimeout = timeout }))
	a := startSlowAgent(t, e, "tun-llm")
	s1 := e.waitHeld("tun-llm")

	type answer struct {
		status int
		body   string
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := e.client.Do(e.request("GET", "/t/llm/slow", nil, e.alice))
		if err != nil {
			done <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- answer{status: resp.StatusCode, body: string(b), err: err}
	}()
	var nc ssh.NewChannel
	select {
	case nc = <-a.opens:
	case <-time.After(10 * time.Second):
		t.Fatal("no channel open reached the agent")
	}
	// While the open waits the node probes the agent, which answers; several probes span many
	// KeepaliveTimeouts.
	poll.Until(t, 10*time.Second, "keepalive probes while the open waits", func() bool {
		return a.keepalives.Load() >= 4 || len(e.sink.disconnectsFor(s1.SessionID)) > 0
	})
	if d := e.sink.disconnectsFor(s1.SessionID); len(d) != 0 {
		t.Fatalf("a live agent was disconnected: %+v", d)
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs)
	defer ch.Close()
	req, err := http.ReadRequest(bufio.NewReader(ch))
	if err != nil {
		t.Fatal(err)
	}
	if req.URL.Path != "/slow" {
		t.Fatalf("upstream got %q", req.URL.Path)
	}
	if _, err := io.WriteString(ch, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow"); err != nil {
		t.Fatal(err)
	}
	var got answer
	select {
	case got = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the caller got no answer")
	}
	if got.err != nil || got.status != http.StatusOK || got.body != "slow" {
		t.Fatalf("caller got %d %q %v", got.status, got.body, got.err)
	}
	if held := e.waitHeld("tun-llm"); held.SessionID != s1.SessionID {
		t.Fatalf("session %s holds the tunnel, want %s", held.SessionID, s1.SessionID)
	}
	if d := e.sink.disconnectsFor(s1.SessionID); len(d) != 0 {
		t.Fatalf("a live agent was disconnected: %+v", d)
	}
}
