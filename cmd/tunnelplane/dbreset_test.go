package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// A data dir that is not the log's says how to start over, and `db reset` drops the database only
// once the operator typed its name; init then starts a new log.
func TestDBResetStartsOverOnlyWhenConfirmed(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	if r := tp(t, "init", "--database-url", u, "--data-dir", t.TempDir()); r.code != 0 {
		t.Fatalf("init: %d %s", r.code, r.stderr)
	}
	fresh := t.TempDir()
	r := tp(t, "init", "--database-url", u, "--data-dir", fresh)
	if r.code == 0 || !strings.Contains(r.stderr, "tunnelplane db reset") || !strings.Contains(r.stderr, "--database-url") {
		t.Fatalf("init with a data dir that is not the log's: %d %s", r.code, r.stderr)
	}
	reset := func(input string, args ...string) result {
		var out, errb bytes.Buffer
		code := runIO(append([]string{"db", "reset", "--database-url", u, "--data-dir", fresh}, args...), strings.NewReader(input), &out, &errb)
		return result{code, out.String(), errb.String()}
	}
	name := u[strings.LastIndex(u, "/")+1:]
	name, _, _ = strings.Cut(name, "?")
	if r := reset("no\n"); r.code == 0 || !strings.Contains(r.stderr, "nothing dropped") || !strings.Contains(r.stderr, name) {
		t.Fatalf("reset without confirmation: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := tp(t, "verify", "--database-url", u, "--data-dir", fresh); strings.Contains(r.stderr, "does not exist") {
		t.Fatalf("the database is gone after a refused reset: %s", r.stderr)
	}
	if r := reset(name + "\n"); r.code != 0 || !strings.Contains(r.stdout, "dropped database") {
		t.Fatalf("confirmed reset: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := tp(t, "init", "--database-url", u, "--data-dir", fresh); r.code != 0 {
		t.Fatalf("init after reset: %d %s", r.code, r.stderr)
	}
	if r := reset("", "--yes"); r.code != 0 {
		t.Fatalf("reset --yes: %d %s", r.code, r.stderr)
	}
}

// Commands other than serve, init and migrate never create a database: a mistyped name is an
// error that says so, and the database does not appear.
func TestOnlyServeInitAndMigrateCreateADatabase(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t) // a server URL; the test's own database name is swapped below
	base, _, _ := strings.Cut(u, "?")
	base = base[:strings.LastIndex(base, "/")+1]
	for _, args := range [][]string{
		{"verify"}, {"projections", "status"}, {"control", "--api-addr", "127.0.0.1:0"}, {"migrate", "version"}, {"db", "url"},
	} {
		typo := base + "tptest_typo_" + strings.ReplaceAll(strings.Join(args[:1], ""), "-", "") + "_" + fmt.Sprint(time.Now().UnixNano()) + "?sslmode=disable"
		r := tp(t, append(args, "--database-url", typo, "--data-dir", t.TempDir())...)
		if r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
			t.Errorf("%v with a mistyped database: exit %d %s", args, r.code, r.stderr)
		}
		if r := tp(t, "db", "url", "--database-url", typo, "--data-dir", t.TempDir()); r.code == 0 {
			t.Errorf("%v created the mistyped database", args)
		}
	}
}
