package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/migrations"
	"github.com/tunnelplane/tunnelplane/projections"
)

// controlPlaneOptions configures startControlPlane. Zero values take the defaults below.
type controlPlaneOptions struct {
	// APIAddr is where the admin API listens (host:port; port 0 picks one). Ignored when
	// Listener is set.
	APIAddr string
	// Listener serves the API instead of listening on APIAddr (tests, benchmarks).
	Listener net.Listener
	// JWKSURL / JWKSFile add an external identity provider; JWTIssuer is its iss.
	JWKSURL, JWKSFile, JWTIssuer string
	// DBMaxConns caps the database pool. Default 20.
	DBMaxConns int
	// ShutdownTimeout bounds the graceful end of in-flight requests. Default 10s.
	ShutdownTimeout time.Duration
	// AuditFlushInterval is how often aggregated audit events are written. Default 10s.
	AuditFlushInterval time.Duration
	// Registry collects the metrics served at /metrics. Default: a fresh one with Go and process
	// collectors.
	Registry *prometheus.Registry
}

const (
	defaultAPIAddr    = "127.0.0.1:8080"
	defaultDBMaxConns = 20
)

// Validate reports every problem.
func (o controlPlaneOptions) Validate() error {
	var errs []error
	if o.Listener == nil {
		if _, port, err := net.SplitHostPort(o.APIAddr); err != nil {
			errs = append(errs, fmt.Errorf("--api-addr %q: want host:port: %w", o.APIAddr, err))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("--api-addr %q: bad port", o.APIAddr))
		}
	}
	if o.DBMaxConns < 0 || o.DBMaxConns > 10000 {
		errs = append(errs, fmt.Errorf("--db-max-conns %d: want 1 to 10000", o.DBMaxConns))
	}
	if o.ShutdownTimeout < 0 || o.AuditFlushInterval < 0 {
		errs = append(errs, errors.New("control plane: negative duration"))
	}
	if o.JWKSURL != "" && o.JWKSFile != "" {
		errs = append(errs, errors.New("--jwks-url and --jwks-file: give one"))
	}
	if (o.JWKSURL != "" || o.JWKSFile != "") && o.JWTIssuer == "" {
		errs = append(errs, errors.New("--jwt-issuer is required with --jwks-url or --jwks-file"))
	}
	return errors.Join(errs...)
}

func (o controlPlaneOptions) withDefaults() controlPlaneOptions {
	if o.APIAddr == "" {
		o.APIAddr = defaultAPIAddr
	}
	if o.DBMaxConns == 0 {
		o.DBMaxConns = defaultDBMaxConns
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return o
}

// logHandle is an open, initialised event log: the database, the pool (as the app role) and a
// started store signing with the log key in force from <data-dir>/keys/log.
type logHandle struct {
	URL   string
	Pool  *pgxpool.Pool
	Store *eventstore.Store
}

func (h *logHandle) Close() {
	if h.Store != nil {
		h.Store.Stop()
	}
	if h.Pool != nil {
		h.Pool.Close()
	}
}

// domainRegistry is the store's type registry with every domain event type.
func domainRegistry() (*eventstore.Registry, error) {
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion})
	}
	return eventstore.NewRegistry(types...)
}

// openLog resolves the database, applies migrations, makes sure the log has its genesis record
// (as `init` does, harmless to repeat) and starts a store that signs with the log key.
func openLog(ctx context.Context, g *globals, maxConns int) (*logHandle, error) {
	srv, err := g.resolveDatabase(ctx)
	if err != nil {
		return nil, err
	}
	if err := migrations.Up(ctx, srv.URL); err != nil {
		return nil, err
	}
	pool, err := eventstore.Connect(ctx, srv.URL, eventstore.ConnectOptions{MaxConns: int32(maxConns), ApplicationName: "tunnelplane-control"})
	if err != nil {
		return nil, err
	}
	h := &logHandle{URL: srv.URL, Pool: pool}
	key, err := logKeyForInit(ctx, g, pool)
	if err != nil {
		h.Close()
		return nil, err
	}
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		h.Close()
		return nil, err
	}
	reg, err := domainRegistry()
	if err != nil {
		h.Close()
		return nil, err
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, KeySource: g.logKeys().Load, Registry: reg, Logger: g.log})
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := st.Start(ctx); err != nil {
		h.Close()
		return nil, err
	}
	h.Store = st
	return h, nil
}

// tokenKeys is where the control plane's token signing keys live.
func (g *globals) tokenKeys() eventstore.KeyDir {
	return eventstore.KeyDir(filepath.Join(g.dataDir, "keys", "token"))
}

