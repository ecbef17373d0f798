package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// anonymousAuthorizer is the node's view of the log (users and access keys as in production)
// that also admits the bearer "anonymous" without naming it: an Authorizer for tunnels open to
// unidentified callers, which the node counts as anonymous. (The control plane's view admits
// none; a node serves whatever its Authorizer says.)
type anonymousAuthorizer struct{ *view.View }

func (a anonymousAuthorizer) AuthenticateCaller(ctx context.Context, bearer string) (node.Principal, error) {
	if bearer == "anonymous" {
		return node.Principal{}, nil
	}
	return a.View.AuthenticateCaller(ctx, bearer)
}

func (a anonymousAuthorizer) AuthorizeIngress(ctx context.Context, p node.Principal, r node.Route) error {
	if p.UserID == "" && p.AccessKeyID == "" {
		return nil
	}
	return a.View.AuthorizeIngress(ctx, p, r)
}

// callerEnv is an env whose ingress is decided by the log's view: alice owns the tunnels, bob is
// an admin of their organization, and key is an access key to tun-llm.
type callerEnv struct {
	*env
	bob, key string
}

// streamUpstream serves the demo, and at /stream a response whose first line goes out at once
// and whose last waits for release.
type streamUpstream struct {
	release chan struct{}
	once    sync.Once
}

func (s *streamUpstream) let() { s.once.Do(func() { close(s.release) }) }

func newCallerEnv(t *testing.T, mod func(*node.Config)) (*callerEnv, *streamUpstream) {
	t.Helper()
	kv := newKeyView(t)
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.Router, c.Authorizer = kv.v, anonymousAuthorizer{kv.v}
		mod(c)
	}))
	b, _ := json.Marshal(ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", e.key))
	if err := kv.v.Apply(view.Event{Position: kv.pos, EventID: "ev-key", StreamID: ledger.LogStream, Type: ledger.TypeKeyAdded, Payload: b}); err != nil {
		t.Fatal(err)
	}
	kv.pos++
	kv.apply(domain.RoleAssigned{OrgID: "org-1", UserID: "bob", Role: domain.RoleAdmin})
	su := &streamUpstream{release: make(chan struct{})}
	t.Cleanup(su.let)
	mux := http.NewServeMux()
	mux.Handle("/", demo.Handler(demo.Config{}))
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-su.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "last\n")
	})
	up := newTestServer(t, mux)
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = up })
	e.waitHeld("tun-llm")
	return &callerEnv{env: e, bob: e.userToken("bob", time.Hour), key: kv.issue("usage", "tun-llm")}, su
}

type callerID struct{ kind, id string }

// byCaller returns tunnel tun-llm's facts per caller, checking that each is valid.
func (e *callerEnv) byCaller() map[callerID][]domain.UsageRecorded {
	e.t.Helper()
	_, _, usage := e.sink.snapshot()
	out := map[callerID][]domain.UsageRecorded{}
	for _, u := range usage {
		if err := u.Validate(); err != nil || u.TunnelID != "tun-llm" || u.OrgID != "org-1" {
			e.t.Fatalf("fact %+v: %v", u, err)
		}
		c := callerID{u.CallerKind, u.CallerID}
		out[c] = append(out[c], u)
	}
	return out
}

type usageTotal struct{ requests, in, out, latencies, ttfbs, streamedMS, streamsMax int64 }

func total(facts []domain.UsageRecorded) usageTotal {
	var s usageTotal
	for _, u := range facts {
		s.requests += u.Requests
		s.in += u.BytesIn
		s.out += u.BytesOut
		s.latencies += u.Latency.Count()
		s.ttfbs += u.TTFB.Count()
		s.streamedMS += u.StreamedMS
		s.streamsMax = max(s.streamsMax, u.StreamsMax)
	}
	return s
}

var (
	alice     = callerID{domain.CallerUser, "alice"}
	bob       = callerID{domain.CallerUser, "bob"}
	key       = callerID{domain.CallerAccessKey, "key-usage"}
	anonymous = callerID{domain.CallerAnonymous, ""}
)

