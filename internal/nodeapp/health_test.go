package nodeapp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// gatedControlPlane is the real control plane as a node sees it, whose answers wait until open
// is closed: the node stays in its start for as long as the test needs to look at it.
type gatedControlPlane struct {
	nodeapp.ControlPlane
	open chan struct{}
}

func (g gatedControlPlane) Log(ctx context.Context) (nodeapp.LogInfo, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nodeapp.LogInfo{}, ctx.Err()
	}
	return g.ControlPlane.Log(ctx)
}

func getJSON(t *testing.T, url string, into any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("%s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// The node's health listener, as Kubernetes probes and the preStop hook use it: /healthz answers
// from the start, /readyz only once the node can serve (started, view caught up, NATS connected,
// not draining), and a drain asked from this host takes the node out of service once, reports
// node.drained, and is refused from elsewhere.
func TestHealthListenerAndDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane, NATS and a node")
	}
	t.Parallel()
	ctx := t.Context()
	quiet := slog.New(slog.DiscardHandler)
	emb, err := controlbus.StartEmbedded(ctx, controlbus.EmbeddedConfig{Dir: filepath.Join(t.TempDir(), "nats"), Port: -1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	cp, err := controlapp.New(controlapp.Config{DatabaseURL: pgtest.NewEmptyDatabase(t), DataDir: t.TempDir(), APIAddr: "127.0.0.1:0",
		NATSURL: emb.ClientURL(), OwnsNATS: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	if err := cp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const actor = "system:health-test"
	if _, err := cp.Service.GrantDirect(commands.WithActor(ctx, commands.Actor{ID: actor}),
		commands.AssignRole{OrgID: domain.PlatformOrg, UserID: actor, Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}

	gate := gatedControlPlane{ControlPlane: &controlapp.LocalControlPlane{Store: cp.Log.Store, Service: cp.Service, Actor: actor}, open: make(chan struct{})}
	n, err := nodeapp.New(nodeapp.Config{DataDir: t.TempDir(), Name: "edge-1", ListenAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0",
		NATSURL: emb.ClientURL(), ControlPlane: gate, DrainTimeout: 5 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	started := make(chan error, 1)
	go func() { started <- n.Start(ctx) }()

	// Starting: alive, not ready, and no drain of a node that serves nothing yet.
	poll.Until(t, 5*time.Second, "healthz answers while the node starts", func() bool {
		resp, err := http.Get(n.HealthURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	var r nodeapp.Readiness
	if code := getJSON(t, n.HealthURL+"/readyz", &r); code != http.StatusServiceUnavailable || r.Ready || !strings.Contains(strings.Join(r.Problems, ";"), "starting") {
		t.Fatalf("readyz while starting: %d %+v", code, r)
	}
	if _, err := nodeapp.RequestDrain(ctx, n.HealthURL[len("http://"):], 5*time.Second); !errors.Is(err, nodeapp.ErrDrainRefused) {
		t.Fatalf("drain while starting: %v", err)
	}

	close(gate.open)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "readyz 200 once started", func() bool {
		return getJSON(t, n.HealthURL+"/readyz", &r) == http.StatusOK && r.Ready && r.View == "ok" && r.NATS == "connected"
	})

	// A view that falls behind what the log held (the lag watch raises its target) is not ready.
	pos := n.View.Position()
	n.View.ReadyAt(pos + 3)
	if code := getJSON(t, n.HealthURL+"/readyz", &r); code != http.StatusServiceUnavailable || r.View != "behind" {
		t.Fatalf("readyz with the view behind: %d %+v", code, r)
	}
	n.View.ReadyAt(pos)
	if code := getJSON(t, n.HealthURL+"/readyz", &r); code != http.StatusOK {
		t.Fatalf("readyz with the view back: %d %+v", code, r)
	}

	// Only this host may drain, and only by POST: the kubelet's probes (GET, from the node's
	// address) cannot.
	h := n.HealthHandler()
	for _, c := range []struct {
		method, remote string
		want           int
	}{{"POST", "10.1.2.3:4567", http.StatusForbidden}, {"POST", "[2001:db8::1]:80", http.StatusForbidden}, {"GET", "127.0.0.1:4567", http.StatusMethodNotAllowed}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(c.method, "/drain", nil)
		req.RemoteAddr = c.remote
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Fatalf("%s /drain from %s: %d, want %d", c.method, c.remote, rec.Code, c.want)
		}
	}
	if n.Node.Draining() {
		t.Fatal("a refused drain drained the node")
	}

	// The preStop hook's request: the node drains, is no longer ready, refuses agents, and says
	// so in the log; a second request (SIGTERM's) gets the same answer at once.
	res, err := nodeapp.RequestDrain(ctx, ":"+n.HealthURL[strings.LastIndex(n.HealthURL, ":")+1:], 10*time.Second)
	if err != nil || !res.Complete || res.AgentsDisconnected != 0 {
		t.Fatalf("drain: %+v %v", res, err)
	}
	if code := getJSON(t, n.HealthURL+"/readyz", &r); code != http.StatusServiceUnavailable || !r.Draining {
		t.Fatalf("readyz after the drain: %d %+v", code, r)
	}
	resp, err := http.Get(n.URL + "/v1/agent")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "node-draining") {
		t.Fatalf("agent endpoint after the drain: %d %s", resp.StatusCode, body)
	}
	if again, err := n.Drain(ctx); err != nil || again != res {
		t.Fatalf("second drain: %+v %v", again, err)
	}
	poll.Until(t, 10*time.Second, "node.drained in the log", func() bool {
		recs, err := cp.Log.Store.ReadStream(ctx, domain.NodeFactsStream(n.ID.ID), 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		drained := 0
		for _, rec := range recs {
			if rec.Type == domain.TypeNodeDrained {
				drained++
			}
		}
		return drained == 1
	})

	// Stopping: not ready while the rest stops; the listener closes with the node.
	n.Close()
	if _, err := http.Get(n.HealthURL + "/healthz"); err == nil {
		t.Fatal("health listener answers after Stop")
	}
}
