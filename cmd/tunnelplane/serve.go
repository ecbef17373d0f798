package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/bus"
	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// serveActor is who the all-in-one server acts as when it enrolls its own node and sets up the
// demo. It is a superadmin, granted through an event like any other role.
const serveActor = "system:serve"

type serveOptions struct {
	cp         controlPlaneOptions
	nodeAddr   string
	natsAddr   string
	baseDomain string
	nodeName   string
	demo       bool
	demoDelay  time.Duration
	limits     nodeLimits
}

func newServeCommand(g *globals) *cobra.Command {
	var o serveOptions
	var envErrs []error
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run everything in one process: embedded NATS, control plane, one node (and a demo tunnel)",
		Long: `serve runs the all-in-one tunnelplane: an embedded NATS server with JetStream (data under
<data-dir>/nats), the control plane (admin API, projections, audit, the ingester of node events,
the relay of the log to nodes and the node registry) and one data-plane node that enrolls itself.
With --demo it also starts a demo upstream that streams NDJSON tokens like a local LLM server, a
tunnel "llm" in organization "demo" with an agent connected to it through the node, and prints a
user token and curl commands that work as printed. Ctrl-C stops everything cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(envErrs) > 0 {
				return errors.Join(envErrs...)
			}
			tuneGC()
			governProcs(cmd.Context())
			return runServe(cmd.Context(), g, o)
		},
	}
	fs := cmd.Flags()
	controlFlags(fs, &o.cp, &envErrs)
	fs.StringVar(&o.nodeAddr, "node-addr", envDefault("NODE_ADDR", "127.0.0.1:8081"), "node listen address: agents (/v1/agent) and ingress (env TUNNELPLANE_NODE_ADDR)")
	fs.StringVar(&o.natsAddr, "nats-addr", envDefault("NATS_ADDR", "127.0.0.1:14222"), "embedded NATS listen address (env TUNNELPLANE_NATS_ADDR)")
	fs.StringVar(&o.baseDomain, "base-domain", envDefault("BASE_DOMAIN", "localhost"), "host routing: <tunnel>.<org>.<base-domain> (env TUNNELPLANE_BASE_DOMAIN)")
	fs.StringVar(&o.nodeName, "node-name", envDefault("NODE_NAME", "node-1"), "name of the embedded node (env TUNNELPLANE_NODE_NAME)")
	nodeLimitFlags(fs, &o.limits, &envErrs)
	fs.BoolVar(&o.demo, "demo", false, "start a demo upstream, tunnel and agent, and print curl commands")
	fs.DurationVar(&o.demoDelay, "demo-token-delay", 50*time.Millisecond, "delay between the demo upstream's streamed tokens")
	return cmd
}

func runServe(ctx context.Context, g *globals, o serveOptions) error {
	sv, err := startServe(ctx, g, o)
	if err != nil {
		return err
	}
	defer sv.Stop()
	select {
	case <-ctx.Done():
		g.log.Info("serve stopping", "reason", stopReason(ctx))
	case err := <-sv.CP.Done():
		if err != nil {
			return err
		}
	}
	return nil
}

// served is everything `tunnelplane serve` runs.
type served struct {
	NATS *bus.Embedded
	CP   *controlPlane
	Bus  *controlBus
	Node *runningNode
	// Demo is set with --demo.
	Demo *demoSetup
	stop []func()
}

// Stop stops everything in reverse order of start. Safe to call twice.
func (sv *served) Stop() {
	for i := len(sv.stop) - 1; i >= 0; i-- {
		sv.stop[i]()
	}
	sv.stop = nil
}

func startServe(ctx context.Context, g *globals, o serveOptions) (_ *served, err error) {
	host, portStr, err := net.SplitHostPort(o.natsAddr)
	if err != nil {
		return nil, fmt.Errorf("--nats-addr %q: %w", o.natsAddr, err)
	}
	var port int
	if _, err := fmt.Sscanf(portStr, "%d", &port); err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("--nats-addr %q: bad port", o.natsAddr)
	}
	if port == 0 {
		port = -1 // pick a free one
	}
	sv := &served{}
	defer func() {
		if err != nil {
			sv.Stop()
		}
	}()
	if err := initLog(ctx, g, false); err != nil {
		return nil, err
	}
	if sv.NATS, err = bus.StartEmbedded(ctx, bus.EmbeddedConfig{Dir: filepath.Join(g.dataDir, "nats"), Host: host, Port: port, Logger: g.log}); err != nil {
		return nil, err
	}
	sv.stop = append(sv.stop, sv.NATS.Shutdown)
	if sv.CP, err = startControlPlane(ctx, g, o.cp); err != nil {
		return nil, err
	}
	sv.stop = append(sv.stop, sv.CP.Stop)
	if sv.Bus, err = startControlBus(ctx, g.log, sv.CP.Log.Store, sv.CP.Service, sv.NATS.ClientURL(), true, sv.CP.Registry); err != nil {
		return nil, err
	}
	sv.stop = append(sv.stop, sv.Bus.Stop)
	sv.CP.API.SetLiveNodes(sv.Bus.Live)

	sys := commands.WithActor(ctx, commands.Actor{ID: serveActor})
	if _, err := sv.CP.Service.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: serveActor, Role: domain.RoleSuperadmin}); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	cp := sv.CP
	if sv.Node, err = startNode(ctx, g, nodeOptions{
		Name: o.nodeName, ListenAddr: o.nodeAddr, BaseDomain: o.baseDomain, NATSURL: sv.NATS.ClientURL(),
		Registerer: cp.Registry, Gatherer: cp.Registry, Version: version, Limits: o.limits,
		Log: storeLogInfo(cp.Log.Store),
		Enroll: func(ctx context.Context, c commands.EnrollNode) error {
			_, err := cp.Service.Handlers.EnrollNode.Handle(commands.WithActor(ctx, commands.Actor{ID: serveActor}), c)
			return err
		},
	}); err != nil {
		return nil, err
	}
	sv.stop = append(sv.stop, sv.Node.Stop)

	fmt.Fprintf(g.stdout, "tunnelplane serve is running\n  admin API:  %s/api/v1\n  node:       %s (agents: %s/v1/agent)\n  node host key: %s\n  NATS:       %s\n",
		cp.URL, sv.Node.URL, strings.Replace(sv.Node.URL, "http", "ws", 1), sv.Node.Fingerprint, sv.NATS.ClientURL())
	if o.demo {
		if sv.Demo, err = startDemo(ctx, g, cp, sv.Node, o); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		sv.stop = append(sv.stop, sv.Demo.Stop)
	} else {
		fmt.Fprintf(g.stdout, "  bootstrap:  TOKEN=$(tunnelplane admin token create --user root --role superadmin --data-dir %s | tail -1)\n", g.dataDir)
	}
	return sv, nil
}

// startDemo makes (or finds) organization "demo" with tunnel "llm" to a demo upstream, connects an
// agent through the node, and prints a token and curl commands.
// demoSetup is the demo's upstream, tunnel and agent.
type demoSetup struct {
	OrgID, TunnelID string
	UpstreamURL     string
	UserToken       string
	AgentToken      string
	stop            func()
}

// Stop stops the agent and the upstream.
func (d *demoSetup) Stop() { d.stop() }

func startDemo(ctx context.Context, g *globals, cp *controlPlane, rn *runningNode, o serveOptions) (*demoSetup, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h, err := demo.New(demo.Config{TokenDelay: o.demoDelay, Logger: g.log})
	if err != nil {
		return nil, err
	}
	upstream := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = upstream.Serve(ln) }()
	upstreamURL := "http://" + ln.Addr().String()

	sys := commands.WithActor(ctx, commands.Actor{ID: serveActor})
	svc := cp.Service
	pool := cp.Log.Pool
	orgID, err := demoOrg(ctx, sys, cp)
	if err != nil {
		return nil, err
	}
	var tunnelID string
	err = pool.QueryRow(ctx, `SELECT tunnel_id::text FROM tunnels WHERE org_id = $1 AND name = 'llm' AND state = 'active'`, orgID).Scan(&tunnelID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		res, err := svc.Handlers.CreateTunnel.Handle(commands.WithActor(ctx, commands.Actor{ID: "demo"}), commands.CreateTunnel{OrgID: orgID, Name: "llm", Upstream: upstreamURL})
		if err != nil {
			return nil, err
		}
		tunnelID = res.ID
	case err != nil:
		return nil, err
	default:
		// The demo upstream listens on a new port each run.
		if _, err := svc.Handlers.UpdateTunnel.Handle(sys, commands.UpdateTunnel{OrgID: orgID, TunnelID: tunnelID, Upstream: &upstreamURL}); err != nil {
			return nil, err
		}
	}
	issued, err := svc.Handlers.IssueAgentToken.Handle(sys, commands.IssueAgentToken{OrgID: orgID, TunnelID: tunnelID, TTL: 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	// Let the node's view learn the tunnel and the token before the agent dials.
	head, err := cp.Log.Store.Head(ctx)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rn.View.WaitFor(wctx, head-1); err != nil {
		return nil, fmt.Errorf("the node did not learn the demo tunnel: %w", err)
	}

	actx, stopAgent := context.WithCancel(context.WithoutCancel(ctx))
	agentDone := make(chan struct{})
	connected := make(chan struct{}, 1)
	go func() {
		defer close(agentDone)
		_ = agent.Run(actx, agent.Config{NodeURL: rn.URL + "/v1/agent", Token: issued.Token, Upstream: upstreamURL,
			HostKeyFingerprint: rn.Fingerprint, Version: version, Logger: g.log,
			OnState: func(s agent.State, detail string) {
				g.log.Info("demo agent", "state", s.String(), "detail", detail)
				if s == agent.StateConnected {
					select {
					case connected <- struct{}{}:
					default:
					}
				}
			}})
	}()
	select {
	case <-connected:
	case <-wctx.Done():
		stopAgent()
		<-agentDone
		return nil, errors.New("the demo agent did not connect within 30s")
	}

	user, err := token.MintUser(svc.TokenKey(), token.DefaultIssuer, "demo", "Demo user", 24*time.Hour, time.Now())
	if err != nil {
		stopAgent()
		return nil, err
	}
	path := rn.URL + "/t/llm.demo"
	fmt.Fprintf(g.stdout, `
Demo: tunnel "llm" of organization "demo" → %s (a demo LLM that streams NDJSON tokens)
Try (the token is valid for 24h; it belongs to user "demo", the owner of the organization):

  curl -sN -H "Authorization: Bearer %s" %s/api/generate -d '{"prompt":"why is the sky blue","options":{"num_predict":16}}'

  curl -s -H "Authorization: Bearer %s" "%s/api/v1/tunnels?org=demo"

Stop with Ctrl-C.
`, upstreamURL, user, path, user, cp.URL)
	return &demoSetup{OrgID: orgID, TunnelID: tunnelID, UpstreamURL: upstreamURL, UserToken: user, AgentToken: issued.Token, stop: func() {
		stopAgent()
		<-agentDone
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = upstream.Shutdown(ctx)
	}}, nil
}

// demoOrg finds or creates organization "demo" owned by user "demo".
func demoOrg(ctx, sys context.Context, cp *controlPlane) (string, error) {
	var orgID string
	err := cp.Log.Pool.QueryRow(ctx, `SELECT org_id::text FROM orgs WHERE name = 'demo'`).Scan(&orgID)
	if err == nil {
		return orgID, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	res, err := cp.Service.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "demo", Owner: "demo"})
	if errors.Is(err, domain.ErrConflict) {
		// Created a moment ago and not yet in the read model.
		if err := cp.Runner.WaitFor(ctx, mustHead(ctx, cp)-1, projections.Orgs); err != nil {
			return "", err
		}
		return demoOrg(ctx, sys, cp)
	}
	if err != nil {
		return "", err
	}
	if err := cp.Runner.WaitFor(ctx, res.Position, projections.Orgs, projections.Tunnels, projections.RoleAssignments); err != nil {
		return "", err
	}
	return res.ID, nil
}

func mustHead(ctx context.Context, cp *controlPlane) uint64 {
	h, err := cp.Log.Store.Head(ctx)
	if err != nil || h == 0 {
		return 1
	}
	return h
}

// storeLogInfo is what a node in this process learns of the log: origin and genesis hash (fixed
// for a log, read once) and the size now (the node asks every few seconds).
func storeLogInfo(st *eventstore.Store) func(context.Context) (LogInfo, error) {
	var fixed LogInfo
	return func(ctx context.Context) (LogInfo, error) {
		if fixed.Origin == "" {
			origin, err := st.Origin(ctx)
			if err != nil {
				return LogInfo{}, err
			}
			genesis, err := st.GenesisHash(ctx)
			if err != nil {
				return LogInfo{}, err
			}
			fixed = LogInfo{Origin: origin, GenesisHash: genesis}
		}
		info := fixed
		var err error
		info.Size, err = st.Head(ctx)
		return info, err
	}
}
