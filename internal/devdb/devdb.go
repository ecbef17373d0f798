package devdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults applied by Resolve when the corresponding Config field is empty.
const (
	DefaultProbeAddr = "127.0.0.1:5432"
	DefaultDatabase  = "tunnelplane"
)

// Values of Server.Source.
const (
	SourceEnv     = "env"
	SourceLocal   = "local"
	SourcePrivate = "private"
)

const (
	// An explicit URL may point at a remote server, so it gets a generous
	// timeout before we declare it unreachable.
	envConnectTimeout = 5 * time.Second
	// The local probe must be quick: when nothing listens we fall back to a
	// private cluster, and a dev command should not hang on the way there.
	probeConnectTimeout = 2 * time.Second
	// A private cluster we just started (or found running) is on loopback;
	// it answers fast or not at all.
	privateConnectTimeout = 5 * time.Second

	// PostgreSQL limits identifiers (and so database names) to 63 bytes.
	maxIdentifierLen = 63

	adminDatabase = "postgres"
	superuser     = "postgres"
)

// SQLSTATE codes this package reacts to.
const (
	sqlstateInvalidCatalogName = "3D000" // database does not exist
	sqlstateDuplicateDatabase  = "42P04" // CREATE DATABASE lost a race
	sqlstateUniqueViolation    = "23505" // same race, seen at the catalog index
)

// ErrNoPostgres is returned (wrapped) when no URL was given, nothing answers
// at the probe address and no PostgreSQL server binaries are installed.
var ErrNoPostgres = errors.New("no PostgreSQL server available")

// ErrNoDatabase: the server has no database of the name asked for, and Resolve may not create one.
var ErrNoDatabase = errors.New("no such database")

// errProbe marks a failed connection to ProbeAddr, the one failure after
// which Resolve falls back to a private cluster.
var errProbe = errors.New("probe")

// Config says where to look for a PostgreSQL server.
type Config struct {
	// URL, when set, is used as is (from TUNNELPLANE_DATABASE_URL or a
	// flag); no probing, no fallback.
	URL string
	// ProbeAddr is the local server tried when URL is empty. Default
	// "127.0.0.1:5432", user postgres, no password (trust auth).
	ProbeAddr string
	// Dir is the project-local, git-ignored directory where a private
	// cluster lives when nothing answers at ProbeAddr (e.g.
	// ".tunnelplane/postgres"). Required.
	Dir string
	// Database is the database name to use/create in the found server.
	// Default "tunnelplane". Ignored when URL is set: the URL names the
	// database.
	Database string
	// Private says whether a private cluster in Dir may be used when nothing answers at
	// ProbeAddr: never (the zero value, for commands that run against an operator's server),
	// only one that already runs (tools beside a running `serve`), or started when needed (serve,
	// the benches, tests).
	Private Private
	// CreateDatabase creates the database when the server has none of that name (serve, init,
	// migrate, tests). Without it a missing database is an error: a mistyped name must not
	// become a new, empty log.
	CreateDatabase bool
	// Logger reports what was found or started. Default slog.Default().
	Logger *slog.Logger
}

// Private is how far Resolve may go with a private development cluster.
type Private int

const (
	// PrivateNever: only an explicit URL or the local server at ProbeAddr.
	PrivateNever Private = iota
	// PrivateReuse: also a private cluster in Dir that is already running.
	PrivateReuse
	// PrivateStart: also initialise and start one.
	PrivateStart
)

// Validate reports every problem with c at once, joined with errors.Join,
// so a developer fixes their flags in one round.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Dir) == "" {
		errs = append(errs, errors.New("Dir is required (the directory for a private cluster, e.g. .tunnelplane/postgres)"))
	}
	if c.URL != "" {
		if err := validateURL(c.URL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ProbeAddr != "" {
		if err := validateAddr(c.ProbeAddr); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Database != "" {
		if err := validateDatabaseName(c.Database); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("postgres: invalid config: %w", errors.Join(errs...))
}

func validateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error echoes the URL, which may carry a password.
		return errors.New("URL is not a valid URL")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("URL must start with postgres:// or postgresql://, got scheme %q", u.Scheme)
	}
	if _, err := pgx.ParseConfig(raw); err != nil {
		return fmt.Errorf("URL %s: %w", u.Redacted(), err)
	}
	return nil
}

func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("ProbeAddr %q must be host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("ProbeAddr %q has no host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("ProbeAddr %q has invalid port %q (want 1-65535)", addr, port)
	}
	return nil
}

