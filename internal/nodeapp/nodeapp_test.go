package nodeapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle/lifecycletest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// fasthttp's worker-pool cleaner notices a stopped server within its 10s idle period, and its
// clock goroutine serves the whole process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

var quiet = slog.New(slog.DiscardHandler)

// feed applies domain events to a view as the relayed log would, with event ids ev-<position>.
func feed(t *testing.T, v *view.View, events ...domain.Event) {
	t.Helper()
	for _, e := range events {
		b, _ := json.Marshal(e)
		pos := uint64(v.Position() + 1)
		if err := v.Apply(view.Event{Position: pos, EventID: fmt.Sprint("ev-", pos), StreamID: "s", Type: e.EventType(), Payload: b}); err != nil {
			t.Fatal(err)
		}
	}
}

const (
	thisNode  = "0190a8f6-2a3c-7c4e-9b1d-000000000001"
	otherNode = "0190a8f6-2a3c-7c4e-9b1d-000000000002"
)

// A command from NATS runs only as the log decided it: its id must name a decision the view holds,
// of the kind of command it is, and a drain only of this node; what runs is built from the
// decision, not from the message.
func TestResolveCommandRunsOnlyWhatTheLogDecided(t *testing.T) {
	t.Parallel()
	v := view.New(token.DefaultIssuer, view.Hooks{})
	feed(t, v,
		&domain.OrganizationCreated{OrgID: "o1", Name: "acme"},                      // ev-0
		&domain.TunnelCreated{TunnelID: "t1", OrgID: "o1", Name: "llm", Owner: "u"}, // ev-1
		&domain.TunnelDeleted{TunnelID: "t1", OrgID: "o1", Name: "llm"},             // ev-2
		&domain.AgentTokenRevoked{TokenID: "k1", OrgID: "o1", TunnelID: "t2"},       // ev-3
		&domain.NodeDrainRequested{NodeID: thisNode},                                // ev-4
		&domain.NodeDrainRequested{NodeID: otherNode},                               // ev-5
	)
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	for _, tc := range []struct {
		name string
		cmd  wire.Command
		want wire.Command // nil: refused
	}{
		{"tunnel deleted, as sent", wire.DisconnectAgent{CommandID: "ev-2", TunnelID: "t1"},
			wire.DisconnectAgent{CommandID: "ev-2", TunnelID: "t1", Reason: "tunnel deleted"}},
		{"tunnel deleted, the message names another tunnel", wire.DisconnectAgent{CommandID: "ev-2", TunnelID: "victim"},
			wire.DisconnectAgent{CommandID: "ev-2", TunnelID: "t1", Reason: "tunnel deleted"}},
		{"token revoked", wire.DisconnectAgent{CommandID: "ev-3", TokenID: "other"},
			wire.DisconnectAgent{CommandID: "ev-3", TokenID: "k1", Reason: "agent token revoked"}},
		{"drain of this node", wire.DrainNode{CommandID: "ev-4", NodeID: otherNode}, wire.DrainNode{CommandID: "ev-4", NodeID: thisNode}},
		{"drain of another node", wire.DrainNode{CommandID: "ev-5", NodeID: thisNode}, nil},
		{"a drain decision sent as a disconnect", wire.DisconnectAgent{CommandID: "ev-4", TunnelID: "t1"}, nil},
		{"a deletion sent as a drain", wire.DrainNode{CommandID: "ev-2", NodeID: thisNode}, nil},
		{"an event that is no decision", wire.DisconnectAgent{CommandID: "ev-0", TunnelID: "t1"}, nil},
		{"an id the log never had", wire.DisconnectAgent{CommandID: "ev-99", TunnelID: "t1"}, nil},
	} {
		got, err := resolveCommand(short(), v, thisNode, tc.cmd)
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("%s: ran %+v, want it refused", tc.name, got)
		case tc.want != nil && (err != nil || got != tc.want):
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// The watchdog raises the view's readiness target to the log size the control plane stated at
// least MaxViewLag ago, never to a newer one, and never lowers it: a view that falls further
// behind than that refuses; one that caught up serves.
func TestLagWatchRefusesAViewTooFarBehind(t *testing.T) {
	t.Parallel()
	v := view.New(token.DefaultIssuer, view.Hooks{})
	v.ReadyAt(-1)
	w := &lagWatch{view: v, stale: 30 * time.Second, log: quiet}
	t0 := time.Unix(1_700_000_000, 0)
	if got := w.observe(t0, 5); got != -2 || v.Ready() != nil {
		t.Fatalf("first sample: target %d, ready %v", got, v.Ready())
	}
	if got := w.observe(t0.Add(20*time.Second), 9); got != -2 || v.Ready() != nil {
		t.Fatalf("a sample younger than the allowed lag moved the target to %d", got)
	}
	// 30 s after the log held 5 records the view holds none: refuse.
	if got := w.observe(t0.Add(30*time.Second), 12); got != 4 || v.Ready() == nil {
		t.Fatalf("at the allowed lag: target %d, ready %v (want target 4 and not ready)", got, v.Ready())
	}
	feed(t, v, &domain.OrganizationCreated{OrgID: "o1", Name: "a"}, &domain.OrganizationCreated{OrgID: "o2", Name: "b"},
		&domain.OrganizationCreated{OrgID: "o3", Name: "c"}, &domain.OrganizationCreated{OrgID: "o4", Name: "d"},
		&domain.OrganizationCreated{OrgID: "o5", Name: "e"})
	if v.Ready() != nil {
		t.Fatalf("caught up to the target: %v", v.Ready())
	}
	// The next due sample (9 records, 20 s after t0) is due 50 s after t0.
	if got := w.observe(t0.Add(50*time.Second), 12); got != 8 || v.Ready() == nil {
		t.Fatalf("second due sample: target %d, ready %v", got, v.Ready())
	}
	if got := w.observe(t0.Add(60*time.Second), 1); got != 11 {
		t.Fatalf("third due sample (12 records at 30 s): target %d", got)
	}
	// A control plane that states a smaller log (restored from a backup?) never lowers the bar.
	if got := w.observe(t0.Add(95*time.Second), 1); got != 0 || v.Target() != 11 {
		t.Fatalf("a smaller size: target %d, view target %d (want 11 kept)", got, v.Target())
	}
}

// A snapshot is used only when it was taken of this log and TP_EVENTS (when it still holds that
// position) names the same event there.
func TestSnapshotRestoreChecksTheLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := view.New(token.DefaultIssuer, view.Hooks{})
	feed(t, src, &domain.OrganizationCreated{OrgID: "o1", Name: "acme"}, &domain.TunnelCreated{TunnelID: "t1", OrgID: "o1", Name: "llm", Owner: "u"})
	path := filepath.Join(dir, "view.json")
	if _, err := src.SaveFile(path, "log-a"); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("nats down")
	for _, tc := range []struct {
		name     string
		path     string
		origin   string
		relayed  relayedID
		restored bool
		err      error
	}{
		{"same event at its position", path, "log-a", func(context.Context, uint64) (string, bool, error) { return "ev-1", true, nil }, true, nil},
		{"no longer in TP_EVENTS", path, "log-a", func(context.Context, uint64) (string, bool, error) { return "", false, nil }, true, nil},
		{"another event there (a restored backup)", path, "log-a", func(context.Context, uint64) (string, bool, error) { return "ev-x", true, nil }, false, nil},
		{"another log's snapshot", path, "log-b", nil, false, nil},
		{"no snapshot", filepath.Join(dir, "none.json"), "log-a", nil, false, nil},
		{"TP_EVENTS unreadable", path, "log-a", func(context.Context, uint64) (string, bool, error) { return "", false, boom }, false, boom},
	} {
		s := &snapshots{path: tc.path, origin: tc.origin, log: quiet, savedAt: -1, restoredAt: -1}
		v := view.New(token.DefaultIssuer, view.Hooks{})
		got, err := s.restore(context.Background(), v, tc.relayed)
		if got != tc.restored || !errors.Is(err, tc.err) {
			t.Errorf("%s: restored %v, %v; want %v, %v", tc.name, got, err, tc.restored, tc.err)
			continue
		}
		if tc.restored && (s.restoredAt != 1 || v.Position() != 1) {
			t.Errorf("%s: restored at %d, view at %d; want 1", tc.name, s.restoredAt, v.Position())
		}
		if !tc.restored && s.restoredAt != -1 {
			t.Errorf("%s: restoredAt %d for a snapshot not used", tc.name, s.restoredAt)
		}
	}
}

// The fact queue publishes in order, one batch per flush, never blocks the data path, drops (and
// counts) what exceeds its bound, and Stop publishes what is queued.
func TestFactQueue(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []int64
	release := make(chan struct{})
	publish := func(_ context.Context, facts ...nodebus.Fact) error {
		<-release
		mu.Lock()
		defer mu.Unlock()
		for _, f := range facts {
			got = append(got, f.Event.(domain.UsageRecorded).Requests)
		}
		return nil
	}
	q := NewFactQueue(publish, quiet)
	q.limit = 100
	// Nothing consumes yet (as when the publisher is stuck): pushing does not block, and beyond the
	// bound facts are dropped and counted.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			q.UsageRecorded(domain.UsageRecorded{Requests: int64(i)})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("pushing facts blocked")
	}
	q.mu.Lock()
	held, dropped := len(q.queue), q.dropped
	q.mu.Unlock()
	if held != q.limit || dropped != 1000-q.limit {
		t.Fatalf("held %d, dropped %d of 1000 with a bound of %d", held, dropped, q.limit)
	}
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(release)
	q.Stop()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != q.limit || got[0] != 0 {
		t.Fatalf("published %d facts from %v, want the first %d", len(got), got[:min(1, len(got))], q.limit)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("published out of order at %d: %v", i, got[i-1:i+1])
		}
	}
	lifecycletest.StartStopStress(t, 20, func() lifecycletest.Component {
		q := NewFactQueue(func(context.Context, ...nodebus.Fact) error { return nil }, quiet)
		return lifecycletest.Component{Start: q.Start, Stop: q.Stop}
	})
}

