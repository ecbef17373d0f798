package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/logbuf"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/projections"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		// fasthttp (the node's ingress): the worker-pool cleaner notices a stopped server within
		// its 10s idle period; the clock goroutine serves the whole process.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// startTestControlPlane runs a control plane in-process on loopback over database u and data dir.
func startTestControlPlane(t *testing.T, u, dir string) *controlapp.App {
	t.Helper()
	g := &globals{databaseURL: u, dataDir: dir, stdout: io.Discard, stderr: io.Discard, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := startControlPlane(context.Background(), g, controlPlaneOptions{Listener: ln, DBMaxConns: 8})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	return cp
}

// TestAdminBootstrapAndREST: a fresh install is bootstrapped with `admin token create` (offline,
// the token on the last line), then driven through the REST API with the admin commands.
func TestAdminBootstrapAndREST(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	db := []string{"--database-url", u, "--data-dir", dir}

	// Before anything runs: the superadmin token bootstraps the log, the schema and the keys.
	boot := tp(t, append([]string{"admin", "token", "create", "--user", "root", "--role", "superadmin"}, db...)...)
	if boot.code != 0 {
		t.Fatalf("token create: %d %s", boot.code, boot.stderr)
	}
	root := lastLine(boot.stdout)
	if strings.Count(root, ".") != 2 || !strings.Contains(boot.stdout, "superadmin of the platform for root") {
		t.Fatalf("token create output:\n%s", boot.stdout)
	}
	again := tp(t, append([]string{"admin", "token", "create", "--user", "root", "--role", "superadmin", "--ttl", "1h"}, db...)...)
	if again.code != 0 || !strings.Contains(again.stdout, "already held") {
		t.Fatalf("second token create: %d %s %s", again.code, again.stdout, again.stderr)
	}

	cp := startTestControlPlane(t, u, dir)
	as := func(tok string, args ...string) result {
		return tp(t, append(args, "--api-url", cp.URL, "--token", tok)...)
	}
	if r := as(root, "admin", "orgs", "create", "acme", "--owner", "alice"); r.code != 0 || !strings.HasPrefix(r.stdout, "created organization ") {
		t.Fatalf("orgs create: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Offline grants by org name, while the control plane runs; the grant counts at once.
	bob := tp(t, append([]string{"admin", "token", "create", "--org", "acme", "--user", "bob", "--role", "operator"}, db...)...)
	if bob.code != 0 {
		t.Fatalf("token create for bob: %d %s", bob.code, bob.stderr)
	}
	bobTok := lastLine(bob.stdout)
	if r := as(bobTok, "admin", "tunnels", "create", "llm", "--upstream", "http://127.0.0.1:11434"); r.code != 0 {
		t.Fatalf("tunnels create: %d %s", r.code, r.stderr)
	}
	r := as(bobTok, "admin", "tunnels", "update", "llm", "--upstream", "http://127.0.0.1:8080", "--if-match", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "version 2") {
		t.Fatalf("tunnels update: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// A stale --if-match exits non-zero with the problem detail.
	r = as(bobTok, "admin", "tunnels", "update", "llm", "--upstream", "http://127.0.0.1:9", "--if-match", "1")
	if r.code == 0 || !strings.Contains(r.stderr, "412 Precondition Failed") {
		t.Fatalf("stale update: %d %s", r.code, r.stderr)
	}
	r = as(bobTok, "admin", "tunnels", "list", "--json")
	var tunnels struct {
		Items []api.Tunnel `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &tunnels); err != nil || r.code != 0 || len(tunnels.Items) != 1 || tunnels.Items[0].Upstream != "http://127.0.0.1:8080" {
		t.Fatalf("tunnels list --json: %v %d %s %s", err, r.code, r.stdout, r.stderr)
	}
	r = as(bobTok, "admin", "tunnels", "list")
	if !strings.HasPrefix(r.stdout, "NAME ") || !strings.Contains(r.stdout, "llm") {
		t.Fatalf("tunnels list: %s", r.stdout)
	}
	issued := as(bobTok, "admin", "tokens", "issue", "llm", "--ttl", "1h")
	if issued.code != 0 || strings.Count(lastLine(issued.stdout), ".") != 2 {
		t.Fatalf("tokens issue: %d %s %s", issued.code, issued.stdout, issued.stderr)
	}
	if r := as(bobTok, "admin", "tokens", "list"); r.code != 0 || !strings.Contains(r.stdout, "active") || strings.Contains(r.stdout, lastLine(issued.stdout)) {
		t.Fatalf("tokens list: %d %s", r.code, r.stdout)
	}
	// Access keys: created for a tunnel by name, shown once (the last line), listed without it,
	// revoked.
	key := as(bobTok, "admin", "access-keys", "create", "--tunnel", "llm", "--ttl", "30d", "--cidr", "10.0.0.0/8", "--cidr", "192.0.2.1")
	secret := lastLine(key.stdout)
	if key.code != 0 || !strings.HasPrefix(secret, "tpk_") || !strings.Contains(key.stdout, "the key is shown once") {
		t.Fatalf("access-keys create: %d %s %s", key.code, key.stdout, key.stderr)
	}
	keyID := strings.Fields(key.stdout)[3]
	r = as(bobTok, "admin", "access-keys", "list", "--tunnel", "llm")
	if r.code != 0 || !strings.Contains(r.stdout, keyID) || !strings.Contains(r.stdout, "10.0.0.0/8,192.0.2.1/32") || strings.Contains(r.stdout, secret) {
		t.Fatalf("access-keys list: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(bobTok, "admin", "access-keys", "revoke", keyID, "--reason", "test"); r.code != 0 || !strings.HasPrefix(r.stdout, "revoked access key "+keyID) {
		t.Fatalf("access-keys revoke: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(bobTok, "admin", "access-keys", "list", "--state", "revoked"); r.code != 0 || !strings.Contains(r.stdout, keyID) {
		t.Fatalf("access-keys list --state revoked: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(bobTok, "admin", "access-keys", "create", "--tunnel", "llm", "--ttl", "400d"); r.code == 0 || !strings.Contains(r.stderr, "ttl") {
		t.Fatalf("access-keys create --ttl 400d: %d %s", r.code, r.stderr)
	}
	// Grants and access requests: a viewer's token carries groups; root grants the group and
	// revokes it; the viewer asks for access, may not approve it, and root denies it with a reason.
	vic := tp(t, append([]string{"admin", "token", "create", "--org", "acme", "--user", "vic", "--role", "viewer", "--group", "ml-team,ops"}, db...)...)
	if vic.code != 0 {
		t.Fatalf("token create for vic: %d %s", vic.code, vic.stderr)
	}
	vicTok := lastLine(vic.stdout)
	g := as(root, "admin", "grants", "create", "--org", "acme", "--tunnel", "llm", "--group", "ml-team", "--ttl", "7d")
	if g.code != 0 || !strings.HasPrefix(g.stdout, "created grant ") {
		t.Fatalf("grants create: %d %s %s", g.code, g.stdout, g.stderr)
	}
	grantID := strings.Fields(g.stdout)[2]
	if r := as(vicTok, "admin", "grants", "list", "--tunnel", "llm"); r.code != 0 || !strings.Contains(r.stdout, "group:ml-team") || !strings.Contains(r.stdout, "1 approval(s) from admin") {
		t.Fatalf("grants list: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(vicTok, "admin", "grants", "revoke", grantID, "--tunnel", "llm"); r.code == 0 || !strings.Contains(r.stderr, "403 Forbidden") {
		t.Fatalf("a viewer revokes a grant: %d %s", r.code, r.stderr)
	}
	if r := as(root, "admin", "grants", "revoke", grantID, "--org", "acme", "--tunnel", "llm", "--reason", "done"); r.code != 0 {
		t.Fatalf("grants revoke: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(root, "admin", "grants", "list", "--org", "acme", "--tunnel", "llm", "--state", "all"); r.code != 0 || !strings.Contains(r.stdout, "revoked") {
		t.Fatalf("grants list --state all: %d %s %s", r.code, r.stdout, r.stderr)
	}
	req := as(vicTok, "admin", "access-requests", "create", "--tunnel", "llm", "--duration", "8h", "--reason", "debug the chat UI")
	if req.code != 0 || !strings.HasPrefix(req.stdout, "requested access ") {
		t.Fatalf("access-requests create: %d %s %s", req.code, req.stdout, req.stderr)
	}
	reqID := strings.Fields(req.stdout)[2]
	if r := as(vicTok, "admin", "access-requests", "approve", reqID); r.code == 0 || !strings.Contains(r.stderr, "403 Forbidden") {
		t.Fatalf("approving one's own request: %d %s", r.code, r.stderr)
	}
	if r := as(root, "admin", "access-requests", "deny", reqID, "--org", "acme"); r.code == 0 || !strings.Contains(r.stderr, "reason") {
		t.Fatalf("a denial without a reason: %d %s", r.code, r.stderr)
	}
	if r := as(root, "admin", "access-requests", "deny", reqID, "--org", "acme", "--reason", "not this week"); r.code != 0 {
		t.Fatalf("access-requests deny: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(vicTok, "admin", "access-requests", "list", "--state", "denied"); r.code != 0 || !strings.Contains(r.stdout, reqID) {
		t.Fatalf("access-requests list: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Role changes through the API count at once, both ways.
	if r := as(root, "admin", "roles", "unassign", "bob", "operator", "--org", "acme"); r.code != 0 {
		t.Fatalf("roles unassign: %d %s", r.code, r.stderr)
	}
	if r := as(bobTok, "admin", "tunnels", "create", "x", "--upstream", "http://127.0.0.1:1", "--org", "acme"); r.code == 0 || !strings.Contains(r.stderr, "403 Forbidden") {
		t.Fatalf("bob after unassign: %d %s", r.code, r.stderr)
	}
	if r := as(root, "admin", "roles", "assign", "bob", "viewer", "--org", "acme"); r.code != 0 {
		t.Fatalf("roles assign: %d %s", r.code, r.stderr)
	}
	if r := as(bobTok, "admin", "tunnels", "list", "--org", "acme"); r.code != 0 {
		t.Fatalf("bob as viewer: %d %s", r.code, r.stderr)
	}
	if r := as(root, "admin", "roles", "list", "--org", "acme"); r.code != 0 || !strings.Contains(r.stdout, "alice") || !strings.Contains(r.stdout, "viewer") {
		t.Fatalf("roles list: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(root, "admin", "keys", "rotate", "token"); r.code != 0 {
		t.Fatalf("keys rotate: %d %s", r.code, r.stderr)
	}
	if r := as(root, "admin", "keys", "list"); r.code != 0 || !strings.Contains(r.stdout, "rotated") || !strings.Contains(r.stdout, "token") {
		t.Fatalf("keys list: %d %s", r.code, r.stdout)
	}
	if r := as(root, "admin", "audit", "search", "--org", "*", "--type", "tunnel.created"); r.code != 0 || !strings.Contains(r.stdout, "tunnel.created") || !strings.Contains(r.stdout, "bob") {
		t.Fatalf("audit search: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := as(root, "admin", "nodes", "list"); r.code != 0 || !strings.HasPrefix(r.stdout, "NAME") {
		t.Fatalf("nodes list: %d %s", r.code, r.stderr)
	}
	// Refusals exit non-zero with the problem.
	if r := as(root, "admin", "orgs", "create", "acme"); r.code == 0 || !strings.Contains(r.stderr, "409 Conflict") {
		t.Fatalf("duplicate org: %d %s", r.code, r.stderr)
	}
	if r := as("not-a-token", "admin", "orgs", "list"); r.code == 0 || !strings.Contains(r.stderr, "401 Unauthorized") {
		t.Fatalf("bad token: %d %s", r.code, r.stderr)
	}
	if r := as(root, "admin", "tunnels", "create", "Bad Name", "--upstream", "x", "--org", "acme"); r.code == 0 || !strings.Contains(r.stderr, "name: must be") {
		t.Fatalf("invalid tunnel: %d %s", r.code, r.stderr)
	}
	// Offline token creation refuses what makes no sense.
	for _, args := range [][]string{
		{"--user", "x", "--role", "superadmin", "--org", "acme"},
		{"--user", "x", "--role", "viewer"},
		{"--user", "x", "--role", "janitor", "--org", "acme"},
		{"--role", "viewer", "--org", "acme"},
		{"--user", "x", "--role", "viewer", "--org", "initech"},
		{"--user", "x", "--role", "viewer", "--org", "acme", "--ttl", "0s"},
	} {
		if r := tp(t, append(append([]string{"admin", "token", "create"}, args...), db...)...); r.code == 0 || r.stderr == "" {
			t.Errorf("token create %v: exit %d", args, r.code)
		}
	}
}

// TestProjectionsCLI: status from the database, and a rebuild that swaps in an identical read
// model while the control plane keeps running.
func TestProjectionsCLI(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	db := []string{"--database-url", u, "--data-dir", dir}
	root := lastLine(tp(t, append([]string{"admin", "token", "create", "--user", "root", "--role", "superadmin"}, db...)...).stdout)
	cp := startTestControlPlane(t, u, dir)
	as := func(args ...string) result { return tp(t, append(args, "--api-url", cp.URL, "--token", root)...) }
	if r := as("admin", "orgs", "create", "acme", "--owner", "root"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	for i := range 12 {
		if r := as("admin", "tunnels", "create", fmt.Sprintf("t-%d", i), "--upstream", "http://127.0.0.1:1", "--org", "acme"); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	if r := as("admin", "tunnels", "delete", "t-3", "--org", "acme", "--reason", "test"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	dump := func() string {
		var b bytes.Buffer
		rows, err := cp.Log.Pool.Query(context.Background(), `SELECT tunnel_id, name, upstream, state, version, position FROM tunnels ORDER BY tunnel_id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			v, _ := rows.Values()
			fmt.Fprintln(&b, v...)
		}
		return b.String()
	}
	head, err := cp.Log.Store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Runner.WaitFor(ctx, head-1, "tunnels"); err != nil {
		t.Fatal(err)
	}
	before := dump()

	st := tp(t, append([]string{"projections", "status", "--json"}, db...)...)
	var status struct {
		Head        int64             `json:"head"`
		Projections []projectionState `json:"projections"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &status); err != nil || st.code != 0 || len(status.Projections) != len(projections.All()) {
		t.Fatalf("projections status: %v %d %s %s", err, st.code, st.stdout, st.stderr)
	}
	reb := tp(t, append([]string{"projections", "rebuild", "tunnels"}, db...)...)
	if reb.code != 0 || !strings.Contains(reb.stdout, "rebuilt tunnels: generation 2") || !strings.Contains(reb.stderr, "rebuild tunnels:") {
		t.Fatalf("projections rebuild: %d\n%s\n%s", reb.code, reb.stdout, reb.stderr)
	}
	if after := dump(); after != before || strings.Count(before, "\n") != 12 {
		t.Fatalf("the rebuilt read model differs:\n%s\n%s", before, after)
	}
	// The running control plane keeps applying into the new generation.
	if r := as("admin", "tunnels", "create", "after", "--upstream", "http://127.0.0.1:1", "--org", "acme"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := as("admin", "tunnels", "list", "--org", "acme"); !strings.Contains(r.stdout, "after") {
		// The list may race the projection; poll briefly.
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(as("admin", "tunnels", "list", "--org", "acme").stdout, "after") {
			if time.Now().After(deadline) {
				t.Fatal("a tunnel created after the rebuild never showed")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	st = tp(t, append([]string{"projections", "status"}, db...)...)
	if st.code != 0 || !strings.Contains(st.stdout, "tunnels") {
		t.Fatalf("projections status: %d %s", st.code, st.stdout)
	}
	if r := tp(t, append([]string{"projections", "rebuild", "nope"}, db...)...); r.code == 0 || !strings.Contains(r.stderr, "unknown projection") {
		t.Fatalf("rebuild of an unknown projection: %d %s", r.code, r.stderr)
	}
}

// TestControlCommand: `tunnelplane control` serves health, readiness, metrics and the API, and
// stops gracefully when its context ends (as on SIGINT/SIGTERM).
func TestControlCommand(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	var out, errb logbuf.Buffer
	root := newRootCommand(&out, &errb)
	root.SetArgs([]string{"control", "--api-addr", "127.0.0.1:0", "--database-url", u, "--data-dir", t.TempDir(), "--log-format", "json"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	var base string
	for deadline := time.Now().Add(30 * time.Second); base == ""; {
		if s := out.String(); strings.HasPrefix(s, "api: ") {
			base = strings.TrimSpace(strings.TrimPrefix(s, "api: "))
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("control exited early: %v\n%s", err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("control did not start:\n%s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	get := func(path string) (int, string) {
		res, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz: %d", code)
	}
	poll.Until(t, 10*time.Second, "/readyz answers 200", func() bool { code, _ := get("/readyz"); return code == 200 })
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "tunnelplane_projection_position") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics: %d\n%s", code, body)
	}
	if code, body := get("/api/v1/tunnels"); code != 401 || !strings.Contains(body, "unauthenticated") {
		t.Errorf("unauthenticated API call: %d %s", code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("control: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("control did not stop")
	}
	if !strings.Contains(errb.String(), `"msg":"http request"`) || !strings.Contains(errb.String(), `"request_id"`) {
		t.Errorf("request logs (json, with request ids) missing:\n%s", errb.String())
	}
}

func TestControlBadFlags(t *testing.T) {
	for _, c := range []struct {
		env  [2]string
		args []string
		want string
	}{
		{args: []string{"control", "--api-addr", "nonsense"}, want: "--api-addr"},
		{args: []string{"control", "--api-addr", "127.0.0.1:99999"}, want: "bad port"},
		{args: []string{"control", "--jwks-file", "/nonexistent"}, want: "--jwt-issuer is required"},
		{args: []string{"control", "--db-max-conns", "-3"}, want: "--db-max-conns"},
		{env: [2]string{"TUNNELPLANE_DB_MAX_CONNS", "many"}, args: []string{"control"}, want: "TUNNELPLANE_DB_MAX_CONNS"},
		{env: [2]string{"TUNNELPLANE_SHUTDOWN_TIMEOUT", "soon"}, args: []string{"control"}, want: "TUNNELPLANE_SHUTDOWN_TIMEOUT"},
		{args: []string{"bench", "api", "--clients", "0"}, want: "--clients"},
	} {
		if c.env[0] != "" {
			t.Setenv(c.env[0], c.env[1])
		}
		r := tp(t, append(c.args, "--database-url", "postgres://postgres@127.0.0.1:1/none?connect_timeout=1", "--data-dir", t.TempDir())...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v %v: exit %d, stderr %q; want an error about %s", c.env, c.args, r.code, r.stderr, c.want)
		}
		if c.env[0] != "" {
			os.Unsetenv(c.env[0]) // t.Setenv restores it at the end
		}
	}
}

func TestBenchAPISmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the API benchmark briefly")
	}
	t.Parallel()
	srv := pgtest.Server(t)
	r := tp(t, "bench", "api", "--duration", "300ms", "--rounds", "1", "--clients", "4", "--orgs", "2", "--json", "--database-url", srv.AdminURL, "--data-dir", t.TempDir())
	if r.code != 0 {
		t.Fatalf("bench api: %d %s", r.code, r.stderr)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("bench output: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"commands_per_s", "visible_p50_ms", "visible_p99_ms", "baseline_commands_per_s"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("bench JSON %s = %v", k, res[k])
		}
	}
}

// adminEnv is a control plane on a fresh database with a superadmin token: root runs admin
// commands against it and fails the test when one exits non-zero.
type adminEnv struct {
	cp   *controlapp.App
	root string
	// url is the database's; db the flags the offline commands need (--database-url, --data-dir).
	url string
	db  []string
}

func startAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	boot := tp(t, "admin", "token", "create", "--user", "root", "--role", "superadmin", "--database-url", u, "--data-dir", dir)
	if boot.code != 0 {
		t.Fatalf("token create: %d %s", boot.code, boot.stderr)
	}
	return &adminEnv{cp: startTestControlPlane(t, u, dir), root: lastLine(boot.stdout), url: u, db: []string{"--database-url", u, "--data-dir", dir}}
}

// run runs a command with the API URL and the superadmin token, whatever its exit.
func (e *adminEnv) run(t *testing.T, args ...string) result {
	t.Helper()
	return tp(t, append(args, "--api-url", e.cp.URL, "--token", e.root)...)
}

// must runs a command that must succeed.
func (e *adminEnv) must(t *testing.T, args ...string) result {
	t.Helper()
	r := e.run(t, args...)
	if r.code != 0 {
		t.Fatalf("%v: %d %s", args, r.code, r.stderr)
	}
	return r
}
