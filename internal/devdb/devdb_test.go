package devdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testTimeout bounds every test: starting a cluster takes seconds, not
// minutes, and a hang should fail rather than stall CI.
const testTimeout = 2 * time.Minute

const defaultTestAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

func uniqueName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "devdb_test_" + hex.EncodeToString(b)
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// clusterDir returns a fresh directory for a private cluster, stopped on
// cleanup even if the test fails half way.
func clusterDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// t.TempDir's parent is mode 0700; as root the cluster runs as the
	// postgres user, which must be able to walk into it.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := StopPrivate(context.Background(), dir); err != nil {
			t.Errorf("cleanup: StopPrivate: %v", err)
		}
	})
	return dir
}

func requireServerBinaries(t *testing.T) {
	t.Helper()
	if len(findInstalls(context.Background())) == 0 {
		t.Skip("no PostgreSQL server binaries installed; private cluster path not testable here")
	}
}

// testAdminURL is the maintenance database of a server the tests may
// create databases on; the test is skipped when it does not answer.
func testAdminURL(t *testing.T) string {
	t.Helper()
	raw := os.Getenv("TUNNELPLANE_TEST_DATABASE_URL")
	if raw == "" {
		raw = defaultTestAdminURL
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("TUNNELPLANE_TEST_DATABASE_URL: %v", err)
	}
	admin := withDatabase(u, adminDatabase)
	conn, err := connect(testContext(t), admin, 5*time.Second)
	if err != nil {
		t.Skipf("no test PostgreSQL server at %s: %v", u.Redacted(), err)
	}
	_ = conn.Close(context.Background())
	return admin
}