// Facts that come together go out in a few publications (one per FactLinger), all of them and
// in order; a fact after a quiet spell goes out at once.
func TestFactQueueLingersBetweenPublications(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sizes []int
	var got []int64
	var at []time.Time
	q := NewFactQueue(func(_ context.Context, facts ...nodebus.Fact) error {
		mu.Lock()
		defer mu.Unlock()
		sizes, at = append(sizes, len(facts)), append(at, time.Now())
		for _, f := range facts {
			got = append(got, f.Event.(domain.UsageRecorded).Requests)
		}
		return nil
	}, quiet)
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer q.Stop()
	// 400 facts over about 200 ms: without the linger, one publication each.
	began := time.Now()
	for i := range 400 {
		q.UsageRecorded(domain.UsageRecorded{Requests: int64(i)})
		time.Sleep(500 * time.Microsecond)
	}
	spread := time.Since(began)
	poll.Until(t, 5*time.Second, "every fact published", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 400 })
	mu.Lock()
	pubs := len(sizes)
	for i := range got {
		if got[i] != int64(i) {
			mu.Unlock()
			t.Fatalf("fact %d published as %d: out of order", i, got[i])
		}
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < FactLinger-5*time.Millisecond {
			mu.Unlock()
			t.Fatalf("publications %d and %d %s apart, within the linger of %s", i-1, i, gap, FactLinger)
		}
	}
	mu.Unlock()
	if most := int(spread/FactLinger) + 2; pubs > most {
		t.Fatalf("%d publications for facts over %s, at most %d", pubs, spread, most)
	}
	// A quiet spell, then one fact: published at once.
	time.Sleep(2 * FactLinger)
	sent := time.Now()
	q.UsageRecorded(domain.UsageRecorded{Requests: 400})
	poll.Until(t, 5*time.Second, "the lone fact published", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 401 })
	mu.Lock()
	defer mu.Unlock()
	if wait := at[len(at)-1].Sub(sent); wait > FactLinger/2 {
		t.Fatalf("a lone fact after a quiet spell waited %s", wait)
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	t.Parallel()
	err := Config{Name: "Bad Name", Limits: Limits{MaxCallsPerTunnel: -1}, MaxViewLag: -1, LoginURL: "https://tp.example/"}.Validate()
	for _, want := range []string{"DataDir", "node name", "ListenAddr", "NATSURL", "ControlPlane", "limits", "MaxViewLag", "--login-url"} {
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !contains(err.Error(), want) {
			t.Errorf("%v does not mention %s", err, want)
		}
	}
}