// newService builds the write side over a log. Without a runner (offline tools) the RBAC policy
// is reloaded on every denial.
func newService(g *globals, h *logHandle, runner *projections.Runner, auditFlush time.Duration) (*commands.Service, error) {
	cfg := commands.Config{Store: h.Store, Pool: h.Pool, LogKeys: g.logKeys(), TokenKeys: g.tokenKeys(), Logger: g.log, AuditFlushInterval: auditFlush}
	if runner != nil {
		// The policy is reloaded only when a role event was applied, not on every log event.
		cfg.RBACPosition = func() int64 { p, _ := runner.LastChange(projections.RoleAssignments); return p }
		cfg.WaitRBAC = func(ctx context.Context, pos uint64) error {
			return runner.WaitFor(ctx, pos, projections.RoleAssignments)
		}
	}
	return commands.New(cfg)
}

// controlPlane is a running control plane: the log, the projections, the write side (with its
// audit flusher) and the admin API on a listener. `tunnelplane serve` reuses it and adds the
// data-plane pieces.
type controlPlane struct {
	Log      *logHandle
	Runner   *projections.Runner
	Service  *commands.Service
	API      *api.Server
	Registry *prometheus.Registry
	// URL is the API's base URL (http://host:port).
	URL string

	http      *http.Server
	serveErr  chan error
	stopOnce  sync.Once
	log       *slog.Logger
	shutdownT time.Duration
}

// startControlPlane assembles and starts the control plane: resolve the database → migrate →
// store (log key from <data-dir>/keys/log, domain event types) → projections → commands (token
// key from <data-dir>/keys/token) → API. On error everything started so far is stopped.
func startControlPlane(ctx context.Context, g *globals, opts controlPlaneOptions) (_ *controlPlane, err error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	cp := &controlPlane{Registry: opts.Registry, serveErr: make(chan error, 1), log: g.log, shutdownT: opts.ShutdownTimeout}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	if cp.Log, err = openLog(ctx, g, opts.DBMaxConns); err != nil {
		return nil, err
	}
	if cp.Runner, err = projections.New(projections.Config{Store: cp.Log.Store, Projections: projections.All(), Logger: g.log, Registerer: opts.Registry}); err != nil {
		return nil, err
	}
	if err = cp.Runner.Start(ctx); err != nil {
		return nil, err
	}
	if cp.Service, err = newService(g, cp.Log, cp.Runner, opts.AuditFlushInterval); err != nil {
		return nil, err
	}
	if _, err = cp.Service.EnsureTokenKey(ctx); err != nil {
		return nil, err
	}
	cp.Service.Start(ctx)
	cp.API, err = api.New(api.Config{Service: cp.Service, Store: cp.Log.Store, Runner: cp.Runner, JWKSURL: opts.JWKSURL, JWKSFile: opts.JWKSFile,
		JWTIssuer: opts.JWTIssuer, Registry: opts.Registry, Logger: g.log})
	if err != nil {
		return nil, err
	}
	if err = cp.API.Start(ctx); err != nil {
		return nil, err
	}
	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", opts.APIAddr); err != nil {
			return nil, fmt.Errorf("api: listen on %s: %w", opts.APIAddr, err)
		}
	}
	cp.URL = "http://" + ln.Addr().String()
	cp.http = &http.Server{Handler: cp.API.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)}
	go func() {
		if err := cp.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cp.serveErr <- fmt.Errorf("api: serve: %w", err)
		}
		close(cp.serveErr)
	}()
	g.log.Info("control plane started", "api_url", cp.URL, "pid", os.Getpid())
	return cp, nil
}

// Done reports a failure of the API server (closed without a value after Stop).
func (cp *controlPlane) Done() <-chan error { return cp.serveErr }

// Stop ends in-flight requests gracefully (bounded), then the API, the write side (flushing
// pending audit events), the projections and the log. Safe to call twice.
func (cp *controlPlane) Stop() {
	cp.stopOnce.Do(func() {
		start := time.Now()
		defer func() { cp.log.Info("control plane stopped", "duration_ms", time.Since(start).Milliseconds()) }()
		if cp.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), cp.shutdownT)
			if err := cp.http.Shutdown(ctx); err != nil {
				cp.log.Warn("api: requests still running at shutdown were cut off", "error", err)
				_ = cp.http.Close()
			}
			cancel()
			for range cp.serveErr {
			}
		}
		if cp.API != nil {
			cp.API.Stop()
		}
		if cp.Service != nil {
			cp.Service.Stop()
		}
		if cp.Runner != nil {
			cp.Runner.Stop()
		}
		if cp.Log != nil {
			cp.Log.Close()
		}
	})
}