// Scripted traffic from two users, an access key and an anonymous caller through a real tunnel
// counts in windows per caller, with exact requests and bytes, and every call's duration and
// first byte.
func TestUsageWindowsPerCaller(t *testing.T) {
	t.Parallel()
	e, _ := newCallerEnv(t, func(c *node.Config) { c.UsageWindow = 200 * time.Millisecond })
	script := []struct {
		bearer string
		calls  int
		body   string
	}{{e.alice, 3, "0123456789"}, {e.bob, 2, "abcdefg"}, {e.key, 4, "hello"}, {"anonymous", 1, "xyz"}}
	for _, s := range script {
		for range s.calls {
			if status, _, body := e.do(e.request("POST", "/t/llm.one/echo", strings.NewReader(s.body), s.bearer)); status != 200 || string(body) != s.body {
				t.Fatalf("%d %s", status, body)
			}
		}
	}
	want := map[callerID]usageTotal{
		alice: {requests: 3, in: 30, out: 30}, bob: {requests: 2, in: 14, out: 14},
		key: {requests: 4, in: 20, out: 20}, anonymous: {requests: 1, in: 3, out: 3},
	}
	poll.Until(t, 5*time.Second, "every call in a window", func() bool {
		n := int64(0)
		for _, facts := range e.byCaller() {
			n += total(facts).requests
		}
		return n == 10
	})
	got := e.byCaller()
	if len(got) != len(want) {
		t.Fatalf("callers %v, want %v", got, want)
	}
	for c, w := range want {
		g := total(got[c])
		if g.requests != w.requests || g.in != w.in || g.out != w.out || g.latencies != w.requests || g.ttfbs != w.requests || g.streamsMax != 1 {
			t.Errorf("%v: %+v, want %+v with a duration and a first byte per call, one open at a time", c, g, w)
		}
	}
}