// Without --peer-url a node announces its public URL's /v1/peer (and agents' /v1/agent under it):
// a trailing slash is not doubled,
// and a public URL that makes no URL other nodes accept is refused at start, naming --peer-url,
// without what may be a secret in it.
func TestPublicURLMakesThePeerURL(t *testing.T) {
	t.Parallel()
	for public, want := range map[string]string{
		"https://node-0.example/": "wss://node-0.example/v1/peer",
		"http://10.0.0.7:8081":    "ws://10.0.0.7:8081/v1/peer",
		"https://edge.example/n0": "wss://edge.example/n0/v1/peer",
	} {
		if got := wsURL(public, "/v1/peer"); got != want {
			t.Errorf("%s: %s, want %s", public, got, want)
		}
		if got, want := wsURL(public, "/v1/agent"), strings.TrimSuffix(want, "/v1/peer")+"/v1/agent"; got != want {
			t.Errorf("%s: agents at %s, want %s", public, got, want)
		}
		if err := (Config{PublicURL: public}).Validate(); err != nil && contains(err.Error(), "--public-url") {
			t.Errorf("%s refused: %v", public, err)
		}
	}
	for _, bad := range []string{"ftp://node-0.example", "node-0:8081", "https://node:s3cret@node-0.example", "https://node-0.example/?t=s3cret", "https:///x"} {
		err := Config{PublicURL: bad}.Validate()
		if err == nil || !contains(err.Error(), "--public-url") || !contains(err.Error(), "--peer-url") || contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v", bad, err)
		}
		if err := (Config{PublicURL: bad, PeerURL: "ws://10.0.0.7:8081/v1/peer"}).Validate(); err != nil && contains(err.Error(), "--public-url") {
			t.Errorf("%s with --peer-url: %v", bad, err)
		}
	}
}

