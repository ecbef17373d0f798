package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/compliance/exportjobs"
	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/siem"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// env is a control plane on a fresh database, served over real HTTP.
type env struct {
	t        *testing.T
	base     string
	client   *http.Client
	store    *eventstore.Store
	runner   *projections.Runner
	svc      *commands.Service
	api      *api.Server
	registry *prometheus.Registry
	pool     *pgxpool.Pool
}

func newEnv(t *testing.T, tweak ...func(*api.Config)) *env {
	t.Helper()
	ctx := context.Background()
	u := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, u)
	dir := t.TempDir()
	logKeys := eventstore.KeyDir(dir + "/keys/log")
	key, err := logKeys.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	reg, err := eventstore.NewRegistry(types...)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("TUNNELPLANE_TEST_LOG") != "" {
		quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	kek, err := pii.NewFileKEK(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	keyring, err := pii.New(pii.Config{Pool: pool, KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, KeySource: logKeys.Load, Registry: reg, PollInterval: 200 * time.Millisecond, Logger: quiet,
		Seal: keyring.SealEvent})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	metrics := prometheus.NewRegistry()
	runner, err := projections.New(projections.Config{Store: st, Projections: projections.All(), Logger: quiet, Registerer: metrics})
	if err != nil {
		t.Fatal(err)
	}
	if err := runner.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runner.Stop)
	svc, err := commands.New(commands.Config{Store: st, Pool: pool, LogKeys: logKeys, TokenKeys: eventstore.KeyDir(dir + "/keys/token"), Logger: quiet, Subjects: keyring,
		RBACPosition: func() int64 { p, _ := runner.Position(projections.RoleAssignments); return p },
		WaitRBAC: func(ctx context.Context, pos uint64) error {
			return runner.WaitFor(ctx, pos, projections.RoleAssignments)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.EnsureTokenKey(ctx); err != nil {
		t.Fatal(err)
	}
	svc.Start(ctx)
	t.Cleanup(svc.Stop)
	secrets, err := siem.NewSecrets(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	exports, err := exportjobs.New(exportjobs.Config{Dir: dir + "/exports", Pool: pool, Log: st, Logger: quiet,
		Key: func(context.Context) (*eventstore.SigningKey, error) { return key, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := exports.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(exports.Stop)
	cfg := api.Config{Service: svc, Log: st, Runner: runner, ReadModels: readmodels.New(pool), SIEMSecrets: secrets, WebhookSecrets: secrets, Registry: metrics, Logger: quiet,
		Exports: api.ExportsOf(exports), Personal: keyring, IDTokens: &oidcauth.Exchanges{Pool: pool}}
	for _, f := range tweak {
		f(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	if cfg.PublicURL == selfURL {
		// The API's own URL, known only now (withBrowserLogin).
		cfg.PublicURL, cfg.BrowserLogins = base, &browserlogin.Store{Pool: pool}
	}
	srv, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	hs := httptest.NewUnstartedServer(srv.Handler())
	_ = hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	t.Cleanup(tr.CloseIdleConnections)
	return &env{t: t, base: hs.URL, client: &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, store: st, runner: runner, svc: svc, api: srv, registry: metrics, pool: pool}
}

// token mints a user token with the control plane's token key (as `admin token create` does).
func (e *env) token(user string) string {
	e.t.Helper()
	raw, err := token.MintUser(e.svc.TokenKey(), token.DefaultIssuer, user, "", time.Hour, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return raw
}

// grant gives a user a role directly (bootstrap), bypassing authorization.
func (e *env) grant(org, user string, role domain.Role) {
	e.t.Helper()
	ctx := commands.WithActor(context.Background(), commands.Actor{ID: "cli:test"})
	if _, err := e.svc.GrantDirect(ctx, commands.AssignRole{OrgID: org, UserID: user, Role: role}); err != nil {
		e.t.Fatal(err)
	}
}

// superadmin makes "root" a superadmin and returns a token for it.
func (e *env) superadmin() string {
	e.grant(domain.PlatformOrg, "root", domain.RoleSuperadmin)
	return e.token("root")
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r resp) problem(t *testing.T) api.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d with Content-Type %q, want application/problem+json: %s", r.status, ct, r.body)
	}
	var p api.Problem
	r.decode(t, &p)
	if p.Status != r.status || p.Title == "" || !strings.HasPrefix(p.Type, api.ProblemTypeBase) || p.RequestID == "" {
		t.Fatalf("problem shape: %+v (status %d)", p, r.status)
	}
	return p
}

// call sends a request; body may be nil, a string (sent as is) or a value (sent as JSON).
// headers are name, value pairs.
func (e *env) call(method, path, tok string, body any, headers ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: raw}
}

// must sends a request and fails the test unless it gets want.
func (e *env) must(want int, method, path, tok string, body any, headers ...string) resp {
	e.t.Helper()
	r := e.call(method, path, tok, body, headers...)
	if r.status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

// write sends a command and returns its result.
func (e *env) write(want int, method, path, tok string, body any, headers ...string) commands.Result {
	e.t.Helper()
	var res commands.Result
	e.must(want, method, path, tok, body, headers...).decode(e.t, &res)
	if res.Position == 0 {
		e.t.Fatalf("%s %s: no position in %+v", method, path, res)
	}
	return res
}

// createOrg creates an organization owned by owner and returns its id.
func (e *env) createOrg(root, name, owner string) string {
	e.t.Helper()
	return e.write(201, "POST", "/api/v1/orgs", root, map[string]string{"name": name, "owner": owner}).ID
}

func head(t *testing.T, st *eventstore.Store) uint64 {
	t.Helper()
	h, err := st.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}