func validateDatabaseName(name string) error {
	if len(name) > maxIdentifierLen {
		return fmt.Errorf("Database %q is longer than %d bytes", name, maxIdentifierLen)
	}
	if strings.ContainsRune(name, 0) {
		return fmt.Errorf("Database %q contains a NUL byte", name)
	}
	return nil
}

// Server is a PostgreSQL server found or started by Resolve.
type Server struct {
	// URL of Database on that server (postgres://...).
	URL string
	// AdminURL of the "postgres" maintenance database on that server, for
	// CREATE/DROP DATABASE.
	AdminURL string
	// Started is true when this call started a private cluster.
	Started bool
	// Source is "env", "local" or "private".
	Source string

	cluster *cluster // set only when Started
	logger  *slog.Logger
	mu      sync.Mutex
	stopped bool
}

// Stop stops the private cluster if this Server started it
// (pg_ctl stop -m fast); it is a no-op otherwise and safe to call twice.
func (s *Server) Stop(ctx context.Context) error {
	if s == nil || !s.Started || s.cluster == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	if err := s.cluster.stop(ctx, s.logger); err != nil {
		return fmt.Errorf("postgres: stop: %w", err)
	}
	s.stopped = true
	return nil
}

// Resolve finds a PostgreSQL server as described in the package
// documentation and makes sure the configured database exists on it.
func Resolve(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProbeAddr == "" {
		cfg.ProbeAddr = DefaultProbeAddr
	}
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}

	if cfg.URL != "" {
		return resolveURL(ctx, cfg.URL, cfg.CreateDatabase, logger)
	}

	srv, probeErr := resolveLocal(ctx, cfg, logger)
	if srv != nil || !errors.Is(probeErr, errProbe) {
		return srv, probeErr
	}
	level := slog.LevelInfo
	var pgErr *pgconn.PgError
	if errors.As(probeErr, &pgErr) {
		// Something answered but refused us (e.g. it wants a password):
		// worth a louder note, since the developer may have meant to use it.
		level = slog.LevelWarn
	}
	if cfg.Private == PrivateNever {
		return nil, fmt.Errorf("%w: no --database-url (TUNNELPLANE_DATABASE_URL) was given and nothing usable answered at %s (%v); give the server's URL (a private development cluster is started only by `tunnelplane serve`)",
			ErrNoPostgres, cfg.ProbeAddr, probeErr)
	}
	logger.Log(ctx, level, "postgres: nothing usable at probe address; trying a private cluster",
		"addr", cfg.ProbeAddr, "reason", probeErr.Error())

	return resolvePrivate(ctx, cfg, logger, probeErr)
}

// resolveURL uses an explicit URL. It never falls back: a developer who set
// TUNNELPLANE_DATABASE_URL wants that server or a clear error.
func resolveURL(ctx context.Context, raw string, create bool, logger *slog.Logger) (*Server, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("postgres: URL is not a valid URL")
	}
	adminURL := withDatabase(u, adminDatabase)
	redacted := u.Redacted()

	conn, err := connect(ctx, raw, envConnectTimeout)
	if err == nil {
		_ = conn.Close(ctx)
		logger.Info("postgres: using server from URL", "url", redacted)
		return &Server{URL: raw, AdminURL: adminURL, Source: SourceEnv, logger: logger}, nil
	}
	if !hasSQLState(err, sqlstateInvalidCatalogName) {
		return nil, fmt.Errorf("postgres: connect to %s: %w", redacted, err)
	}

	// The server answers but the database is missing: create it, which is
	// what a developer pointing at a fresh server expects (from the commands
	// that may create one).
	pcfg, perr := pgx.ParseConfig(raw)
	if perr != nil {
		return nil, fmt.Errorf("postgres: parse URL %s: %w", redacted, perr)
	}
	if !create {
		return nil, fmt.Errorf("%w: database %q does not exist on %s; create it with `tunnelplane init --database-url …` (only serve, init and migrate create a database), or check the name",
			ErrNoDatabase, pcfg.Database, redacted)
	}
	admin, aerr := connect(ctx, adminURL, envConnectTimeout)
	if aerr != nil {
		return nil, fmt.Errorf("postgres: database %q does not exist on %s and the %q database is not reachable to create it (%v): %w",
			pcfg.Database, redacted, adminDatabase, aerr, err)
	}
	defer admin.Close(ctx)
	created, cerr := ensureDatabase(ctx, admin, pcfg.Database)
	if cerr != nil {
		return nil, fmt.Errorf("postgres: create database %q on %s: %w", pcfg.Database, redacted, cerr)
	}
	if created {
		logger.Info("postgres: created database", "database", pcfg.Database, "url", redacted)
	}
	logger.Info("postgres: using server from URL", "url", redacted)
	return &Server{URL: raw, AdminURL: adminURL, Source: SourceEnv, logger: logger}, nil
}