// A NATS URL that does not parse is refused at start, and the error does not show its password.
func TestNATSURLValidateHidesThePassword(t *testing.T) {
	t.Parallel()
	err := Config{NATSURL: "tls://node-a:s3cret@nats:42x2"}.Validate()
	if err == nil || !contains(err.Error(), "--nats-url") || contains(err.Error(), "s3cret") {
		t.Fatalf("%v", err)
	}
	if err := (Config{NATSURL: "tls://node-a:s3cret@nats:4222"}).Validate(); err != nil && contains(err.Error(), "--nats-url") {
		t.Fatalf("a good --nats-url: %v", err)
	}
}

// --login-url needs --base-domain: the browser's session is bound to a tunnel host.
func TestLoginURLNeedsBaseDomain(t *testing.T) {
	t.Parallel()
	if err := (Config{LoginURL: "https://tp.example"}).Validate(); err == nil || !contains(err.Error(), "--login-url needs --base-domain") {
		t.Fatalf("%v", err)
	}
	if err := (Config{LoginURL: "https://tp.example", BaseDomain: "nodes.example"}).Validate(); err != nil && contains(err.Error(), "--login-url") {
		t.Fatalf("a good --login-url: %v", err)
	}
}

// --peer-url is what other nodes dial to forward calls here, so it must be one they accept from a
// route entry (ws or wss, a host, nothing else) and name this node's /v1/peer. A refused one is
// shown without what may be a credential pasted into the wrong flag.
func TestPeerURLValidate(t *testing.T) {
	t.Parallel()
	for _, good := range []string{
		"ws://tunnelplane-node-0.tunnelplane-node-peers.default.svc:8081/v1/peer",
		"wss://10.0.0.7:8443/v1/peer",
		"ws://[fd00::7]:8081/v1/peer",
	} {
		if err := (Config{PeerURL: good}).Validate(); err != nil && contains(err.Error(), "--peer-url") {
			t.Errorf("%s refused: %v", good, err)
		}
	}
	for _, bad := range []string{
		"http://node-0:8081/v1/peer",
		"https://node-0/v1/peer",
		"ws:///v1/peer",
		"ws://node-0:8081/",
		"ws://node-0:8081/v1/agent",
		"ws://node:s3cret@node-0:8081/v1/peer",
		"ws://s3cret@node-0:8081/v1/peer",
		"ws://node-0:8081/v1/peer?token=s3cret",
		"ws://node-0:8081/v1/peer#s3cret",
		"ws:s3cret",
		"ws://node-0:8081/v1/peer\x00s3cret",
		"ws://node-0/" + strings.Repeat("s3cret", 100) + "/v1/peer",
		"node-0:8081",
	} {
		err := (Config{PeerURL: bad}).Validate()
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !contains(err.Error(), "--peer-url") {
			t.Errorf("%s accepted: %v", bad, err)
			continue
		}
		if contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows what may be a secret: %v", bad, err)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestLimitsReachTheNode(t *testing.T) {
	t.Parallel()
	var c node.Config
	Limits{MaxCallsPerTunnel: 7, ChannelOpenTimeout: 3 * time.Second, MaxConnsPerSource: 9, AgentKeepaliveTimeout: 2 * time.Second,
		FailoverWait: 4 * time.Second, MaxQueuedPerTunnel: 11}.apply(&c)
	if c.MaxCallsPerTunnel != 7 || c.ChannelOpenTimeout != 3*time.Second || c.MaxConnsPerSource != 9 || c.KeepaliveTimeout != 2*time.Second ||
		c.FailoverWait != 4*time.Second || c.MaxQueuedPerTunnel != 11 {
		t.Fatalf("node config %+v", c)
	}
	for _, l := range []Limits{{AgentKeepaliveTimeout: -time.Second}, {MaxQueuedPerTunnel: -1}} {
		if err := (Config{Limits: l}).Validate(); err == nil || !contains(err.Error(), "limits must not be negative") {
			t.Fatalf("negative limit %+v: %v", l, err)
		}
	}
	// A negative FailoverWait is no mistake: calls do not wait (--failover-wait 0).
	if err := (Config{Limits: Limits{FailoverWait: -1}}).Validate(); err != nil && contains(err.Error(), "limits") {
		t.Fatalf("FailoverWait off: %v", err)
	}
}

// A node id given before the first start (its NATS credential names it) is the one the node
// keeps; a data dir that holds another id is refused, not silently reused, and so is a non-UUID.
func TestLoadIdentityKeepsTheGivenID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const want = "0193a5f2-7c1e-7b3a-9d2e-4f5a6b7c8d9e"
	id, err := LoadIdentity(dir, want)
	if err != nil || id.ID != want {
		t.Fatalf("first start: %v %v", id, err)
	}
	again, err := LoadIdentity(dir, "")
	if err != nil || again.ID != want || again.Fingerprint() != id.Fingerprint() {
		t.Fatalf("restart without the id: %+v %v", again, err)
	}
	if _, err := LoadIdentity(dir, "0193a5f2-7c1e-7b3a-9d2e-000000000000"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("another id on the same data dir: %v", err)
	}
	if _, err := LoadIdentity(t.TempDir(), "node-0"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("not a UUID: %v", err)
	}
}
