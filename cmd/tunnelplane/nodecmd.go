package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
)

func newNodeCommand(g *globals) *cobra.Command {
	var o nodeOptions
	var controlURL, adminToken string
	var envErrs []error
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a data-plane node: agents dial it, callers reach tunnels through it",
		Long: `node runs one data-plane node. It keeps its id, SSH host key and event key in <data-dir>/node,
enrolls itself through the control plane's API on first start (a superadmin token is needed once),
learns tunnels, roles and keys from the event stream on NATS, reports connections and usage as
events signed with its own key (spooled on disk while NATS is away), obeys disconnect and drain
commands and heartbeats into the node registry. It holds no database credentials.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			errs := envErrs
			if o.NATSURL == "" {
				errs = append(errs, errors.New("--nats-url is required (env TUNNELPLANE_NATS_URL)"))
			}
			if controlURL == "" {
				errs = append(errs, errors.New("--control-url is required (env TUNNELPLANE_API_URL)"))
			}
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			tuneGC()
			governProcs(ctx)
			api := &restClient{base: strings.TrimRight(controlURL, "/"), token: adminToken, client: &http.Client{Timeout: 30 * time.Second}}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			o.Registerer, o.Gatherer, o.Version = reg, reg, version
			o.Log = api.logInfo
			o.Enroll = api.enroll
			rn, err := startNode(ctx, g, o)
			if err != nil {
				return err
			}
			defer rn.Stop()
			fmt.Fprintf(g.stdout, "node %s running at %s\n  agents: %s/v1/agent\n  host key: %s\n", rn.ID.ID, rn.URL,
				strings.Replace(rn.URL, "http", "ws", 1), rn.Fingerprint)
			<-ctx.Done()
			g.log.Info("node stopping", "reason", stopReason(ctx))
			return nil
		},
	}
	fs := cmd.Flags()
	nodeLimitFlags(fs, &o.Limits, &envErrs)
	fs.StringVar(&o.Name, "name", envDefault("NODE_NAME", "node-1"), "node name (env TUNNELPLANE_NODE_NAME)")
	fs.StringVar(&o.ListenAddr, "node-addr", envDefault("NODE_ADDR", "127.0.0.1:8081"), "listen address for agents and ingress (env TUNNELPLANE_NODE_ADDR)")
	fs.StringVar(&o.PublicURL, "public-url", envDefault("NODE_PUBLIC_URL", ""), "how agents and callers reach this node (env TUNNELPLANE_NODE_PUBLIC_URL; default http://<node-addr>)")
	fs.StringVar(&o.BaseDomain, "base-domain", envDefault("BASE_DOMAIN", ""), "host routing: <tunnel>.<org>.<base-domain> (env TUNNELPLANE_BASE_DOMAIN)")
	fs.StringVar(&o.NATSURL, "nats-url", envDefault("NATS_URL", ""), "NATS server of the cluster (env TUNNELPLANE_NATS_URL)")
	fs.StringVar(&controlURL, "control-url", envDefault("API_URL", ""), "control plane API, for enrollment (env TUNNELPLANE_API_URL)")
	fs.StringVar(&adminToken, "token", envDefault("TOKEN", ""), "superadmin token, needed for the first enrollment (env TUNNELPLANE_TOKEN)")
	return cmd
}

// restClient is the little of the admin API a node needs.
type restClient struct {
	base, token string
	client      *http.Client
}

func (c *restClient) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var p struct {
			Title  string `json:"title"`
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(raw, &p)
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s %s", method, path, resp.Status, p.Title, p.Detail)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// logInfo is the log's origin, genesis hash and size as the control plane says (an authenticated
// call).
func (c *restClient) logInfo(ctx context.Context) (LogInfo, error) {
	var info LogInfo
	if _, err := c.do(ctx, http.MethodGet, "/api/v1/log", nil, &info); err != nil {
		return LogInfo{}, err
	}
	if info.Origin == "" || len(info.GenesisHash) == 0 {
		return LogInfo{}, errors.New("the control plane did not say its log's origin and genesis hash")
	}
	return info, nil
}

func (c *restClient) enroll(ctx context.Context, cmd commands.EnrollNode) error {
	status, err := c.do(ctx, http.MethodPost, "/api/v1/nodes", cmd, nil)
	if status == http.StatusConflict {
		return fmt.Errorf("%w: %w", domain.ErrConflict, err) // enrolled before
	}
	return err
}
