package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// fwdCluster is a control plane on this machine's PostgreSQL and NATS (2.9), nodes started in
// process, an organization "acme" owned by alice, and an upstream that answers what the
// forwarding tests ask (fwdUpstream).
type fwdCluster struct {
	t        *testing.T
	ctx      context.Context
	natsURL  string
	cluster  string
	dbURL    string
	cpURL    string
	cp       *controlapp.App
	root     string // a superadmin's token
	alice    string // the owner's user token
	orgID    string
	up       *fwdUpstream
	upURL    string
	client   *http.Client
	failover time.Duration
}

var quietLog = slog.New(slog.DiscardHandler)

func newFwdCluster(t *testing.T, failover time.Duration) *fwdCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	ctx := context.Background()
	natsURL, names := natstest.External(t)
	c := &fwdCluster{t: t, ctx: ctx, natsURL: natsURL, cluster: names.Cluster(), dbURL: pgtest.NewEmptyDatabase(t), failover: failover}
	control := &globals{databaseURL: c.dbURL, dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quietLog}
	cp, err := startControlPlane(ctx, control, controlPlaneOptions{APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	cb, err := controlapp.StartBus(ctx, controlapp.BusConfig{NATSURL: natsURL, Cluster: c.cluster, Store: cp.Log.Store, Service: cp.Service, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cb.Stop)
	c.cp, c.cpURL = cp, cp.URL
	c.root = lastLine(tp(t, "admin", "token", "create", "--user", "root", "--role", "superadmin", "--database-url", c.dbURL, "--data-dir", control.dataDir).stdout)
	org, err := cp.Service.Handlers.CreateOrganization.Handle(c.as("root"), commands.CreateOrganization{Name: "acme", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	c.orgID = org.ID
	c.alice = lastLine(tp(t, "admin", "token", "create", "--org", "acme", "--user", "alice", "--role", "owner", "--database-url", c.dbURL, "--data-dir", control.dataDir).stdout)
	c.up = &fwdUpstream{posts: map[string]int{}}
	srv := &http.Server{Handler: c.up}
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c.upURL = "http://" + ln.Addr().String()
	c.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(c.client.CloseIdleConnections)
	return c
}

func (c *fwdCluster) as(actor string) context.Context {
	return commands.WithActor(c.ctx, commands.Actor{ID: actor})
}

// node starts a node in this process, with a metrics registry of its own.
func (c *fwdCluster) node(name string) (*nodeapp.App, *prometheus.Registry) {
	c.t.Helper()
	reg := prometheus.NewRegistry()
	g := &globals{dataDir: c.t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quietLog}
	rn, err := startNode(c.ctx, g, nodeapp.Config{Name: name, ListenAddr: "127.0.0.1:0", NATSURL: c.natsURL, Cluster: c.cluster,
		ControlPlane: nodeapp.NewRESTControlPlane(c.cpURL, c.root), Registerer: reg, Gatherer: reg,
		Limits: nodeapp.Limits{FailoverWait: c.failover}})
	if err != nil {
		c.t.Fatalf("node %s: %v", name, err)
	}
	c.t.Cleanup(rn.Close)
	return rn, reg
}

// tunnel creates a tunnel to the upstream and returns its id and an agent token, once every
// node's view holds them.
func (c *fwdCluster) tunnel(name string, nodes ...*nodeapp.App) (string, string) {
	c.t.Helper()
	tun, err := c.cp.Service.Handlers.CreateTunnel.Handle(c.as("alice"), commands.CreateTunnel{OrgID: c.orgID, Name: name, Upstream: c.upURL})
	if err != nil {
		c.t.Fatal(err)
	}
	tok, err := c.cp.Service.Handlers.IssueAgentToken.Handle(c.as("alice"), commands.IssueAgentToken{OrgID: c.orgID, TunnelID: tun.ID, TTL: time.Hour})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range nodes {
		wctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
		err := n.View.WaitFor(wctx, tok.Position)
		cancel()
		if err != nil {
			c.t.Fatalf("node did not learn the tunnel: %v", err)
		}
	}
	return tun.ID, tok.Token
}

// agent runs an agent holding the nodes' agent endpoints (one connection each).
func (c *fwdCluster) agent(tok string, urls ...string) {
	c.t.Helper()
	ctx, stop := context.WithCancel(c.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(ctx, agent.Config{NodeURL: urls[0], NodeURLs: urls[1:], Connections: len(urls), Token: tok, Upstream: c.upURL,
			InsecureSkipPin: true, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: quietLog})
	}()
	c.t.Cleanup(func() { stop(); <-done })
}

// call sends a request for tunnel name of acme to the node at base.
func (c *fwdCluster) call(base, method, name, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, base+"/t/"+name+".acme"+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.alice)
	return c.client.Do(req)
}

// get is call for a GET whose body is read whole.
func (c *fwdCluster) get(base, name, path string) (int, string) {
	resp, err := c.call(base, http.MethodGet, name, path, nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// served waits until a GET through the node at base reaches the upstream.
func (c *fwdCluster) served(base, name string) {
	c.t.Helper()
	poll.Until(c.t, 20*time.Second, "a call through "+base+" served", func() bool {
		status, body := c.get(base, name, "/hello")
		return status == http.StatusOK && body == "hello"
	})
}

// fwdUpstream answers GET /hello, an event stream at /sse (5 events, 150 ms apart), a WebSocket
// echo at /ws, and POST /sum with the SHA-256 of the body, counting POSTs by X-Request-Id.
type fwdUpstream struct {
	mu    sync.Mutex
	posts map[string]int
}

const sseEvents, sseGap = 5, 150 * time.Millisecond

func (u *fwdUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/hello":
		io.WriteString(w, "hello")
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range sseEvents {
			if i > 0 {
				time.Sleep(sseGap) // the stream's own pace, what the caller must see
			}
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	case "/ws":
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(mt, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	case "/sum":
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if id := r.Header.Get("X-Request-Id"); id != "" {
			u.mu.Lock()
			u.posts[id]++
			u.mu.Unlock()
		}
		io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
	default:
		http.NotFound(w, r)
	}
}

// duplicates lists the request ids the upstream saw more than once.
func (u *fwdUpstream) duplicates() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for id, n := range u.posts {
		if n > 1 {
			out = append(out, fmt.Sprintf("%s×%d", id, n))
		}
	}
	return out
}

// counter reads a counter of a node's registry (the sum over label sets matching labels).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	return metricSum(t, reg, name, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() }, labels...)
}

// regGauge reads a gauge of a node's registry.
func regGauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	return metricSum(t, reg, name, func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}

func metricSum(t *testing.T, reg *prometheus.Registry, name string, value func(*dto.Metric) float64, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func wsURL(base string) string { return strings.Replace(base, "http", "ws", 1) }
