package controlapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/commands/grantexpiry"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/compliance/exportjobs"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/siem"
)

// App is a running control plane: the log, the projections, the write side (with its audit
// flusher), the admin API on a listener and, with a NATS URL, the control side of the bus.
type App struct {
	Log     *Log
	Runner  *projections.Runner
	Service *commands.Service
	API     *api.Server
	Bus     *Bus // nil without Config.NATSURL
	SIEM    *SIEMSinks
	// Webhooks delivers the organizations' notifications to their endpoints.
	Webhooks *Webhooks
	Exports  *exportjobs.Manager // the API's evidence exports (bundles in <DataDir>/exports)
	// Expiry appends grant.expired at each grant's deadline.
	Expiry *grantexpiry.Manager
	// Notice appends grant.expiring GrantNoticeLead before each grant's deadline.
	Notice *grantexpiry.Manager
	// Schedules makes scheduled reports (in one instance at a time).
	Schedules *ReportSchedules
	Registry  *prometheus.Registry
	// URL is the API's base URL (http://host:port).
	URL string

	cfg      Config
	log      *slog.Logger
	life     lifecycle.Lifecycle
	http     *http.Server
	serveErr chan error
	stopOnce sync.Once

	remembering bool // the log passed the start checks: keep its newest checkpoint in the data dir
}

// New validates cfg.
func New(cfg Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	return &App{cfg: cfg, log: cfg.Logger, Registry: cfg.Registry, serveErr: make(chan error, 1)}, nil
}

// Start assembles and starts the control plane: migrate → store (log key from <data-dir>/keys/log,
// domain event types) → projections → commands (token key from <data-dir>/keys/token) → API →
// the bus, if configured. On an error everything started so far is stopped.
func (a *App) Start(ctx context.Context) error {
	return a.life.Start(ctx, "control plane", func(runCtx context.Context) error {
		if err := a.start(ctx, runCtx); err != nil {
			a.stopParts(context.WithoutCancel(ctx))
			return err
		}
		return nil
	})
}

