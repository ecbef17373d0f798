package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
)

func newNodeCommand(g *globals) *cobra.Command {
	var o nodeapp.Config
	var controlURL, adminToken, enrollmentToken, identityFiles string
	var envErrs []error
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a data-plane node: agents dial it, callers reach tunnels through it",
		Long: `node runs one data-plane node. It keeps its id, SSH host key and event key in <data-dir>/node,
enrolls itself through the control plane's API on first start with a node enrollment token
(--enrollment-token; a superadmin issues one with "admin nodes enrollment-tokens create": it
enrolls a node and can do nothing else, expires, and is single-use by default),
learns tunnels, roles and keys from the event stream on NATS, reports connections and usage as
events signed with its own key (spooled on disk while NATS is away), obeys disconnect and drain
commands and heartbeats into the node registry. It holds no database credentials.

With --health-addr it serves /healthz (alive), /readyz (200 only when it can serve: started, view
caught up with the log, NATS connected, not draining) and /drain (POST, from this host only) on a
listener of their own. SIGINT or SIGTERM drain the node first: agents are told to move, no new
calls are routed, calls in flight may finish until --drain-timeout; then it stops. "tunnelplane
node drain" (a Kubernetes preStop hook) does the same drain ahead of the signal.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			errs := envErrs
			if identityFiles != "" {
				if err := readIdentityFiles(identityFiles, &o.NodeID, &o.NATSURL, &enrollmentToken); err != nil {
					errs = append(errs, err)
				}
			} else if o.NATSURL == "" {
				errs = append(errs, errors.New("--nats-url is required (env TUNNELPLANE_NATS_URL)"))
			}
			if controlURL == "" {
				errs = append(errs, errors.New("--control-url is required (env TUNNELPLANE_API_URL)"))
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			tuneGC()
			defer governProcs(ctx)()
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			o.Registerer, o.Gatherer, o.Version = reg, reg, version
			if enrollmentToken != "" && !strings.HasPrefix(enrollmentToken, "tpe_") {
				return errors.New("--enrollment-token: not a node enrollment token (they start with tpe_; issue one with `tunnelplane admin nodes enrollment-tokens create`)")
			}
			o.ControlPlane = nodeapp.NewRESTControlPlane(controlURL, adminToken).WithEnrollmentToken(enrollmentToken)
			stopTracing, err := startTracing(ctx, g, "tunnelplane-node")
			if err != nil {
				return err
			}
			defer stopTracing()
			rn, err := startNode(ctx, g, o)
			if err != nil {
				return err
			}
			defer rn.Stop(context.WithoutCancel(ctx))
			fmt.Fprintf(g.stdout, "node %s running at %s\n  agents: %s/v1/agent\n  host key: %s\n", rn.ID.ID, rn.URL,
				strings.Replace(rn.URL, "http", "ws", 1), rn.Fingerprint)
			<-ctx.Done()
			g.log.Info("node stopping", "reason", stopReason(ctx))
			// Done once: after a preStop hook's drain this returns its result at once.
			if res, err := rn.Drain(context.WithoutCancel(ctx)); err != nil {
				g.log.Warn("node not drained", "error", err)
			} else if !res.Complete {
				g.log.Warn("node drained: calls still in flight at --drain-timeout were cut", "agents_disconnected", res.AgentsDisconnected)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	nodeLimitFlags(fs, &o.Limits, &envErrs)
	tokenLeewayFlag(fs, &o.TokenLeeway, &envErrs)
	fs.StringVar(&o.Name, "name", envDefault("NODE_NAME", "node-1"), "node name (env TUNNELPLANE_NODE_NAME)")
	fs.StringVar(&o.ListenAddr, "node-addr", envDefault("NODE_ADDR", "127.0.0.1:8081"), "listen address for agents and ingress (env TUNNELPLANE_NODE_ADDR)")
	fs.StringVar(&o.PublicURL, "public-url", envDefault("NODE_PUBLIC_URL", ""), "how agents and callers reach this node (env TUNNELPLANE_NODE_PUBLIC_URL; default http://<node-addr>)")
	fs.StringVar(&o.PeerURL, "peer-url", envDefault("NODE_PEER_URL", ""),
		"how other nodes reach this node's /v1/peer to forward calls, ws:// or wss:// (env TUNNELPLANE_NODE_PEER_URL; default the --public-url's, which behind one load balancer is every node's: give each node its own)")
	fs.StringVar(&identityFiles, "identity-files", envDefault("NODE_IDENTITY_FILES", ""),
		"read the node id, NATS URL and (optional) enrollment token from the files <value>.node-id, <value>.nats-url and <value>.enrollment-token instead of --node-id, --nats-url and --enrollment-token (env TUNNELPLANE_NODE_IDENTITY_FILES; for replicas that share one Secret, such as /etc/tunnelplane/nodes/$(POD_NAME))")
	fs.StringVar(&o.BaseDomain, "base-domain", envDefault("BASE_DOMAIN", ""), "host routing: <tunnel>.<org>.<base-domain> (env TUNNELPLANE_BASE_DOMAIN)")
	fs.StringVar(&o.LoginURL, "login-url", envDefault("LOGIN_URL", ""),
		"the control plane's origin as browsers reach it (its --public-url): browsers without a credential on a tunnel host log in there; empty: they get 401 (env TUNNELPLANE_LOGIN_URL)")
	urlFlag(fs, &o.NATSURL, "nats-url", "NATS_URL", "", "NATS server of the cluster")
	fs.StringVar(&o.Cluster, "cluster", envDefault("CLUSTER", ""), clusterHelp)
	fs.StringVar(&o.NodeID, "node-id", envDefault("NODE_ID", ""), "the node's id (a UUID) when a NATS credential was made for it before its first start; kept in <data-dir>/node/id, a different one there is an error (env TUNNELPLANE_NODE_ID; default: the data dir's, or a new one)")
	fs.StringVar(&o.HealthAddr, "health-addr", envDefault("HEALTH_ADDR", ""), "listen address for /healthz, /readyz and /drain, apart from the tunnels' listener; empty: none (env TUNNELPLANE_HEALTH_ADDR)")
	drainTimeoutFlag(fs, &o.DrainTimeout, &envErrs)
	fs.StringVar(&controlURL, "control-url", envDefault("API_URL", ""), "control plane API, for enrollment (env TUNNELPLANE_API_URL)")
	secretFlag(fs, &enrollmentToken, "enrollment-token", "ENROLLMENT_TOKEN", "node enrollment token for the first start: it enrolls this node and can do nothing else")
	secretFlag(fs, &adminToken, "token", "TOKEN", "superadmin token (the old way to enroll; prefer --enrollment-token, so that no node holds a superadmin's token)")
	cmd.AddCommand(newNodeDrainCommand(g))
	return cmd
}

func drainTimeoutFlag(fs *pflag.FlagSet, d *time.Duration, envErrs *[]error) {
	fs.DurationVar(d, "drain-timeout", envDuration("DRAIN_TIMEOUT", nodeapp.DefaultDrainTimeout, envErrs),
		"how long a draining node lets calls in flight finish before it cuts them (env TUNNELPLANE_DRAIN_TIMEOUT)")
}

// newNodeDrainCommand asks the node running on this host to drain, and waits until it has: the
// preStop hook of a node's pod (the image has no shell or curl; the binary is the client).
func newNodeDrainCommand(g *globals) *cobra.Command {
	var addr string
	var timeout time.Duration
	var envErrs []error
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Drain the node running on this host (its --health-addr) and wait until it has",
		Long: `drain asks the node on this host, through its health listener, to drain: it stops being ready,
tells its agents to move to another node, routes no new calls and lets the calls in flight finish
until its own --drain-timeout. The answer comes when the drain has ended. Run it where the node
runs (a Kubernetes preStop hook): the node accepts it only from its own host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := errors.Join(envErrs...); err != nil {
				return err
			}
			if addr == "" {
				return errors.New("--health-addr is required (env TUNNELPLANE_HEALTH_ADDR)")
			}
			// The node bounds the drain by its --drain-timeout; a little more for the answer.
			res, err := nodeapp.RequestDrain(cmd.Context(), addr, timeout+10*time.Second)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "node drained: %d agents disconnected, complete %t\n", res.AgentsDisconnected, res.Complete)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&addr, "health-addr", envDefault("HEALTH_ADDR", ""), "the node's health listener; an unspecified host means this host's loopback (env TUNNELPLANE_HEALTH_ADDR)")
	drainTimeoutFlag(fs, &timeout, &envErrs)
	return cmd
}

