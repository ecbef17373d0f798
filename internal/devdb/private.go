package devdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrDirNotTraversable is returned (wrapped) when running as root and the
// postgres OS user, which has to run the private cluster, cannot reach Dir.
var ErrDirNotTraversable = errors.New("cluster directory not reachable by the postgres OS user")

// Layout of a private cluster directory.
const (
	dataSubdir    = "data"         // PGDATA
	lockFileName  = "lock"         // flock'ed while checking/initialising/starting/stopping
	portFileName  = "port"         // TCP port, chosen once and reused
	sockFileName  = "socketdir"    // socket dir outside Dir, when Dir is too long
	logFileName   = "postgres.log" // server log (pg_ctl -l)
	runSubdir     = "run"          // unix socket dir when Dir is short enough
	pgVersionFile = "PG_VERSION"   // written by initdb; its presence means "initialised"
	pidFileName   = "postmaster.pid"
)

const (
	// Unix socket paths must fit sun_path: 108 bytes on Linux, 104 on
	// macOS, including the NUL. Stay under the smaller one.
	maxSocketPath = 103
	// Longest socket file name postgres creates in the socket dir.
	socketFileSuffix = "/.s.PGSQL.65535"
	// pg_ctl -w waits this long (seconds) for the server to accept
	// connections before giving up.
	startWaitSeconds = "60"
	logTailLines     = 20
	// Socket dirs for long Dir paths: /tmp, not os.TempDir(), because
	// TMPDIR is long on macOS and the point is a short path.
	socketTempPattern = "tunnelplane-pg-"
)

// installGlobs are where distributions put server binaries outside PATH:
// Debian/Ubuntu, PGDG RPMs and keg-only Homebrew formulae.
var installGlobs = []string{
	"/usr/lib/postgresql/*/bin",
	"/usr/pgsql-*/bin",
	"/opt/homebrew/opt/postgresql@*/bin",
	"/usr/local/opt/postgresql@*/bin",
}

// searchDirs lists directories that may hold PostgreSQL server binaries,
// PATH first. It is a variable so tests can simulate a machine without
// PostgreSQL.
var searchDirs = func() []string {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	for _, g := range installGlobs {
		m, _ := filepath.Glob(g) // only fails on a malformed pattern
		dirs = append(dirs, m...)
	}
	return dirs
}