// A streamed response open across window boundaries counts its open time and its bytes in each
// window it crosses, and its call in the window where it ends; a WebSocket the same. Time to
// first byte is its own histogram, well below the whole duration.
func TestUsageStreamsAcrossWindows(t *testing.T) {
	t.Parallel()
	const window, streams = 150 * time.Millisecond, 3
	e, su := newCallerEnv(t, func(c *node.Config) { c.UsageWindow = window })
	began := time.Now()
	type result struct {
		body string
		err  error
	}
	results := make(chan result, streams)
	firsts := make(chan struct{}, streams)
	for range streams {
		go func() {
			resp, err := e.client.Do(e.request("GET", "/t/llm.one/stream", nil, e.alice))
			if err != nil {
				firsts <- struct{}{}
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			first, err := br.ReadString('\n')
			firsts <- struct{}{}
			rest, _ := io.ReadAll(br)
			results <- result{body: first + string(rest), err: err}
		}()
	}
	ws, _, err := (&websocket.Dialer{}).Dial("ws://"+e.addr+"/t/llm.one/ws", http.Header{"Authorization": {"Bearer " + e.key}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil { // 2 + 4 (mask) + 5 bytes
		t.Fatal(err)
	}
	if _, p, err := ws.ReadMessage(); err != nil || string(p) != "hello" { // 2 + 5 bytes
		t.Fatalf("%q %v", p, err)
	}
	for range streams {
		<-firsts
	}
	allOpen := time.Now()
	// A window that began once all were open and their first bytes through, while they still are.
	poll.Until(t, 5*time.Second, "a window with every call open", func() bool {
		c := e.byCaller()
		return len(c[alice]) > 0 && c[alice][len(c[alice])-1].WindowStart.After(allOpen) &&
			len(c[key]) > 0 && c[key][len(c[key])-1].WindowStart.After(allOpen)
	})
	before := e.byCaller()
	su.let()
	for range streams {
		if r := <-results; r.err != nil || r.body != "first\nlast\n" {
			t.Fatalf("%q %v", r.body, r.err)
		}
	}
	ws.Close()
	ended := time.Now()
	poll.Until(t, 5*time.Second, "every call ended", func() bool {
		c := e.byCaller()
		return total(c[alice]).requests == streams && total(c[key]).requests == 1
	})
	after := e.byCaller()

	// While open: windows with the calls open at once and no call ended, holding the bytes that
	// had crossed.
	for c, n := range map[callerID]int64{alice: streams, key: 1} {
		b := total(before[c])
		if b.requests != 0 || b.streamsMax != n || b.streamedMS == 0 || len(before[c]) < 2 {
			t.Errorf("%v before the end: %+v in %d windows, want %d open and no call ended", c, b, len(before[c]), n)
		}
		last := before[c][len(before[c])-1]
		if last.StreamsMax != n || last.Requests != 0 || last.StreamedMS < n*window.Milliseconds()/2 {
			t.Errorf("%v: a window with every call open throughout %+v", c, last)
		}
	}
	if b := total(before[alice]); b.out != streams*int64(len("first\n")) || b.in != 0 {
		t.Errorf("alice's bytes while open: in %d out %d, want the first lines' %d out", b.in, b.out, streams*len("first\n"))
	}
	if b := total(before[key]); b.in != 11 || b.out != 7 {
		t.Errorf("the WebSocket's bytes while open: in %d out %d, want 11 and 7", b.in, b.out)
	}

	// In all: every call once, all its bytes, and its open time within what the caller saw.
	a, k := total(after[alice]), total(after[key])
	if a.requests != streams || a.out != streams*int64(len("first\nlast\n")) || a.latencies != streams || a.ttfbs != streams || a.streamsMax != streams {
		t.Errorf("alice: %+v", a)
	}
	if k.requests != 1 || k.in != 11 || k.out != 7 || k.streamsMax != 1 {
		t.Errorf("key: %+v", k)
	}
	slack := int64(len(after[alice])) // a millisecond's truncation per window
	if lo, hi := streams*ended.Sub(allOpen).Milliseconds()-slack-streams*50, streams*ended.Sub(began).Milliseconds()+slack; a.streamedMS < lo || a.streamedMS > hi+streams*50 {
		t.Errorf("alice's streamed time %d ms, want %d..%d", a.streamedMS, lo, hi)
	}
	for _, u := range after[alice] {
		if u.Requests == 0 {
			continue
		}
		// The first byte came at once, the whole answer windows later.
		lastTTFB, firstLatency := u.TTFB.Offset+len(u.TTFB.Counts)-1, u.Latency.Offset
		if domain.HistogramUpper(lastTTFB) >= domain.HistogramUpper(firstLatency) || domain.HistogramUpper(firstLatency) < window {
			t.Errorf("ttfb buckets %+v not below latency buckets %+v", u.TTFB, u.Latency)
		}
	}
}

// Callers past the bound on distinct callers per window count in the tunnel's overflow account
// and in a node metric; no call is lost.
func TestUsageCallersPerWindowAreBounded(t *testing.T) {
	t.Parallel()
	e, _ := newCallerEnv(t, func(c *node.Config) { c.UsageWindow, c.UsageMaxCallers = 200*time.Millisecond, 1 })
	for _, bearer := range []string{e.alice, e.bob, e.key, "anonymous", e.alice} {
		if status, _, _ := e.do(e.request("GET", "/t/llm.one/healthz", nil, bearer)); status != 200 {
			t.Fatal(status)
		}
	}
	poll.Until(t, 5*time.Second, "every call in a window", func() bool {
		n := int64(0)
		for _, facts := range e.byCaller() {
			n += total(facts).requests
		}
		return n == 5
	})
	overflow := callerID{domain.CallerOverflow, ""}
	perWindow := map[time.Time]int{}
	for c, facts := range e.byCaller() {
		for _, u := range facts {
			if c != overflow {
				perWindow[u.WindowStart]++
			}
		}
	}
	for w, n := range perWindow {
		if n > 1 {
			t.Errorf("window %v has %d callers besides the overflow, bound 1", w, n)
		}
	}
	// Five calls of four callers within far less than two windows: at least two overflow.
	o := total(e.byCaller()[overflow]).requests
	if m := metricValue(t, e.env, "tunnelplane_node_usage_overflow_calls_total"); o < 2 || m != float64(o) {
		t.Fatalf("overflow: %d calls in the facts, %v in the metric", o, m)
	}
}

// A wall clock that stands still (or steps back) still gives windows that end after they start:
// the ingester refuses a batch holding any other.
func TestUsageWindowsEndAfterTheyStartWhateverTheClock(t *testing.T) {
	t.Parallel()
	frozen := time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		c.UsageWindow, c.Now = 100*time.Millisecond, func() time.Time { return frozen }
	}))
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	e.do(e.request("GET", "/t/llm/healthz", nil, e.alice))
	// The call may still be open when a window closes (it then counts in the next one).
	poll.Until(t, 5*time.Second, "the call in a window", func() bool {
		_, _, usage := e.sink.snapshot()
		var n int64
		for _, u := range usage {
			n += u.Requests
		}
		return n == 1
	})
	_, _, usage := e.sink.snapshot()
	for _, u := range usage {
		if err := u.Validate(); err != nil {
			t.Fatalf("%+v: %v", u, err)
		}
	}
}
