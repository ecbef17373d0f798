package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/migrations"
)

type result struct {
	code           int
	stdout, stderr string
}

func tp(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestInitIsHarmlessToRepeat(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	first := tp(t, "init", "--database-url", u, "--data-dir", dir)
	if first.code != 0 {
		t.Fatalf("init: %d %s", first.code, first.stderr)
	}
	lines := strings.Split(strings.TrimSpace(first.stdout), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "fingerprint: SHA256:") || !strings.Contains(first.stdout, "(created)") {
		t.Fatalf("init output:\n%s", first.stdout)
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "keys", "log", "*.pem"))
	if len(keys) != 1 {
		t.Fatalf("key files: %v", keys)
	}
	st, _ := os.Stat(keys[0])
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
	second := tp(t, "migrate", "up", "--database-url", u, "--data-dir", dir)
	if second.code != 0 || !strings.Contains(second.stdout, "already initialised") || !strings.HasSuffix(strings.TrimSpace(second.stdout), last) {
		t.Fatalf("second run: %d\n%s\n%s", second.code, second.stdout, second.stderr)
	}
	// A different data dir (another key) is refused rather than starting a second log.
	other := tp(t, "init", "--database-url", u, "--data-dir", t.TempDir())
	if other.code == 0 || !strings.Contains(other.stderr, "does not hold it") {
		t.Fatalf("init with another data dir: %d\n%s", other.code, other.stderr)
	}
	v := tp(t, "migrate", "version", "--database-url", u, "--data-dir", dir)
	latest, err := migrations.Latest()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("schema version %d of %d", latest, latest); v.code != 0 || !strings.Contains(v.stdout, want) {
		t.Fatalf("migrate version: %+v", v)
	}
}

func TestVerifyExitCodes(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	if r := tp(t, "init", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	ok := tp(t, "verify", "--database-url", u, "--data-dir", dir)
	if ok.code != 0 || !strings.HasPrefix(ok.stdout, "ok: 1 records verified") || !strings.Contains(ok.stdout, "head hash: ") {
		t.Fatalf("verify intact: %d\n%s%s", ok.code, ok.stdout, ok.stderr)
	}
	js := tp(t, "verify", "--json", "--database-url", u, "--data-dir", dir)
	var rep struct {
		OK    bool   `json:"ok"`
		Count uint64 `json:"count"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil || !rep.OK || rep.Count != 1 || js.code != 0 {
		t.Fatalf("verify --json: %v %+v\n%s", err, rep, js.stdout)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE events SET metadata = convert_to('{"x":1}', 'UTF8') WHERE global_position = 0`); err != nil {
		t.Fatal(err)
	}
	bad := tp(t, "verify", "--database-url", u, "--data-dir", dir)
	if bad.code != 1 || !strings.Contains(bad.stdout, "FAILED at position 0: hash_mismatch") {
		t.Fatalf("verify damaged: %d\n%s%s", bad.code, bad.stdout, bad.stderr)
	}
	down := tp(t, "verify", "--database-url", "postgres://postgres@127.0.0.1:1/nothing?connect_timeout=2", "--data-dir", dir)
	if down.code != 2 {
		t.Fatalf("verify without a database: exit %d, want 2\n%s", down.code, down.stderr)
	}
}

func TestBadFlagValues(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"verify", "--log-level", "loud"},
		{"verify", "--log-format", "xml"},
		{"verify", "--data-dir", ""},
		{"migrate", "down", "zero"},
		{"control", "--oidc-issuer", "https://idp.example"},
		{"control", "--oidc-issuer", "idp.example", "--oidc-client-id", "tunnelplane-cli"},
		{"control", "--oidc-issuer", "https://idp.example", "--oidc-client-id", "tunnelplane-cli", "--login-ttl", "48h"},
		{"login", "--control", "ftp://cp.example", "--config-dir", "/nonexistent"},
	} {
		r := tp(t, args...)
		if r.code == 0 || r.stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want an error", args, r.code, r.stderr)
		}
	}
}

func TestBenchStoreSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store benchmark briefly")
	}
	t.Parallel()
	srv := pgtest.Server(t)
	r := tp(t, "bench", "store", "--duration", "150ms", "--rounds", "1", "--json", "--database-url", srv.AdminURL, "--data-dir", t.TempDir())
	if r.code != 0 {
		t.Fatalf("bench store: %d %s", r.code, r.stderr)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("bench output: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"raw_insert_eps", "append_eps", "ratio", "read_eps", "verify_eps"} {
		if v, ok := res[k].(float64); !ok || v <= 0 {
			t.Errorf("bench JSON %s = %v", k, res[k])
		}
	}
}

// connect reports every problem with its flags at once, before it looks anything up.
func TestConnectBadFlags(t *testing.T) {
	t.Parallel()
	r := tp(t, "connect", "--node", "ftp://x", "--token", "t", "--to", "127.0.0.1:1", "--control-url", "http://127.0.0.1:1", "--fingerprint", "md5:x")
	if r.code == 0 || !strings.Contains(r.stderr, `NodeURL: "ftp://x"`) || !strings.Contains(r.stderr, `fingerprint "md5:x"`) ||
		strings.Contains(r.stderr, "Upstream") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	r = tp(t, "connect", "--node", "ws://127.0.0.1:1/v1/agent", "--token", "t", "--to", "http://[::1")
	if r.code == 0 || !strings.Contains(r.stderr, "pin the node's host key") || !strings.Contains(r.stderr, "Upstream") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	r = tp(t, "connect", "--node", "ws://127.0.0.1:1/v1/agent", "--token", "t", "--shutdown-timeout", "-1s", "--insecure-skip-pin")
	if r.code != 1 || !strings.Contains(r.stderr, "ShutdownTimeout must be positive") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
}

func TestUpstreamURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"11434":                  "http://127.0.0.1:11434",
		"localhost:8080":         "http://localhost:8080",
		"[::1]:8080":             "http://[::1]:8080",
		"http://127.0.0.1:11434": "http://127.0.0.1:11434",
		"tcp://db:5432":          "tcp://db:5432",
		"99999":                  "99999",
		"nonsense":               "nonsense",
	} {
		if got := upstreamURL(in); got != want {
			t.Errorf("upstreamURL(%q) = %q, want %q", in, got, want)
		}
	}
}
