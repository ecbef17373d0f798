package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

// envInt returns TUNNELPLANE_<NAME> as a number, def when unset; a value that is not a number is
// an error reported when the command runs (never a silent fallback).
func envInt(name string, def int, errs *[]error) int {
	v, ok := os.LookupEnv("TUNNELPLANE_" + name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("TUNNELPLANE_%s=%q: not a number", name, v))
		return def
	}
	return n
}

// envBool is envInt for true/false.
func envBool(name string, errs *[]error) bool {
	v, ok := os.LookupEnv("TUNNELPLANE_" + name)
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("TUNNELPLANE_%s=%q: not true or false", name, v))
	}
	return b
}

// envDuration is envInt for durations.
func envDuration(name string, def time.Duration, errs *[]error) time.Duration {
	v, ok := os.LookupEnv("TUNNELPLANE_" + name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("TUNNELPLANE_%s=%q: not a duration like 10s", name, v))
		return def
	}
	return d
}

// controlFlags registers the control plane's flags (each with its env twin) on fs.
func controlFlags(fs *pflag.FlagSet, o *controlapp.Config, envErrs *[]error) {
	fs.StringVar(&o.APIAddr, "api-addr", envDefault("API_ADDR", controlapp.DefaultAPIAddr), "admin API listen address (env TUNNELPLANE_API_ADDR)")
	fs.StringVar(&o.JWKSURL, "jwks-url", envDefault("JWKS_URL", ""), "identity provider JWKS URL for user tokens (env TUNNELPLANE_JWKS_URL)")
	fs.StringVar(&o.JWKSFile, "jwks-file", envDefault("JWKS_FILE", ""), "identity provider JWKS file (env TUNNELPLANE_JWKS_FILE)")
	fs.StringVar(&o.JWTIssuer, "jwt-issuer", envDefault("JWT_ISSUER", ""), "iss of the identity provider's tokens (env TUNNELPLANE_JWT_ISSUER)")
	fs.StringVar(&o.OIDCIssuer, "oidc-issuer", envDefault("OIDC_ISSUER", ""),
		"OpenID Connect provider users log in at with `tunnelplane login` (its issuer URL; env TUNNELPLANE_OIDC_ISSUER)")
	fs.StringVar(&o.OIDCClientID, "oidc-client-id", envDefault("OIDC_CLIENT_ID", ""),
		"the provider's client id for tunnelplane's CLI: a public client allowed the device flow (env TUNNELPLANE_OIDC_CLIENT_ID)")
	fs.DurationVar(&o.LoginTTL, "login-ttl", envDuration("LOGIN_TTL", api.DefaultLoginTTL, envErrs),
		"lifetime of the user token a login gets, at most 24h (env TUNNELPLANE_LOGIN_TTL)")
	fs.StringVar(&o.PublicURL, "public-url", envDefault("PUBLIC_URL", ""),
		"the API's origin as browsers reach it (https://tunnelplane.example); with --oidc-issuer it turns on browser login (env TUNNELPLANE_PUBLIC_URL)")
	fs.StringSliceVar(&o.BrowserLoginOrigins, "browser-login-origin", envList("BROWSER_LOGIN_ORIGIN"),
		"origin a browser login may return to besides --public-url, repeatable; '*.' matches any labels: 'https://*.nodes.example' (env TUNNELPLANE_BROWSER_LOGIN_ORIGIN, comma-separated)")
	fs.IntVar(&o.DBMaxConns, "db-max-conns", envInt("DB_MAX_CONNS", controlapp.DefaultDBMaxConns, envErrs), "database connection pool size, 4 to 10,000 (env TUNNELPLANE_DB_MAX_CONNS)")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", envDuration("SHUTDOWN_TIMEOUT", 10*time.Second, envErrs),
		"how long in-flight requests may finish at shutdown (env TUNNELPLANE_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&o.SIEMKeyFile, "siem-key-file", envDefault("SIEM_KEY_FILE", ""),
		"key SIEM sinks' secrets are sealed with, the same on every instance; made when missing (default <data-dir>/siem.key, or with --key-encryption-key-file the replicas' shared key; env TUNNELPLANE_SIEM_KEY_FILE)")
	fs.BoolVar(&o.WebhookAllowPrivate, "webhook-allow-private", envBool("WEBHOOK_ALLOW_PRIVATE", envErrs),
		"let webhook endpoints name and reach loopback, private and link-local addresses, refused by default since a webhook makes this process call where its creator says (SSRF); for tests and closed networks (env TUNNELPLANE_WEBHOOK_ALLOW_PRIVATE)")
	fs.DurationVar(&o.GrantNoticeLead, "grant-notice-lead", envDuration("GRANT_NOTICE_LEAD", time.Hour, envErrs),
		"how long before a grant's expiry grant.expiring is recorded for webhooks and the notifications feed (env TUNNELPLANE_GRANT_NOTICE_LEAD)")
	tokenLeewayFlag(fs, &o.TokenLeeway, envErrs)
	fs.Int64Var(&o.NodeStreamCapacity, "node-stream-capacity", int64(envInt("NODE_STREAM_CAPACITY", int(api.DefaultNodeStreamCapacity), envErrs)),
		"calls one data-plane node is sized to hold open at once; capacity analytics report headroom against it (env TUNNELPLANE_NODE_STREAM_CAPACITY)")
}