// resolveLocal tries the developer's own server at ProbeAddr.
func resolveLocal(ctx context.Context, cfg Config, logger *slog.Logger) (*Server, error) {
	adminURL := serverURL(cfg.ProbeAddr, adminDatabase)
	admin, err := connect(ctx, adminURL, probeConnectTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", errProbe, cfg.ProbeAddr, err)
	}
	defer admin.Close(ctx)
	if !cfg.CreateDatabase {
		var exists bool
		if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, cfg.Database).Scan(&exists); err != nil {
			return nil, fmt.Errorf("postgres: look up database %q on %s: %w", cfg.Database, cfg.ProbeAddr, err)
		}
		if !exists {
			return nil, fmt.Errorf("%w: database %q does not exist on %s; run `tunnelplane init` first (only serve, init and migrate create a database)",
				ErrNoDatabase, cfg.Database, cfg.ProbeAddr)
		}
		logger.Info("postgres: using local server", "addr", cfg.ProbeAddr, "database", cfg.Database)
		return &Server{URL: serverURL(cfg.ProbeAddr, cfg.Database), AdminURL: adminURL, Source: SourceLocal, logger: logger}, nil
	}
	created, err := ensureDatabase(ctx, admin, cfg.Database)
	if err != nil {
		// The server answered, so falling back to a private cluster would
		// hide a real problem (e.g. missing CREATEDB); report it.
		return nil, fmt.Errorf("postgres: create database %q on %s: %w", cfg.Database, cfg.ProbeAddr, err)
	}
	if created {
		logger.Info("postgres: created database", "database", cfg.Database, "addr", cfg.ProbeAddr)
	}
	logger.Info("postgres: using local server", "addr", cfg.ProbeAddr, "database", cfg.Database)
	return &Server{
		URL:      serverURL(cfg.ProbeAddr, cfg.Database),
		AdminURL: adminURL,
		Source:   SourceLocal,
		logger:   logger,
	}, nil
}

// noPostgresError builds the error a developer sees when there is nothing
// to connect to and nothing to start; it must tell them how to proceed.
func noPostgresError(probeAddr string, probeErr error) error {
	return fmt.Errorf(`postgres: resolve: %w: TUNNELPLANE_DATABASE_URL is not set, nothing usable answered at %s (%v), and no PostgreSQL server binaries (initdb, pg_ctl, postgres) were found in PATH or in %s.
To proceed, do one of:
  - set TUNNELPLANE_DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/tunnelplane
  - start PostgreSQL on %s (user postgres, trust auth for 127.0.0.1)
  - install the server binaries and run again (a private cluster will be started automatically):
      Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y postgresql
      Fedora:        sudo dnf install postgresql-server
      macOS:         brew install postgresql@16`,
		ErrNoPostgres, probeAddr, probeErr, strings.Join(installGlobs, ", "), probeAddr)
}

// connect opens one connection, bounding the whole handshake by timeout so a
// black-holed address cannot stall a dev command.
func connect(ctx context.Context, connURL string, timeout time.Duration) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(connURL)
	if err != nil {
		return nil, err
	}
	cfg.ConnectTimeout = timeout
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return pgx.ConnectConfig(cctx, cfg)
}

// ensureDatabase creates name unless it exists. Several test processes may
// race to create the same database, so losing that race is success.
func ensureDatabase(ctx context.Context, admin *pgx.Conn, name string) (created bool, err error) {
	var exists bool
	if err := admin.QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return false, fmt.Errorf("check database: %w", err)
	}
	if exists {
		return false, nil
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		if hasSQLState(err, sqlstateDuplicateDatabase) || hasSQLState(err, sqlstateUniqueViolation) {
			return false, nil
		}
		return false, fmt.Errorf("create database: %w", err)
	}
	return true, nil
}

func hasSQLState(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

// serverURL is the URL of database on a trust-auth server at addr.
// sslmode=disable because loopback servers rarely have TLS and the
// negotiation would only slow the probe down.
func serverURL(addr, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     addr,
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// withDatabase returns u pointing at database, keeping credentials, host
// and parameters.
func withDatabase(u *url.URL, database string) string {
	c := *u
	c.Path = "/" + database
	c.RawPath = ""
	return c.String()
}