// startNode runs a node with the process's data dir and logger.
func startNode(ctx context.Context, g *globals, cfg nodeapp.Config) (*nodeapp.App, error) {
	cfg.DataDir, cfg.Logger = g.dataDir, g.log
	rn, err := nodeapp.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := rn.Start(ctx); err != nil {
		rn.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return rn, nil
}

// nodeLimits are the node's limits as commands fill them in.
type nodeLimits = nodeapp.Limits

// nodeConfig is a node's configuration from serve's flags.
func nodeConfig(name, addr, baseDomain string, limits nodeLimits, maxViewLag, lagSample time.Duration) nodeapp.Config {
	return nodeapp.Config{Name: name, ListenAddr: addr, BaseDomain: baseDomain, Limits: limits, MaxViewLag: maxViewLag, LagSample: lagSample}
}

func nodeLimitFlags(fs *pflag.FlagSet, l *nodeapp.Limits, envErrs *[]error) {
	fs.IntVar(&l.MaxCallsPerTunnel, "max-calls-per-tunnel", envInt("MAX_CALLS_PER_TUNNEL", 512, envErrs),
		"calls in flight per tunnel on the node, streams and WebSockets included; beyond it callers get 503 (env TUNNELPLANE_MAX_CALLS_PER_TUNNEL)")
	fs.DurationVar(&l.ChannelOpenTimeout, "channel-open-timeout", envDuration("CHANNEL_OPEN_TIMEOUT", 15*time.Second, envErrs),
		"how long a call waits for the agent to accept its connection; then 504 (env TUNNELPLANE_CHANNEL_OPEN_TIMEOUT)")
	fs.IntVar(&l.MaxConnsPerSource, "max-conns-per-source", envInt("MAX_CONNS_PER_SOURCE", 256, envErrs),
		"open ingress connections per client IP address; beyond it 429 (env TUNNELPLANE_MAX_CONNS_PER_SOURCE)")
	fs.DurationVar(&l.AgentKeepaliveTimeout, "agent-keepalive-timeout", envDuration("AGENT_KEEPALIVE_TIMEOUT", 5*time.Second, envErrs),
		"how long the node waits for an agent's keepalive answer before it disconnects the agent; a call that waits 500ms for the agent sends one at once, so callers of a frozen agent get 503 agent-unresponsive within about this (env TUNNELPLANE_AGENT_KEEPALIVE_TIMEOUT)")
	l.FailoverWait = nodeapp.DefaultFailoverWait
	if v, ok := os.LookupEnv("TUNNELPLANE_FAILOVER_WAIT"); ok {
		if err := (waitFlag{&l.FailoverWait}).Set(v); err != nil {
			*envErrs = append(*envErrs, fmt.Errorf("TUNNELPLANE_FAILOVER_WAIT=%q: %w", v, err))
		}
	}
	fs.Var(waitFlag{&l.FailoverWait}, "failover-wait",
		"how long a call for a tunnel with no agent on the node waits for one to connect (an agent or node restarting, an agent moving between nodes); then 503 agent-absent. 0: answer at once (env TUNNELPLANE_FAILOVER_WAIT)")
	fs.IntVar(&l.MaxQueuedPerTunnel, "max-queued-per-tunnel", envInt("MAX_QUEUED_PER_TUNNEL", 256, envErrs),
		"calls that may wait for a tunnel's agent at once (--failover-wait); beyond it 503 (env TUNNELPLANE_MAX_QUEUED_PER_TUNNEL)")
}

// waitFlag is a duration flag whose 0 turns the wait off: it keeps a negative duration, which
// the node reads as off (a zero there is the default).
type waitFlag struct{ d *time.Duration }

func (w waitFlag) String() string {
	if w.d == nil || *w.d < 0 {
		return "0s"
	}
	return w.d.String()
}

func (w waitFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New("not a duration like 5s")
	case d < 0:
		return errors.New("must not be negative")
	case d == 0:
		d = -1
	}
	*w.d = d
	return nil
}