// tokenLeewayFlag is --token-leeway of control, serve and node.
func tokenLeewayFlag(fs *pflag.FlagSet, d *time.Duration, envErrs *[]error) {
	fs.DurationVar(d, "token-leeway", envDuration("TOKEN_LEEWAY", token.DefaultLeeway, envErrs),
		"how long past its expiry a token is still accepted, for clocks that disagree; at most 5m (env TUNNELPLANE_TOKEN_LEEWAY)")
}

// controlPlaneOptions is the control plane's configuration as commands fill it in.
type controlPlaneOptions = controlapp.Config

// startControlPlane runs a control plane on the process's database, data dir and logger.
func startControlPlane(ctx context.Context, g *globals, cfg controlapp.Config) (*controlapp.App, error) {
	// Bad flags are reported before the database is looked for.
	probe := cfg
	probe.DatabaseURL, probe.DataDir = "postgres://", g.dataDir
	if err := probe.Validate(); err != nil {
		return nil, err
	}
	srv, err := g.resolveDatabase(ctx, devdb.PrivateNever, false)
	if err != nil {
		return nil, err
	}
	cfg.DatabaseURL, cfg.DataDir, cfg.KEKFile, cfg.Logger, cfg.Version = srv.URL, g.dataDir, g.kekFile, g.log, version
	cp, err := controlapp.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := cp.Start(ctx); err != nil {
		cp.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return cp, nil
}

func newControlCommand(g *globals) *cobra.Command {
	var opts controlapp.Config
	var envErrs []error
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run the control plane: admin API, projections and the command service",
		Long: `control runs the REST admin API (under /api/v1, with /healthz, /readyz and /metrics), keeps
the read models caught up with the event log and writes the audit of denied requests and failed
logins. It migrates and initialises the log first if needed. SIGINT or SIGTERM stop it gracefully.

Bootstrap a fresh install with a superadmin token:
  TOKEN=$(tunnelplane admin token create --user root --role superadmin | tail -1)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGC()
			if len(envErrs) > 0 {
				return envErrs[0]
			}
			ctx := cmd.Context()
			cp, err := startControlPlane(ctx, g, opts)
			if err != nil {
				return err
			}
			defer cp.Stop(context.WithoutCancel(ctx))
			fmt.Fprintf(g.stdout, "api: %s\n", cp.URL)
			if opts.NATSURL != "" {
				fmt.Fprintf(g.stdout, "nats: %s (ingesting node events, relaying the log, sending node commands)\n", wire.RedactNATSURLs(opts.NATSURL))
			}
			select {
			case <-ctx.Done():
				g.log.Info("control plane stopping", "reason", stopReason(ctx))
				return nil
			case err := <-cp.Done():
				return err
			}
		},
	}
	controlFlags(cmd.Flags(), &opts, &envErrs)
	urlFlag(cmd.Flags(), &opts.NATSURL, "nats-url", "NATS_URL", "", "NATS server of the cluster; with it the control plane talks to nodes")
	cmd.Flags().StringVar(&opts.Cluster, "cluster", envDefault("CLUSTER", ""), clusterHelp)
	cmd.Flags().IntVar(&opts.NATSReplicas, "nats-replicas", envInt("NATS_REPLICAS", 1, &envErrs),
		"servers of a clustered JetStream that hold each stream and the node registry, 1 to 5: 3 on a cluster of 3 (env TUNNELPLANE_NATS_REPLICAS)")
	return cmd
}

func stopReason(ctx interface{ Err() error }) string {
	if err := ctx.Err(); err != nil {
		return err.Error()
	}
	return ""
}