// install is one directory holding initdb, pg_ctl and postgres.
type install struct {
	dir          string
	major, minor int
	version      string
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?`)

// findInstalls returns the usable installations, highest version first.
// Symlinks are resolved so /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin
// counts once, and so pg_ctl finds its sibling postgres binary.
func findInstalls(ctx context.Context) []install {
	seen := map[string]bool{}
	var out []install
	for _, d := range searchDirs() {
		if d == "" {
			continue
		}
		real, err := filepath.EvalSymlinks(filepath.Join(d, "pg_ctl"))
		if err != nil {
			continue
		}
		dir := filepath.Dir(real)
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if !isExecutable(filepath.Join(dir, "initdb")) || !isExecutable(filepath.Join(dir, "postgres")) || !isExecutable(real) {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		verOut, err := exec.CommandContext(vctx, real, "--version").Output()
		cancel()
		if err != nil {
			continue
		}
		m := versionRE.FindSubmatch(verOut)
		if m == nil {
			continue
		}
		inst := install{dir: dir, version: strings.TrimSpace(string(verOut))}
		inst.major, _ = strconv.Atoi(string(m[1]))
		if len(m[2]) > 0 {
			inst.minor, _ = strconv.Atoi(string(m[2]))
		}
		out = append(out, inst)
	}
	// Stable so that, between equal versions, PATH order wins.
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].major != out[j].major {
			return out[i].major > out[j].major
		}
		return out[i].minor > out[j].minor
	})
	return out
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// pickInstall chooses the binaries for a cluster. An initialised cluster can
// only be run by its own major version, so that wins over "highest".
func pickInstall(insts []install, dir, pgVersion string) (install, error) {
	if pgVersion == "" {
		return insts[0], nil
	}
	var have []string
	for _, in := range insts {
		if strconv.Itoa(in.major) == pgVersion {
			return in, nil
		}
		have = append(have, strconv.Itoa(in.major))
	}
	return install{}, fmt.Errorf("private cluster in %s was created by PostgreSQL %s, but only PostgreSQL %s is installed: remove %s (e.g. make clean) to recreate it",
		dir, pgVersion, strings.Join(have, ", "), dir)
}

// osUser is the account that runs the server binaries when we cannot
// (initdb and pg_ctl refuse to run as root).
type osUser struct {
	name     string
	uid, gid int
	home     string
}

// cluster is a private cluster in dir run by the binaries of inst.
type cluster struct {
	dir   string // absolute
	inst  install
	runAs *osUser // nil: run binaries as ourselves
}

func (c *cluster) dataDir() string { return filepath.Join(c.dir, dataSubdir) }
func (c *cluster) logPath() string { return filepath.Join(c.dir, logFileName) }

// run executes one of the server binaries, as the postgres OS user when we
// are root.
func (c *cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.inst.dir, name), args...)
	// A working directory the postgres user can read: root's cwd may not be.
	cmd.Dir = c.dir
	c.runAs.apply(cmd)
	// pg_ctl start redirects the server's stdio to the log file, so the
	// server does not keep this pipe open and CombinedOutput returns.
	return cmd.CombinedOutput()
}

// running asks pg_ctl whether the cluster's postmaster is alive.
func (c *cluster) running(ctx context.Context) (bool, error) {
	out, err := c.run(ctx, "pg_ctl", "status", "-D", c.dataDir())
	if err == nil {
		return true, nil
	}
	var exitErr *exec.ExitError
	// pg_ctl status: 3 = not running, 4 = no usable data directory.
	if errors.As(err, &exitErr) && (exitErr.ExitCode() == 3 || exitErr.ExitCode() == 4) {
		return false, nil
	}
	return false, fmt.Errorf("pg_ctl status: %w: %s", err, bytes.TrimSpace(out))
}

// runningPort reads the port of the running postmaster from postmaster.pid,
// which is authoritative even if the port file was edited or lost.
func (c *cluster) runningPort() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dataDir(), pidFileName))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", pidFileName, err)
	}
	lines := strings.Split(string(b), "\n")
	// Line 4 of postmaster.pid is the port.
	if len(lines) < 4 {
		return 0, fmt.Errorf("%s has no port line", pidFileName)
	}
	port, err := strconv.Atoi(strings.TrimSpace(lines[3]))
	if err != nil {
		return 0, fmt.Errorf("%s port line: %w", pidFileName, err)
	}
	return port, nil
}

func (c *cluster) initdb(ctx context.Context, logger *slog.Logger) error {
	data := c.dataDir()
	if _, err := os.Stat(data); err == nil {
		// No PG_VERSION means an earlier initdb died half way; initdb
		// refuses a non-empty directory, and a throwaway cluster has
		// nothing worth keeping.
		logger.Warn("postgres: removing half-initialised private cluster", "dir", data)
		if err := os.RemoveAll(data); err != nil {
			return fmt.Errorf("remove half-initialised %s: %w", data, err)
		}
	}
	// Trust auth and --no-sync: this cluster is a local throwaway.
	// C locale so a missing or odd system locale cannot break initdb.
	out, err := c.run(ctx, "initdb", "-D", data, "-A", "trust", "-U", superuser,
		"--no-sync", "-E", "UTF8", "--locale=C")
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, bytes.TrimSpace(out))
	}
	logger.Info("postgres: initialised private cluster", "dir", data, "version", c.inst.version)
	return nil
}

// choosePort returns the persisted port, or picks and persists a free one
// so the cluster's URL stays the same across runs.
func (c *cluster) choosePort(logger *slog.Logger) (int, error) {
	path := filepath.Join(c.dir, portFileName)
	if b, err := os.ReadFile(path); err == nil {
		port, perr := strconv.Atoi(strings.TrimSpace(string(b)))
		if perr == nil && port > 0 && port < 65536 {
			if portFree(port) {
				return port, nil
			}
			logger.Warn("postgres: persisted port of private cluster is taken; picking another", "port", port, "dir", c.dir)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	port, err := pickFreePort()
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	return port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

func pickFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// socketDir returns the unix socket directory: Dir/run when the socket path
// fits, else a directory under /tmp recorded in Dir/socketdir.
func (c *cluster) socketDir() (string, error) {
	sock := filepath.Join(c.dir, runSubdir)
	if len(sock)+len(socketFileSuffix) > maxSocketPath {
		rec := filepath.Join(c.dir, sockFileName)
		sock = ""
		if b, err := os.ReadFile(rec); err == nil {
			s := strings.TrimSpace(string(b))
			// /tmp may have been cleaned since (e.g. a reboot).
			if fi, err := os.Stat(s); err == nil && fi.IsDir() {
				sock = s
			}
		}
		if sock == "" {
			s, err := os.MkdirTemp("/tmp", socketTempPattern)
			if err != nil {
				return "", fmt.Errorf("create socket dir: %w", err)
			}
			if err := os.WriteFile(rec, []byte(s+"\n"), 0o644); err != nil {
				return "", fmt.Errorf("write %s: %w", rec, err)
			}
			sock = s
		}
	} else if err := os.MkdirAll(sock, 0o700); err != nil {
		return "", fmt.Errorf("create socket dir: %w", err)
	}
	if c.runAs != nil {
		if err := os.Chown(sock, c.runAs.uid, c.runAs.gid); err != nil {
			return "", fmt.Errorf("chown socket dir: %w", err)
		}
	}
	return sock, nil
}

func (c *cluster) start(ctx context.Context, port int, sockDir string) error {
	logPath := c.logPath()
	if c.runAs != nil {
		// A log left by an earlier non-root run would not be writable.
		if err := os.Chown(logPath, c.runAs.uid, c.runAs.gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("chown %s: %w", logPath, err)
		}
	}
	// pg_ctl hands -o to /bin/sh, hence the quoting of the socket dir.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on", port, shellQuote(sockDir))
	out, err := c.run(ctx, "pg_ctl", "-D", c.dataDir(), "-w", "-t", startWaitSeconds,
		"-l", logPath, "-o", opts, "start")
	if err != nil {
		return fmt.Errorf("pg_ctl start: %w\n%s\nlast lines of %s:\n%s",
			err, bytes.TrimSpace(out), logPath, tail(logPath, logTailLines))
	}
	return nil
}

// stopLocked stops the cluster if it runs; the caller holds the dir lock.
func (c *cluster) stopLocked(ctx context.Context) (stopped bool, err error) {
	if _, err := os.Stat(filepath.Join(c.dataDir(), pgVersionFile)); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	up, err := c.running(ctx)
	if err != nil || !up {
		return false, err
	}
	out, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "fast", "-w")
	if err != nil {
		return false, fmt.Errorf("pg_ctl stop: %w\n%s\nlast lines of %s:\n%s",
			err, bytes.TrimSpace(out), c.logPath(), tail(c.logPath(), logTailLines))
	}
	// A socket dir under /tmp lives outside Dir, so `make clean` would
	// leave it behind; the next start simply makes a new one.
	rec := filepath.Join(c.dir, sockFileName)
	if b, err := os.ReadFile(rec); err == nil {
		if s := strings.TrimSpace(string(b)); strings.HasPrefix(s, "/tmp/"+socketTempPattern) {
			_ = os.RemoveAll(s)
		}
		_ = os.Remove(rec)
	}
	return true, nil
}

func (c *cluster) stop(ctx context.Context, logger *slog.Logger) error {
	unlock, err := lockDir(ctx, c.dir)
	if err != nil {
		return err
	}
	defer unlock()
	stopped, err := c.stopLocked(ctx)
	if err != nil {
		return err
	}
	if stopped && logger != nil {
		logger.Info("postgres: stopped private cluster", "dir", c.dir)
	}
	return nil
}

// StopPrivate stops a private cluster in dir if one is running (used by
// `make clean` and test teardown); it returns nil when none runs.
func StopPrivate(ctx context.Context, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("postgres: stop private: %w", err)
	}
	pgVersion, err := readPGVersion(abs)
	if err != nil {
		return fmt.Errorf("postgres: stop private: %w", err)
	}
	if pgVersion == "" {
		return nil // never initialised, so nothing can run
	}
	insts := findInstalls(ctx)
	if len(insts) == 0 {
		return nil // without binaries nothing could have started it
	}
	inst, err := pickInstall(insts, abs, pgVersion)
	if err != nil {
		return fmt.Errorf("postgres: stop private: %w", err)
	}
	runAs, err := serverUser()
	if err != nil {
		return fmt.Errorf("postgres: stop private: %w", err)
	}
	c := &cluster{dir: abs, inst: inst, runAs: runAs}
	if err := c.stop(ctx, nil); err != nil {
		return fmt.Errorf("postgres: stop private: %w", err)
	}
	return nil
}

func readPGVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, dataSubdir, pgVersionFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// resolvePrivate uses, or initialises and starts, the private cluster in
// cfg.Dir. probeErr explains why the local probe failed, for the error
// shown when no binaries are installed either.
func resolvePrivate(ctx context.Context, cfg Config, logger *slog.Logger, probeErr error) (*Server, error) {
	insts := findInstalls(ctx)
	if len(insts) == 0 {
		return nil, noPostgresError(cfg.ProbeAddr, probeErr)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("postgres: private cluster: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("postgres: private cluster: %w", err)
	}

	// Held until the database exists, so concurrent test processes neither
	// initdb/start twice nor see a cluster that another caller is stopping.
	unlock, err := lockDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("postgres: private cluster: %w", err)
	}
	defer unlock()

	if cfg.Private == PrivateReuse {
		c := &cluster{dir: dir}
		if pgVersion, _ := readPGVersion(dir); pgVersion == "" {
			return nil, noRunningPrivate(dir, cfg.ProbeAddr, probeErr)
		}
		inst, err := pickInstall(insts, dir, mustPGVersion(dir))
		if err != nil {
			return nil, fmt.Errorf("postgres: private cluster: %w", err)
		}
		c.inst = inst
		if up, err := c.running(ctx); err != nil || !up {
			return nil, noRunningPrivate(dir, cfg.ProbeAddr, probeErr)
		}
	}
	c, port, started, err := prepareCluster(ctx, dir, insts, logger)
	if err != nil {
		return nil, fmt.Errorf("postgres: private cluster in %s: %w", dir, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	srv := &Server{
		URL:      serverURL(addr, cfg.Database),
		AdminURL: serverURL(addr, adminDatabase),
		Started:  started,
		Source:   SourcePrivate,
		logger:   logger,
	}
	if started {
		srv.cluster = c
	}

	admin, err := connect(ctx, srv.AdminURL, privateConnectTimeout)
	if err == nil {
		defer admin.Close(ctx)
		var created bool
		if cfg.CreateDatabase {
			created, err = ensureDatabase(ctx, admin, cfg.Database)
		} else {
			var exists bool
			if err = admin.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, cfg.Database).Scan(&exists); err == nil && !exists {
				err = fmt.Errorf("%w: database %q does not exist; run `tunnelplane init` first", ErrNoDatabase, cfg.Database)
			}
		}
		if created {
			logger.Info("postgres: created database", "database", cfg.Database, "addr", addr)
		}
	}
	if err != nil {
		if started {
			// Do not leave a server running that the caller never got.
			_, _ = c.stopLocked(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("postgres: private cluster in %s at %s: %w\nlast lines of %s:\n%s",
			dir, addr, err, c.logPath(), tail(c.logPath(), logTailLines))
	}
	return srv, nil
}

// prepareCluster makes sure the cluster in dir is initialised and running;
// the caller holds the dir lock.
func prepareCluster(ctx context.Context, dir string, insts []install, logger *slog.Logger) (c *cluster, port int, started bool, err error) {
	runAs, err := serverUser()
	if err != nil {
		return nil, 0, false, err
	}
	if runAs != nil {
		// The postgres user must own the cluster directory to create
		// data/ and the log in it, and must be able to walk to it.
		if err := os.Chown(dir, runAs.uid, runAs.gid); err != nil {
			return nil, 0, false, fmt.Errorf("chown %s to %s: %w", dir, runAs.name, err)
		}
		if err := checkTraversable(dir, runAs); err != nil {
			return nil, 0, false, err
		}
	}
	pgVersion, err := readPGVersion(dir)
	if err != nil {
		return nil, 0, false, err
	}
	inst, err := pickInstall(insts, dir, pgVersion)
	if err != nil {
		return nil, 0, false, err
	}
	c = &cluster{dir: dir, inst: inst, runAs: runAs}

	if pgVersion != "" {
		up, err := c.running(ctx)
		if err != nil {
			return nil, 0, false, err
		}
		if up {
			port, err := c.runningPort()
			if err != nil {
				return nil, 0, false, err
			}
			logger.Info("postgres: reusing running private cluster", "dir", dir, "port", port)
			return c, port, false, nil
		}
	} else if err := c.initdb(ctx, logger); err != nil {
		return nil, 0, false, err
	}

	port, err = c.choosePort(logger)
	if err != nil {
		return nil, 0, false, err
	}
	sock, err := c.socketDir()
	if err != nil {
		return nil, 0, false, err
	}
	if err := c.start(ctx, port, sock); err != nil {
		return nil, 0, false, err
	}
	logger.Info("postgres: started private cluster", "dir", dir, "port", port,
		"version", inst.version, "log", c.logPath())
	return c, port, true, nil
}

// tail returns the last n lines of the file at path, for error messages
// that should explain a failed start without sending the developer digging.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	const maxRead = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > maxRead {
		_, _ = f.Seek(-maxRead, io.SeekEnd)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func mustPGVersion(dir string) string {
	v, _ := readPGVersion(dir)
	return v
}

// noRunningPrivate is the error of a tool that may use a running private cluster but finds none.
func noRunningPrivate(dir, probeAddr string, probeErr error) error {
	return fmt.Errorf("%w: no --database-url (TUNNELPLANE_DATABASE_URL) was given, nothing usable answered at %s (%v), and no private cluster runs in %s (`tunnelplane serve` starts one); give the server's URL",
		ErrNoPostgres, probeAddr, probeErr, dir)
}