func dropDatabase(t *testing.T, adminURL, name string) {
	t.Helper()
	ctx := context.Background()
	conn, err := connect(ctx, adminURL, 5*time.Second)
	if err != nil {
		t.Errorf("drop %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("drop %s: %v", name, err)
	}
}

// currentDatabase connects to connURL and returns the database it lands in,
// proving the URL works end to end.
func currentDatabase(t *testing.T, connURL string) string {
	t.Helper()
	ctx := testContext(t)
	conn, err := connect(ctx, connURL, 5*time.Second)
	if err != nil {
		t.Fatalf("connect %s: %v", connURL, err)
	}
	defer conn.Close(ctx)
	var one int
	var db string
	if err := conn.QueryRow(ctx, "SELECT 1, current_database()").Scan(&one, &db); err != nil {
		t.Fatalf("query %s: %v", connURL, err)
	}
	if one != 1 {
		t.Fatalf("SELECT 1 returned %d", one)
	}
	return db
}

func execSQL(t *testing.T, connURL, sql string) {
	t.Helper()
	ctx := testContext(t)
	conn, err := connect(ctx, connURL, 5*time.Second)
	if err != nil {
		t.Fatalf("connect %s: %v", connURL, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func answers(connURL string) bool {
	conn, err := connect(context.Background(), connURL, 2*time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close(context.Background())
	return true
}

func TestResolveFindsLocalServer(t *testing.T) {
	if env := os.Getenv("TUNNELPLANE_TEST_DATABASE_URL"); env != "" {
		if u, err := url.Parse(env); err != nil || u.Host != DefaultProbeAddr {
			t.Skip("TUNNELPLANE_TEST_DATABASE_URL points at another server than the default probe address")
		}
	}
	adminURL := testAdminURL(t)
	ctx := testContext(t)
	name := uniqueName(t)
	t.Cleanup(func() { dropDatabase(t, adminURL, name) })

	srv, err := Resolve(ctx, Config{Private: PrivateStart, CreateDatabase: true, Dir: clusterDir(t), Database: name, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if srv.Source != SourceLocal || srv.Started {
		t.Fatalf("got Source %q Started %v, want local server used, not started", srv.Source, srv.Started)
	}
	if got := currentDatabase(t, srv.URL); got != name {
		t.Fatalf("URL lands in database %q, want %q", got, name)
	}
	if got := currentDatabase(t, srv.AdminURL); got != adminDatabase {
		t.Fatalf("AdminURL lands in database %q, want %q", got, adminDatabase)
	}

	// Stopping a server we did not start must leave the developer's own
	// PostgreSQL alone.
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !answers(srv.URL) {
		t.Fatal("local server stopped answering after Stop of a server this call did not start")
	}
}

func TestResolveStartsAndReusesPrivateCluster(t *testing.T) {
	requireServerBinaries(t)
	ctx := testContext(t)
	dir := clusterDir(t)
	cfg := Config{Private: PrivateStart, CreateDatabase: true, ProbeAddr: closedAddr(t), Dir: dir, Database: "tunnelplane_test", Logger: testLogger(t)}

	// Two callers at once, as when several test packages start together:
	// exactly one starts the cluster, the other reuses it.
	var wg sync.WaitGroup
	servers := make([]*Server, 2)
	errs := make([]error, 2)
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = Resolve(ctx, cfg)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Resolve #%d: %v", i, err)
		}
	}
	owner, other := servers[0], servers[1]
	if !owner.Started {
		owner, other = other, owner
	}
	if !owner.Started || other.Started {
		t.Fatalf("Started = %v and %v, want exactly one caller to start the cluster", servers[0].Started, servers[1].Started)
	}
	for _, s := range servers {
		if s.Source != SourcePrivate {
			t.Fatalf("Source = %q, want %q", s.Source, SourcePrivate)
		}
	}
	if owner.URL != other.URL {
		t.Fatalf("concurrent callers got different servers: %s vs %s", owner.URL, other.URL)
	}
	u, err := url.Parse(owner.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "127.0.0.1" {
		t.Fatalf("private cluster URL host %q, want loopback only", u.Hostname())
	}
	if got := currentDatabase(t, owner.URL); got != "tunnelplane_test" {
		t.Fatalf("URL lands in database %q", got)
	}
	if got := currentDatabase(t, owner.AdminURL); got != adminDatabase {
		t.Fatalf("AdminURL lands in database %q", got)
	}
	execSQL(t, owner.URL, "CREATE TABLE survives_restart (id int)")

	// The caller that merely reused the cluster must not stop it from
	// under the one that started it.
	if err := other.Stop(ctx); err != nil {
		t.Fatalf("Stop of reusing server: %v", err)
	}
	if !answers(owner.URL) {
		t.Fatal("cluster stopped by a caller that did not start it")
	}

	if err := owner.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if answers(owner.URL) {
		t.Fatal("cluster still answers after Stop")
	}
	if err := owner.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := StopPrivate(ctx, dir); err != nil {
		t.Fatalf("StopPrivate after Stop: %v", err)
	}

	// A later run gets the same URL (port persisted) and the same data.
	again, err := Resolve(ctx, cfg)
	if err != nil {
		t.Fatalf("Resolve after Stop: %v", err)
	}
	if !again.Started || again.URL != owner.URL {
		t.Fatalf("restart: Started %v URL %s, want started again at %s", again.Started, again.URL, owner.URL)
	}
	execSQL(t, again.URL, "SELECT count(*) FROM survives_restart")
	if err := StopPrivate(ctx, dir); err != nil {
		t.Fatalf("StopPrivate: %v", err)
	}
	if answers(again.URL) {
		t.Fatal("cluster still answers after StopPrivate")
	}
}

func TestResolvePrivateClusterInLongDir(t *testing.T) {
	requireServerBinaries(t)
	ctx := testContext(t)
	// Too long for a unix socket path inside it.
	dir := filepath.Join(clusterDir(t), strings.Repeat("x", maxSocketPath))
	t.Cleanup(func() {
		if err := StopPrivate(context.Background(), dir); err != nil {
			t.Errorf("cleanup: StopPrivate: %v", err)
		}
	})

	srv, err := Resolve(ctx, Config{Private: PrivateStart, CreateDatabase: true, ProbeAddr: closedAddr(t), Dir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if srv.Source != SourcePrivate || !srv.Started {
		t.Fatalf("got Source %q Started %v, want a started private cluster", srv.Source, srv.Started)
	}
	if got := currentDatabase(t, srv.URL); got != DefaultDatabase {
		t.Fatalf("URL lands in database %q, want default %q", got, DefaultDatabase)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if answers(srv.URL) {
		t.Fatal("cluster still answers after Stop")
	}
}

func TestResolveExplainsUntraversableDirAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to the postgres OS user")
	}
	requireServerBinaries(t)
	// t.TempDir's parent is mode 0700, unreachable for the postgres user.
	dir := filepath.Join(t.TempDir(), "pg")

	_, err := Resolve(testContext(t), Config{Private: PrivateStart, CreateDatabase: true, ProbeAddr: closedAddr(t), Dir: dir, Logger: testLogger(t)})
	if !errors.Is(err, ErrDirNotTraversable) {
		t.Fatalf("err = %v, want ErrDirNotTraversable", err)
	}
	if !strings.Contains(err.Error(), "chmod o+x "+filepath.Dir(filepath.Dir(dir))) {
		t.Fatalf("error does not say which directory to fix: %v", err)
	}
}

func TestResolveCreatesDatabaseNamedInURL(t *testing.T) {
	adminURL := testAdminURL(t)
	ctx := testContext(t)
	name := uniqueName(t)
	t.Cleanup(func() { dropDatabase(t, adminURL, name) })
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	dbURL := withDatabase(u, name)

	for range 2 { // the second call finds the database already there
		srv, err := Resolve(ctx, Config{Private: PrivateStart, CreateDatabase: true, URL: dbURL, Dir: t.TempDir(), Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		if srv.Source != SourceEnv || srv.Started || srv.URL != dbURL {
			t.Fatalf("got %+v, want the URL used as is", srv)
		}
		if got := currentDatabase(t, srv.URL); got != name {
			t.Fatalf("URL lands in database %q, want %q", got, name)
		}
		if got := currentDatabase(t, srv.AdminURL); got != adminDatabase {
			t.Fatalf("AdminURL lands in database %q, want %q", got, adminDatabase)
		}
	}
}

func TestResolveDoesNotFallBackFromUnreachableURL(t *testing.T) {
	dir := clusterDir(t)
	dead := "postgres://postgres@" + closedAddr(t) + "/tunnelplane?sslmode=disable"

	_, err := Resolve(testContext(t), Config{Private: PrivateStart, CreateDatabase: true, URL: dead, Dir: dir, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("Resolve succeeded with a URL nothing answers at")
	}
	if _, statErr := os.Stat(filepath.Join(dir, dataSubdir)); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("a private cluster was created although URL was set (stat: %v)", statErr)
	}
}

func TestValidate(t *testing.T) {
	if err := (Config{Dir: ".tunnelplane/postgres"}).Validate(); err != nil {
		t.Fatalf("minimal config rejected: %v", err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"empty Dir", Config{}, []string{"Dir is required"}},
		{"no port", Config{Dir: "d", ProbeAddr: "localhost"}, []string{"ProbeAddr"}},
		{"bad port", Config{Dir: "d", ProbeAddr: "127.0.0.1:http"}, []string{"ProbeAddr", "invalid port"}},
		{"port out of range", Config{Dir: "d", ProbeAddr: "127.0.0.1:70000"}, []string{"ProbeAddr"}},
		{"no host", Config{Dir: "d", ProbeAddr: ":5432"}, []string{"ProbeAddr", "no host"}},
		{"not a postgres URL", Config{Dir: "d", URL: "mysql://root@localhost/db"}, []string{"postgres://"}},
		{"database name too long", Config{Dir: "d", Database: strings.Repeat("d", 64)}, []string{"Database", "longer than 63"}},
		{"every problem at once", Config{ProbeAddr: "nope"}, []string{"Dir is required", "ProbeAddr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, rerr := Resolve(context.Background(), tt.cfg); rerr == nil {
				t.Error("Resolve accepted an invalid config")
			}
		})
	}
}

func TestResolveWithoutPostgresSaysHowToProceed(t *testing.T) {
	empty := t.TempDir()
	orig := searchDirs
	searchDirs = func() []string { return []string{empty} }
	t.Cleanup(func() { searchDirs = orig })
	probe := closedAddr(t)

	_, err := Resolve(testContext(t), Config{Private: PrivateStart, CreateDatabase: true, ProbeAddr: probe, Dir: clusterDir(t), Logger: testLogger(t)})
	if !errors.Is(err, ErrNoPostgres) {
		t.Fatalf("err = %v, want ErrNoPostgres", err)
	}
	for _, want := range []string{
		"TUNNELPLANE_DATABASE_URL",
		probe,
		"sudo apt-get update && sudo apt-get install -y postgresql",
		"sudo dnf install postgresql-server",
		"brew install postgresql@16",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

// Commands that run against an operator's server never start a private cluster: with no URL and
// nothing at the probe address they say what to give.
func TestResolveNeverStartsAPrivateClusterUnlessAllowed(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []Private{PrivateNever, PrivateReuse} {
		_, err := Resolve(testContext(t), Config{Private: mode, ProbeAddr: closedAddr(t), Dir: dir, Logger: testLogger(t)})
		if !errors.Is(err, ErrNoPostgres) || !strings.Contains(err.Error(), "--database-url") {
			t.Fatalf("mode %d: %v, want ErrNoPostgres naming --database-url", mode, err)
		}
		if _, statErr := os.Stat(filepath.Join(dir, dataSubdir)); !errors.Is(statErr, os.ErrNotExist) {
			t.Fatalf("mode %d: a private cluster was created (stat: %v)", mode, statErr)
		}
	}
}

// A mistyped database name does not become a new, empty database unless the command may create
// one (serve, init, migrate).
func TestResolveDoesNotCreateADatabaseUnlessAllowed(t *testing.T) {
	adminURL := testAdminURL(t)
	ctx := testContext(t)
	name := uniqueName(t)
	t.Cleanup(func() { dropDatabase(t, adminURL, name) })
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(ctx, Config{URL: withDatabase(u, name), Dir: t.TempDir(), Logger: testLogger(t)})
	if !errors.Is(err, ErrNoDatabase) || !strings.Contains(err.Error(), name) {
		t.Fatalf("a missing database named in the URL: %v, want ErrNoDatabase naming it", err)
	}
	if answers(withDatabase(u, name)) {
		t.Fatal("the database was created")
	}
	_, err = Resolve(ctx, Config{ProbeAddr: u.Host, Database: name, Dir: t.TempDir(), Logger: testLogger(t)})
	if !errors.Is(err, ErrNoDatabase) {
		t.Fatalf("a missing database on the local server: %v, want ErrNoDatabase", err)
	}
	if answers(withDatabase(u, name)) {
		t.Fatal("the database was created on the local server")
	}
}
