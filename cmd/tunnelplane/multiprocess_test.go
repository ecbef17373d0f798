package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// A node started on its own (as `tunnelplane node` does) enrolls through the control plane's API
// with a superadmin token, learns tunnels from NATS, and carries an agent's tunnel.
// It runs against an embedded NATS server and against this machine's (the Debian package,
// 2.9.x), under a cluster name of its own.
func TestStandaloneNodeEnrollsThroughTheAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		nats, err := controlbus.StartEmbedded(context.Background(), controlbus.EmbeddedConfig{Dir: t.TempDir(), Host: "127.0.0.1", Port: -1, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nats.Shutdown)
		standaloneNode(t, nats.ClientURL(), "")
	})
	t.Run("external", func(t *testing.T) {
		t.Parallel()
		url, names := natstest.External(t)
		standaloneNode(t, url, names.Cluster())
	})
}

func standaloneNode(t *testing.T, natsURL, cluster string) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dbURL := pgtest.NewEmptyDatabase(t)
	control := &globals{databaseURL: dbURL, dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quiet}
	cp, err := startControlPlane(ctx, control, controlPlaneOptions{APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	cb, err := controlapp.StartBus(ctx, controlapp.BusConfig{NATSURL: natsURL, Cluster: cluster, Store: cp.Log.Store, Service: cp.Service, Registerer: cp.Registry, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cb.Stop)
	root := lastLine(tp(t, "admin", "token", "create", "--user", "root", "--role", "superadmin", "--database-url", dbURL, "--data-dir", control.dataDir).stdout)

	// The node has its own data dir, no database and no user's token: a single-use node
	// enrollment token, which a superadmin issued through the CLI.
	enr := tp(t, "admin", "nodes", "enrollment-tokens", "create", "--ttl", "10m", "--api-url", cp.URL, "--token", root)
	if enr.code != 0 || !strings.HasPrefix(lastLine(enr.stdout), "tpe_") {
		t.Fatalf("enrollment-tokens create: %d %s %s", enr.code, enr.stdout, enr.stderr)
	}
	nodeG := &globals{dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quiet}
	api := nodeapp.NewRESTControlPlane(cp.URL, "").WithEnrollmentToken(lastLine(enr.stdout))
	rn, err := startNode(ctx, nodeG, nodeapp.Config{Name: "edge-1", ListenAddr: "127.0.0.1:0", NATSURL: natsURL, Cluster: cluster, ControlPlane: api})
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	// A restart, with the token used up, keeps the node's identity and its enrollment.
	id := rn.ID.ID
	rn.Close()
	rn, err = startNode(ctx, nodeG, nodeapp.Config{Name: "edge-1", ListenAddr: "127.0.0.1:0", NATSURL: natsURL, Cluster: cluster, ControlPlane: api})
	if err != nil {
		t.Fatalf("node restart: %v", err)
	}
	t.Cleanup(rn.Close)
	if rn.ID.ID != id {
		t.Fatalf("node id changed across a restart: %s → %s", id, rn.ID.ID)
	}
	// Each process reported its start, signed with the node's key.
	poll.Until(t, 10*time.Second, "two node.started stored", func() bool {
		recs, err := cp.Log.Store.ReadStream(ctx, domain.NodeFactsStream(id), 1, 100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range recs {
			if r.Type == domain.TypeNodeStarted && r.KeyID == rn.ID.EventKey.ID() {
				n++
			}
		}
		return n == 2
	})

	// An org, a tunnel to an upstream and an agent token, through the control plane.
	sys := commands.WithActor(ctx, commands.Actor{ID: "root"})
	org, err := cp.Service.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "acme", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	up := &http.Server{Handler: demo.Handler(demo.Config{TokenDelay: time.Millisecond})}
	upLn := listen(t)
	go func() { _ = up.Serve(upLn) }()
	t.Cleanup(func() { _ = up.Close() })
	upstream := "http://" + upLn.Addr().String()
	alice := commands.WithActor(ctx, commands.Actor{ID: "alice"})
	tun, err := cp.Service.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org.ID, Name: "llm", Upstream: upstream})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cp.Service.Handlers.IssueAgentToken.Handle(alice, commands.IssueAgentToken{OrgID: org.ID, TunnelID: tun.ID, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := rn.View.WaitFor(wctx, tok.Position); err != nil {
		t.Fatalf("the node did not learn the tunnel from NATS: %v", err)
	}
	actx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(actx, agent.Config{NodeURL: rn.URL + "/v1/agent", Token: tok.Token, Upstream: upstream, HostKeyFingerprint: rn.Fingerprint, Logger: quiet})
	}()
	t.Cleanup(func() { stop(); <-done })
	poll.Until(t, 10*time.Second, "agent connected", func() bool { return len(rn.Node.Sessions()) == 1 })

	user := lastLine(tp(t, "admin", "token", "create", "--org", "acme", "--user", "alice", "--role", "owner", "--database-url", dbURL, "--data-dir", control.dataDir).stdout)
	// The user token's key reaches the node through the relayed log, like the tunnel did.
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	var status int
	var body string
	poll.Until(t, 10*time.Second, "request through the standalone node", func() bool {
		req, _ := http.NewRequest(http.MethodPost, rn.URL+"/t/llm.acme/api/generate", strings.NewReader(`{"prompt":"one two three"}`))
		req.Header.Set("Authorization", "Bearer "+user)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		status, body = resp.StatusCode, string(b)
		return status == http.StatusOK
	})
	if !strings.Contains(body, `"done":true`) {
		t.Fatalf("%d %s", status, body)
	}

	// A second control plane with another database on the same NATS server would relay its log
	// after this one's, and nodes would fold both: it refuses to start and says what to do.
	other := &globals{databaseURL: pgtest.NewEmptyDatabase(t), dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quiet}
	cp2, err := startControlPlane(ctx, other, controlPlaneOptions{APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp2.Close)
	cb2, err := controlapp.StartBus(ctx, controlapp.BusConfig{NATSURL: natsURL, Cluster: cluster, Store: cp2.Log.Store, Service: cp2.Service, Logger: quiet})
	if err == nil {
		cb2.Stop()
		t.Fatal("a control plane with another log started on a NATS server holding this one's")
	}
	if !errors.Is(err, controlbus.ErrForeignStreams) || !strings.Contains(err.Error(), "--cluster") {
		t.Fatalf("refusal: %v", err)
	}
	// A node pointed at this installation's streams by another control plane's log refuses too.
	otherAPI := nodeapp.NewRESTControlPlane(cp2.URL, lastLine(tp(t, "admin", "token", "create", "--user", "root", "--role", "superadmin",
		"--database-url", other.databaseURL, "--data-dir", other.dataDir).stdout))
	if rn2, err := startNode(ctx, &globals{dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quiet},
		nodeapp.Config{Name: "edge-2", ListenAddr: "127.0.0.1:0", NATSURL: natsURL, Cluster: cluster, ControlPlane: otherAPI}); err == nil {
		rn2.Close()
		t.Fatal("a node of another log started on this installation's streams")
	} else if !strings.Contains(err.Error(), "belongs to log") {
		t.Fatalf("node refusal: %v", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
