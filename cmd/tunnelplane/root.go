package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
	"github.com/tunnelplane/tunnelplane/internal/login"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// globals are the settings every subcommand shares. Each flag has an env twin.
type globals struct {
	databaseURL string
	dataDir     string
	kekFile     string
	configDir   string // the user's tunnelplane settings: stored logins
	logLevel    string
	logFormat   string

	stdout, stderr io.Writer
	log            *slog.Logger
}

// envDefault returns the value of TUNNELPLANE_<NAME> or def.
// clusterHelp describes --cluster of control and node.
const clusterHelp = "installation name on NATS: prefixes every stream, bucket and subject, so installations can share a NATS server; control plane and nodes must agree (env TUNNELPLANE_CLUSTER; default: none, the names TP_EVENTS, TP_COMMANDS, TP_NODEFACTS, tp_nodes)"

// secretFlag registers a string flag whose value may come from TUNNELPLANE_<env>, without ever
// showing that value: --help says "(set)" when the environment holds one.
func secretFlag(fs *pflag.FlagSet, p *string, name, env, usage string) {
	fs.StringVar(p, name, "", usage+" (env TUNNELPLANE_"+env+")")
	if v := envDefault(env, ""); v != "" {
		*p = v
		fs.Lookup(name).DefValue = "(set)"
	}
}

// urlFlag registers a URL flag whose default may come from TUNNELPLANE_<env>: --help shows it with
// any password replaced.
func urlFlag(fs *pflag.FlagSet, p *string, name, env, def, usage string) {
	fs.StringVar(p, name, envDefault(env, def), usage+" (env TUNNELPLANE_"+env+")")
	fs.Lookup(name).DefValue = redactURL(*p)
}

// redactURL hides a URL's password before it is printed.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}

// envList is TUNNELPLANE_<name> split at commas (nil when unset or empty).
func envList(name string) []string {
	var out []string
	for v := range strings.SplitSeq(os.Getenv("TUNNELPLANE_"+name), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func envDefault(name, def string) string {
	if v, ok := os.LookupEnv("TUNNELPLANE_" + name); ok {
		return v
	}
	return def
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "tunnelplane",
		Short:         "Event-sourced control plane and stateless data plane for SSH-over-WebSocket tunnels",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.setup()
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	urlFlag(pf, &g.databaseURL, "database-url", "DATABASE_URL", "",
		"PostgreSQL URL; empty: the local server at 127.0.0.1:5432, else a private cluster in the data dir")
	pf.StringVar(&g.dataDir, "data-dir", envDefault("DATA_DIR", ".tunnelplane"),
		"directory for keys and local state (env TUNNELPLANE_DATA_DIR)")
	pf.StringVar(&g.kekFile, "key-encryption-key-file", envDefault("KEY_ENCRYPTION_KEY_FILE", ""),
		"control plane: keep the signing keys in the database, sealed by this 32-byte key (hex); replicas given the same file share them (env TUNNELPLANE_KEY_ENCRYPTION_KEY_FILE)")
	defConfig, _ := login.DefaultDir() // none without a home directory: login says so
	pf.StringVar(&g.configDir, "config-dir", envDefault("CONFIG_DIR", defConfig),
		"directory for the user's stored logins of tunnelplane login (env TUNNELPLANE_CONFIG_DIR)")
	pf.StringVar(&g.logLevel, "log-level", envDefault("LOG_LEVEL", "info"), "debug, info, warn or error (env TUNNELPLANE_LOG_LEVEL)")
	pf.StringVar(&g.logFormat, "log-format", envDefault("LOG_FORMAT", "text"), "text or json (env TUNNELPLANE_LOG_FORMAT)")

	bench := newBenchCommand(g)
	bench.AddCommand(newBenchAPICommand(g))
	bench.AddCommand(newBenchTunnelCommand(g))
	root.AddCommand(
		newInitCommand(g),
		newMigrateCommand(g),
		newVerifyCommand(g),
		newExportCommand(g),
		newReportCommand(g),
		newForecastCommand(g),
		newVerifyExportCommand(g),
		bench,
		newDBCommand(g),
		newControlCommand(g),
		newAdminCommand(g),
		newProjectionsCommand(g),
		newServeCommand(g),
		newConnectCommand(g),
		newLoginCommand(g),
		newNodeCommand(g),
		newBenchChildCommand(g),
	)
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group (admin, migrate, db, …) fail on a word it does
// not know, instead of printing its help and exiting 0 (cobra's default for groups).
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Runnable() || !c.HasParent() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())
		}
		return cmd.Help()
	}
}

func (g *globals) setup() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		g.log = slog.New(slog.NewTextHandler(g.stderr, opts))
	case "json":
		g.log = slog.New(slog.NewJSONHandler(g.stderr, opts))
	default:
		return fmt.Errorf("--log-format %q: want text or json", g.logFormat)
	}
	if strings.TrimSpace(g.dataDir) == "" {
		return fmt.Errorf("--data-dir must not be empty")
	}
	return nil
}

// keys is where the control plane's private keys live.
func (g *globals) keys() controlapp.Keys {
	return controlapp.Keys{DataDir: g.dataDir, KEKFile: g.kekFile}
}

// openLog opens the log of the process's database and data dir (offline tools).
func openLog(ctx context.Context, g *globals, maxConns int) (*controlapp.Log, error) {
	srv, err := g.resolveDatabase(ctx, devdb.PrivateReuse, false)
	if err != nil {
		return nil, err
	}
	return controlapp.OpenLog(ctx, srv.URL, g.keys(), maxConns, g.log)
}

// resolveDatabase finds PostgreSQL as internal/devdb describes, for a command that may go as far as
// private with a private development cluster and may or may not create the database.
func (g *globals) resolveDatabase(ctx context.Context, private devdb.Private, create bool) (*devdb.Server, error) {
	return devdb.Resolve(ctx, devdb.Config{
		URL:            g.databaseURL,
		Dir:            filepath.Join(g.dataDir, "postgres"),
		Private:        private,
		CreateDatabase: create,
		Logger:         g.log,
	})
}

// flagChanged reports whether the user set a flag on the command line.
func flagChanged(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Changed
}
