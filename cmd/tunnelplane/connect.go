package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
)

// exitPermanent is connect's exit status when the node's refusal cannot change by retrying.
const exitPermanent = 3

func newConnectCommand(g *globals) *cobra.Command {
	var cfg agent.Config
	var controlURL, userToken string
	var nodes, pins []string
	var envErrs []error
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Run the tunnel agent: expose a local service through a node",
		Long: `connect dials a node over WebSocket, runs SSH over it, checks the node's host key against the
pinned fingerprint (a mismatch refuses to connect and says so), logs in with the agent token and
carries the node's requests to the tunnel's upstream (admin tunnels create --upstream), which the
node tells it at each connection: a tunnel whose upstream changes is followed from the agent's
next connection on. --to overrides it with another local service; the node logs that as a
warning ("agent overrides the tunnel's upstream"), and the agent dials nothing a node names.
With a node older than this agent --to is needed. It reconnects with exponential backoff and
jitter (the first connection too).

On SIGINT or SIGTERM it stops gently: the node routes no new call to it (callers get 503, or
reach another agent of the tunnel), the calls in flight (streamed generations too) finish for up
to --shutdown-timeout, then it disconnects. A second signal ends it at once.

With several --node URLs (in order of preference) it holds --connections of them at once (2 by
default), each a full session on a distinct node. When one is lost (it stops answering
keepalives, drains, or goes away) it moves that connection to the next free node at once, and
back to a preferred node once that has stayed reachable for --failback-delay; it reports each
move through a node it holds, which records it in the log (failover.started, failover.completed,
failback.completed). Its state lines say which nodes it holds and why it moved.

With --discover the agent asks the control plane (GET /api/v1/tunnels/{id}/nodes, with the agent
token) which nodes to hold, in the tunnel's order, with their host keys, and asks again every
minute: a node no longer listed is not taken again.

The fingerprints come from --fingerprint (one per node, any order), or from the control plane
(--control-url with a user token allowed to list nodes): the nodes whose agent URLs match --node.

It retries what a retry can mend (network errors, a node starting or draining, 5xx answers) and
stops at once, saying why in one line, when the node's answer cannot change: the agent token was
revoked or has expired, the tunnel was deleted, the node's host key is not the pinned one, or the
node answered the connection with 4xx (a wrong URL or an unsupported version).

Exit status:
  0  stopped by SIGINT or SIGTERM
  1  usage or configuration error (a failed fingerprint lookup, or no --to for a node that does
     not tell the tunnel's upstream)
  3  permanent refusal (see above): a service manager should not restart it, e.g. systemd
     RestartPreventExitStatus=3`,
		Example: `  tunnelplane connect --node ws://127.0.0.1:8081/v1/agent --token "$AGENT_TOKEN" --fingerprint SHA256:…
  tunnelplane connect --node ws://127.0.0.1:8081/v1/agent --token "$AGENT_TOKEN" --fingerprint SHA256:… \
      --to http://127.0.0.1:11435   # another local service than the tunnel's upstream
  tunnelplane connect --node wss://a.example.com --node wss://b.example.com --node wss://c.example.com \
      --token "$AGENT_TOKEN" --control-url https://control.example.com --user-token "$TOKEN"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			errs := envErrs
			cfg.NodeURLs, cfg.HostKeyFingerprints = nodes, pins
			if len(nodes) == 0 && cfg.Discover == "" {
				errs = append(errs, errors.New("--node or --discover is required (env TUNNELPLANE_NODE_URL, TUNNELPLANE_DISCOVER_URL)"))
			}
			if cfg.Token == "" {
				errs = append(errs, errors.New("--token is required (env TUNNELPLANE_AGENT_TOKEN)"))
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			if cfg.Upstream != "" {
				cfg.Upstream = upstreamURL(cfg.Upstream)
			}
			unpinned := len(pins) == 0 && len(nodes) > 0 && !cfg.InsecureSkipPin
			if unpinned && controlURL == "" {
				errs = append(errs, errors.New("pin the node's host key: --fingerprint SHA256:… or --control-url to look it up (or --insecure-skip-pin)"))
			}
			// Every other problem now, not after a fingerprint lookup.
			rest := cfg
			rest.InsecureSkipPin = rest.InsecureSkipPin || unpinned
			if err := rest.Validate(); err != nil {
				errs = append(errs, err)
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			if unpinned {
				fps, err := lookupFingerprints(ctx, controlURL, userToken, nodes)
				if err != nil {
					return err
				}
				cfg.HostKeyFingerprints = fps
			}
			stopTracing, err := startTracing(ctx, g, "tunnelplane-agent")
			if err != nil {
				return err
			}
			defer stopTracing()
			cfg.Version = version
			cfg.Logger = g.log
			cfg.OnState = func(_ agent.State, detail string) {
				fmt.Fprintf(g.stderr, "%s  %s\n", time.Now().Format("15:04:05"), detail) // the detail starts with the state
			}
			// The first signal starts the gentle stop; the next one gets the default action.
			stopSignals := context.AfterFunc(ctx, func() { signal.Reset(os.Interrupt, syscall.SIGTERM) })
			defer stopSignals()
			err = agent.Run(ctx, cfg)
			switch {
			case errors.Is(err, agent.ErrPermanent):
				return &exitError{code: exitPermanent, err: err}
			case err != nil && !errors.Is(err, context.Canceled):
				return err
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringArrayVar(&nodes, "node", envList("NODE_URL"), "a node's agent endpoint, ws(s)://host:port/v1/agent; repeat it for several, preferred first (env TUNNELPLANE_NODE_URL, comma-separated)")
	secretFlag(fs, &cfg.Token, "token", "AGENT_TOKEN", "agent token for the tunnel")
	fs.StringVar(&cfg.Upstream, "to", envDefault("UPSTREAM", ""), "override the tunnel's upstream (default: the tunnel's, as the node tells it): http://127.0.0.1:PORT, tcp://host:port, or host:port or PORT for http (env TUNNELPLANE_UPSTREAM)")
	fs.StringArrayVar(&pins, "fingerprint", envList("NODE_FINGERPRINT"), "a node's SSH host key fingerprint SHA256:…; repeat it for several nodes (env TUNNELPLANE_NODE_FINGERPRINT, comma-separated)")
	fs.StringVar(&cfg.Discover, "discover", envDefault("DISCOVER_URL", ""), "the control plane's URL: ask it, with the agent token, which nodes to hold and their host keys (env TUNNELPLANE_DISCOVER_URL)")
	fs.IntVar(&cfg.Connections, "connections", envInt("CONNECTIONS", 2, &envErrs), "how many of the nodes to hold at once, on distinct nodes (env TUNNELPLANE_CONNECTIONS)")
	fs.DurationVar(&cfg.FailbackDelay, "failback-delay", envDuration("FAILBACK_DELAY", 30*time.Second, &envErrs),
		"how long a preferred node must stay reachable before the agent moves back to it (env TUNNELPLANE_FAILBACK_DELAY)")
	fs.BoolVar(&cfg.InsecureSkipPin, "insecure-skip-pin", false, "do not check the node's host key (testing only)")
	fs.BoolVar(&cfg.Replace, "replace", false, "take the tunnel over from an agent with another token connected to the node (recorded as agent.replaced); without it such an agent keeps the tunnel")
	fs.StringVar(&controlURL, "control-url", envDefault("API_URL", ""), "control plane URL to look the fingerprint up (env TUNNELPLANE_API_URL)")
	secretFlag(fs, &userToken, "user-token", "TOKEN", "user token for --control-url")
	fs.DurationVar(&cfg.MaxBackoff, "max-backoff", 30*time.Second, "longest wait between reconnection attempts")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", envDuration("SHUTDOWN_TIMEOUT", 30*time.Second, &envErrs),
		"on SIGINT or SIGTERM, how long calls in flight may take to finish before they are cut (env TUNNELPLANE_SHUTDOWN_TIMEOUT)")
	return cmd
}

// lookupFingerprints asks the control plane for the host key fingerprints of the nodes whose
// agent URLs are nodes.
func lookupFingerprints(ctx context.Context, controlURL, userToken string, nodes []string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(controlURL, "/")+"/api/v1/nodes?state=joined&limit=500", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+userToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("look up the nodes' fingerprints: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("look up the nodes' fingerprints: the control plane answered %s", resp.Status)
	}
	type entry struct {
		AgentURL           string `json:"agent_url"`
		HostKeyFingerprint string `json:"host_key_fingerprint"`
	}
	var list struct {
		Items []entry `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("look up the nodes' fingerprints: %w", err)
	}
	var out []string
	for _, want := range nodes {
		i := slices.IndexFunc(list.Items, func(n entry) bool {
			return strings.TrimRight(n.AgentURL, "/") == strings.TrimRight(want, "/")
		})
		if i < 0 {
			return nil, fmt.Errorf("no joined node has the agent URL %s; pass --fingerprint", want)
		}
		out = append(out, list.Items[i].HostKeyFingerprint)
	}
	return out, nil
}

// upstreamURL takes what people type for a local service: a URL as it is, "host:port" or a bare
// port as http (a port alone on 127.0.0.1).
func upstreamURL(to string) string {
	if strings.Contains(to, "://") {
		return to
	}
	if _, err := strconv.ParseUint(to, 10, 16); err == nil {
		return "http://127.0.0.1:" + to
	}
	if _, _, err := net.SplitHostPort(to); err == nil {
		return "http://" + to
	}
	return to
}
