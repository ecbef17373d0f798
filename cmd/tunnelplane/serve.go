package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/internal/devdb"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

type serveOptions struct {
	cp         controlPlaneOptions
	nodeAddr   string
	natsAddr   string
	baseDomain string
	nodeName   string
	healthAddr string
	drain      time.Duration
	demo       bool
	demoDelay  time.Duration
	limits     nodeLimits
	// maxViewLag and lagSample tune the node's view staleness check (zero: the defaults).
	maxViewLag, lagSample time.Duration
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
			defer governProcs(cmd.Context())()
			stopTracing, err := startTracing(cmd.Context(), g, "tunnelplane")
			if err != nil {
				return err
			}
			defer stopTracing()
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
	fs.StringVar(&o.healthAddr, "health-addr", envDefault("HEALTH_ADDR", ""), "the node's /healthz, /readyz and /drain listener, as for tunnelplane node; empty: none (env TUNNELPLANE_HEALTH_ADDR)")
	drainTimeoutFlag(fs, &o.drain, &envErrs)
	fs.BoolVar(&o.demo, "demo", false, "start a demo upstream, tunnel and agent, and print curl commands")
	fs.DurationVar(&o.demoDelay, "demo-token-delay", 50*time.Millisecond, "delay between the demo upstream's streamed tokens")
	return cmd
}

func runServe(ctx context.Context, g *globals, o serveOptions) error {
	sv, err := startServe(ctx, g, o)
	if err != nil {
		return err
	}
	defer sv.Stop(context.WithoutCancel(ctx))
	select {
	case <-ctx.Done():
		g.log.Info("serve stopping", "reason", stopReason(ctx))
		// As a node does: agents move, calls in flight finish (at most --drain-timeout).
		if _, err := sv.Node.Drain(context.WithoutCancel(ctx)); err != nil {
			g.log.Warn("node not drained", "error", err)
		}
	case err := <-sv.CP.Done():
		if err != nil {
			return err
		}
	}
	return nil
}

// startServe runs serve on the process's database, data dir and logger, and prints where
// everything is (and the demo's token and curl commands).
func startServe(ctx context.Context, g *globals, o serveOptions) (*serveapp.App, error) {
	host, portStr, err := net.SplitHostPort(o.natsAddr)
	if err != nil {
		return nil, fmt.Errorf("--nats-addr %q: %w", o.natsAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("--nats-addr %q: bad port", o.natsAddr)
	}
	srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
	if err != nil {
		return nil, err
	}
	cc := o.cp
	cc.DatabaseURL, cc.DataDir, cc.KEKFile, cc.Version = srv.URL, g.dataDir, g.kekFile, version
	nc := nodeConfig(o.nodeName, o.nodeAddr, o.baseDomain, o.limits, o.maxViewLag, o.lagSample)
	nc.TokenLeeway, nc.HealthAddr, nc.DrainTimeout = cc.TokenLeeway, o.healthAddr, o.drain
	if cc.OIDCIssuer != "" {
		nc.LoginURL = cc.PublicURL // the embedded node sends browsers to its own control plane
	}
	sv, err := serveapp.New(serveapp.Config{Control: cc, NATSHost: host, NATSPort: port, Node: nc,
		Demo: o.demo, DemoDelay: o.demoDelay, Version: version, Logger: g.log})
	if err != nil {
		return nil, err
	}
	if err := sv.Start(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(g.stdout, "tunnelplane serve is running\n  admin API:  %s/api/v1\n  node:       %s (agents: %s/v1/agent)\n  node host key: %s\n  NATS:       %s\n",
		sv.CP.URL, sv.Node.URL, strings.Replace(sv.Node.URL, "http", "ws", 1), sv.Node.Fingerprint, sv.NATS.ClientURL())
	if d := sv.Demo; d != nil {
		fmt.Fprintf(g.stdout, `
Demo: tunnel "llm" of organization "demo" → %s (a demo model that streams NDJSON tokens)

User token (user "demo", owner of organization "demo"; valid 24h):
%s

Try:

  curl -sN -H "Authorization: Bearer %s" %s/api/generate -d '{"prompt":"why is the sky blue","options":{"num_predict":16}}'

  curl -s -H "Authorization: Bearer %s" "%s/api/v1/tunnels?org=demo"

Stop with Ctrl-C.
`, d.UpstreamURL, d.UserToken, d.UserToken, d.TunnelURL, d.UserToken, sv.CP.URL)
	} else {
		fmt.Fprintf(g.stdout, "  bootstrap:  TOKEN=$(tunnelplane admin token create --user root --role superadmin --data-dir %s | tail -1)\n", g.dataDir)
	}
	return sv, nil
}