func (a *App) start(ctx, runCtx context.Context) (err error) {
	cfg := a.cfg
	if a.Log, err = OpenLog(ctx, cfg.DatabaseURL, cfg.Keys(), cfg.DBMaxConns, a.log); err != nil {
		return err
	}
	if a.Runner, err = projections.New(projections.Config{Store: a.Log.Store, Projections: projections.All(), Logger: a.log, Registerer: cfg.Registry}); err != nil {
		return err
	}
	if err = a.Runner.Start(runCtx); err != nil {
		return err
	}
	if a.Service, err = NewService(a.Log, a.Runner, cfg.AuditFlushInterval, a.log); err != nil {
		return err
	}
	if err = a.Log.underInitLock(ctx, func() error { _, err := a.Service.EnsureTokenKey(ctx); return err }); err != nil {
		return err
	}
	a.Service.Start(runCtx)
	if a.Expiry, err = grantexpiry.New(grantexpiry.Config{Store: a.Log.Store, Service: a.Service, Logger: a.log}); err != nil {
		return err
	}
	if err = a.Expiry.Start(runCtx); err != nil {
		return err
	}
	if a.Notice, err = grantexpiry.New(grantexpiry.Config{Store: a.Log.Store, Service: a.Service, Lead: cfg.GrantNoticeLead, Logger: a.log}); err != nil {
		return err
	}
	if err = a.Notice.Start(runCtx); err != nil {
		return err
	}
	secrets, err := a.siemSecrets(runCtx, cfg)
	if err != nil {
		return err
	}
	queries := readmodels.New(a.Log.Pool)
	logKeys, pool := a.Log.LogKeys, a.Log.Pool
	if a.Exports, err = exportjobs.New(exportjobs.Config{Dir: filepath.Join(cfg.DataDir, "exports"), Pool: pool, Log: a.Log.Store, Logger: a.log, Personal: a.Log.Personal,
		Key: func(ctx context.Context) (*eventstore.SigningKey, error) { return LogKeyForInit(ctx, logKeys, pool) }}); err != nil {
		return err
	}
	if err = a.Exports.Start(runCtx); err != nil {
		return err
	}
	reports, err := NewReportGenerator(a.Log)
	if err != nil {
		return err
	}
	analytics := NewAnalyticsReportGenerator(a.Log, cfg.NodeStreamCapacity)
	kinds := ReportKinds(a.Log.Store, a.Runner, reports, analytics)
	var idp *oidcauth.Verifier
	if cfg.OIDCIssuer != "" {
		if idp, err = oidcauth.New(oidcauth.Config{Issuer: cfg.OIDCIssuer, ClientID: cfg.OIDCClientID, Leeway: cfg.TokenLeeway}); err != nil {
			return err
		}
		// A provider that is away now is asked again at the first login.
		if err := idp.Discover(runCtx); err != nil {
			a.log.Warn("identity provider not discovered yet; logins will try again", "issuer", cfg.OIDCIssuer, "error", err)
		}
	}
	var browserLogins api.BrowserLoginStore
	if idp != nil && cfg.PublicURL != "" {
		browserLogins = &browserlogin.Store{Pool: a.Log.Pool}
	}
	a.API, err = api.New(api.Config{OIDC: idp, IDTokens: &oidcauth.Exchanges{Pool: a.Log.Pool}, LoginTTL: cfg.LoginTTL, PublicURL: cfg.PublicURL, BrowserLoginOrigins: cfg.BrowserLoginOrigins, BrowserLogins: browserLogins, Service: a.Service, Log: a.Log.Store, Runner: a.Runner, ReadModels: queries, SIEMSecrets: secrets, WebhookSecrets: secrets, WebhookAllowPrivate: cfg.WebhookAllowPrivate, Exports: api.ExportsOf(a.Exports), Reports: reports, Personal: a.Log.Personal,
		ScheduleKinds:    KindNames(kinds),
		AnalyticsReports: analytics,
		JWKSURL:          cfg.JWKSURL, JWKSFile: cfg.JWKSFile, JWTIssuer: cfg.JWTIssuer, TokenLeeway: cfg.TokenLeeway, NodeStreamCapacity: cfg.NodeStreamCapacity, Registry: cfg.Registry, Logger: a.log})
	if err != nil {
		return err
	}
	if err = a.API.Start(runCtx); err != nil {
		return err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.APIAddr); err != nil {
			return fmt.Errorf("api: listen on %s: %w", cfg.APIAddr, err)
		}
	}
	a.URL = "http://" + ln.Addr().String()
	a.http = &http.Server{Handler: a.API.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	a.http.RegisterOnShutdown(a.API.CloseStreams) // notification feeds do not end by themselves
	srv := a.http
	a.life.Go(func(context.Context) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveErr <- fmt.Errorf("api: serve: %w", err)
		}
	})
	if cfg.NATSURL != "" {
		if a.Bus, err = StartBus(runCtx, BusConfig{NATSURL: cfg.NATSURL, Cluster: cfg.Cluster, OwnsNATS: cfg.OwnsNATS, Replicas: cfg.NATSReplicas, Store: a.Log.Store, Service: a.Service,
			Registerer: cfg.Registry, Logger: a.log}); err != nil {
			return err
		}
		a.API.SetLiveNodes(a.Bus.Live)
	}
	if err = a.startSIEM(runCtx, queries, secrets); err != nil {
		return err
	}
	if a.Webhooks, err = NewWebhooks(WebhooksConfig{Store: a.Log.Store, Pool: a.Log.Pool, Endpoints: queries, Secrets: secrets,
		AllowPrivate: cfg.WebhookAllowPrivate, Poll: cfg.WebhookPoll, MinBackoff: cfg.WebhookMinBackoff, MaxBackoff: cfg.WebhookMaxBackoff,
		Logger: a.log}); err != nil {
		return err
	}
	if err = a.Webhooks.Start(runCtx); err != nil {
		return err
	}
	if a.Schedules, err = NewReportSchedules(ReportSchedulesConfig{Store: a.Log.Store, Pool: a.Log.Pool, Kinds: kinds, Logger: a.log}); err != nil {
		return err
	}
	if err = a.Schedules.Start(runCtx); err != nil {
		return err
	}
	if err = a.Log.RememberCheckpoint(ctx); err != nil {
		return err
	}
	a.remembering = true // only a log this process accepted is remembered
	a.life.Go(a.rememberCheckpoints)
	a.log.Info("control plane started", "api_url", a.URL, "pid", os.Getpid())
	return nil
}