func (waitFlag) Type() string { return "duration" }

// maxIdentityFile bounds a file --identity-files reads (an id, a URL with a password, a token).
const maxIdentityFile = 4096

// readAtMost reads up to n bytes of the file at path: a file that never ends (a link to
// /dev/zero, a FIFO someone writes to) costs n bytes, not the node's memory.
func readAtMost(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// readIdentityFiles reads base.node-id and base.nats-url (required) and base.enrollment-token (if
// present) into the node's settings; given both ways, a setting is an error. Errors name the
// file, never its contents.
func readIdentityFiles(base string, nodeID, natsURL, enrollmentToken *string) error {
	read := func(suffix string, dst *string, required bool) error {
		path := base + "." + suffix
		b, err := readAtMost(path, maxIdentityFile+1)
		switch {
		case errors.Is(err, os.ErrNotExist) && !required:
			return nil
		case err != nil:
			return fmt.Errorf("--identity-files: %w", err)
		case len(b) > maxIdentityFile:
			return fmt.Errorf("--identity-files: %s holds more than %d bytes", path, maxIdentityFile)
		}
		v := strings.TrimSpace(string(b))
		switch {
		case v == "":
			return fmt.Errorf("--identity-files: %s is empty", path)
		case strings.ContainsAny(v, "\r\n\x00"):
			return fmt.Errorf("--identity-files: %s holds more than one line", path)
		case *dst != "":
			return fmt.Errorf("--identity-files: %s and the --%s flag (or its environment variable) are both given; keep one", path, suffix)
		}
		*dst = v
		return nil
	}
	return errors.Join(read("node-id", nodeID, true), read("nats-url", natsURL, true), read("enrollment-token", enrollmentToken, false))
}