// startSIEM runs the SIEM sinks the log configured.
func (a *App) startSIEM(ctx context.Context, queries *readmodels.Queries, secrets *siem.Secrets) error {
	metrics, err := siem.NewMetrics(a.cfg.Registry)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	if a.SIEM, err = NewSIEMSinks(SIEMSinksConfig{Store: a.Log.Store, Pool: a.Log.Pool, Sinks: queries, Metrics: metrics, Poll: a.cfg.SIEMPoll,
		Options: siem.SinkOptions{Hostname: host, Product: siem.DefaultProduct(a.cfg.Version), Secrets: secrets, Personal: a.Log.Personal}, Logger: a.log}); err != nil {
		return err
	}
	return a.SIEM.Start(ctx)
}

// rememberCheckpoints keeps the data dir's copy of the newest checkpoint current while the log
// grows (CheckpointFile).
func (a *App) rememberCheckpoints(ctx context.Context) {
	known := a.Log.Store.KnownHead()
	for lifecycle.Sleep(ctx, rememberEvery) {
		if head := a.Log.Store.KnownHead(); head != known {
			if err := a.Log.RememberCheckpoint(ctx); err != nil {
				a.log.Warn("newest checkpoint not saved in the data dir", "error", err)
				continue
			}
			known = head
		}
	}
}

// NewService builds the write side over a log. Without a runner (offline tools) the RBAC policy
// is reloaded on every denial.
func NewService(h *Log, runner *projections.Runner, auditFlush time.Duration, log *slog.Logger) (*commands.Service, error) {
	cfg := commands.Config{Store: h.Store, Pool: h.Pool, LogKeys: h.LogKeys, TokenKeys: h.TokenKeys, Logger: log, AuditFlushInterval: auditFlush}
	if h.Personal != nil {
		cfg.Subjects, cfg.Sealing = h.Personal, h.Personal
	}
	if runner != nil {
		// The policy is reloaded only when a role event was applied, not on every log event.
		cfg.RBACPosition = func() int64 { p, _ := runner.LastChange(projections.RoleAssignments); return p }
		cfg.WaitRBAC = func(ctx context.Context, pos uint64) error {
			return runner.WaitFor(ctx, pos, projections.RoleAssignments)
		}
	}
	return commands.New(cfg)
}

// Done reports a failure of the API server (nothing after a clean Stop).
func (a *App) Done() <-chan error { return a.serveErr }

// Stop ends in-flight requests gracefully (bounded by the shutdown timeout and ctx), then the
// bus, the API, the write side (flushing pending audit events), the projections and the log.
// Safe to call twice, and after a Start that failed.
func (a *App) Stop(ctx context.Context) {
	a.stopOnce.Do(func() {
		start := time.Now()
		a.stopParts(ctx)
		a.life.Stop()
		a.log.Info("control plane stopped", "duration_ms", time.Since(start).Milliseconds())
	})
}

func (a *App) stopParts(ctx context.Context) {
	if a.Schedules != nil {
		a.Schedules.Stop()
	}
	if a.SIEM != nil {
		a.SIEM.Stop()
	}
	if a.Webhooks != nil {
		a.Webhooks.Stop()
	}
	if a.Bus != nil {
		a.Bus.Stop()
	}
	if a.http != nil {
		sctx, cancel := context.WithTimeout(ctx, a.cfg.ShutdownTimeout)
		if err := a.http.Shutdown(sctx); err != nil {
			a.log.Warn("api: requests still running at shutdown were cut off", "error", err)
			_ = a.http.Close()
		}
		cancel()
	}
	if a.API != nil {
		a.API.Stop()
	}
	if a.Expiry != nil {
		a.Expiry.Stop()
	}
	if a.Notice != nil {
		a.Notice.Stop()
	}
	if a.Exports != nil {
		a.Exports.Stop()
	}
	if a.Service != nil {
		a.Service.Stop()
	}
	if a.Runner != nil {
		a.Runner.Stop()
	}
	if a.Log != nil {
		if a.remembering {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := a.Log.RememberCheckpoint(rctx); err != nil {
				a.log.Warn("newest checkpoint not saved in the data dir", "error", err)
			}
			cancel()
		}
		a.Log.Close()
	}
}

// Close is Stop without a deadline of the caller's.
func (a *App) Close() { a.Stop(context.Background()) }
