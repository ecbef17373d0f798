package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/reach"
)

// admin access who and admin tunnels activity: by tunnel name, as tables and as JSON; --at
// replays the log (before the grant: the grantee is not there); admin users delete, and the
// deleted user listed.
func TestAdminAccessWhoAndActivity(t *testing.T) {
	t.Parallel()
	env := startAdminEnv(t)
	as := func(args ...string) result { return env.must(t, args...) }
	as("admin", "orgs", "create", "acme", "--owner", "alice")
	as("admin", "tunnels", "create", "api", "--org", "acme", "--upstream", "http://127.0.0.1:1")
	before := time.Now().UTC().Format(time.RFC3339Nano)
	as("admin", "grants", "create", "--org", "acme", "--tunnel", "api", "--user", "victor", "--ttl", "1h")

	now := as("admin", "access", "who", "--org", "acme", "--tunnel", "api")
	for _, want := range []string{"user     victor", "grant", "grant.created@", "user     alice", "org_role", "superadmin"} {
		if !strings.Contains(strings.Join(strings.Fields(now.stdout), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("access who: no %q in\n%s", want, now.stdout)
		}
	}
	var past reach.Answer
	js := as("admin", "access", "who", "--org", "acme", "--tunnel", "api", "--at", before, "--json")
	if err := json.Unmarshal([]byte(js.stdout), &past); err != nil || past.Source != reach.SourceReplay || len(past.Subjects) == 0 {
		t.Fatalf("access who --at --json: %v %s", err, js.stdout)
	}
	for _, s := range past.Subjects {
		if s.ID == "victor" {
			t.Errorf("victor could reach before the grant: %+v", s)
		}
	}
	if r := env.run(t, "admin", "access", "who", "--org", "acme", "--tunnel", "api", "--at", "yesterday"); r.code == 0 || !strings.Contains(r.stderr, "RFC 3339") {
		t.Errorf("--at yesterday: %d %s", r.code, r.stderr)
	}

	act := as("admin", "tunnels", "activity", "api", "--org", "acme")
	for _, want := range []string{"tunnel.created", "grant.created", "root"} {
		if !strings.Contains(act.stdout, want) {
			t.Errorf("activity: no %q in\n%s", want, act.stdout)
		}
	}
	var a api.Activity
	js = as("admin", "tunnels", "activity", "api", "--org", "acme", "--kinds", "grants", "--json")
	if err := json.Unmarshal([]byte(js.stdout), &a); err != nil || len(a.Items) != 1 || a.Items[0].Type != "grant.created" || a.Items[0].Actor != "root" {
		t.Fatalf("activity --json: %v %s", err, js.stdout)
	}

	// admin users delete: the reason is required; afterwards victor is gone from the answer and
	// listed among the deleted users.
	if r := env.run(t, "admin", "users", "delete", "victor", "--org", "acme"); r.code == 0 || !strings.Contains(r.stderr, "--reason") {
		t.Errorf("users delete without --reason: %d %s", r.code, r.stderr)
	}
	if d := as("admin", "users", "delete", "victor", "--org", "acme", "--reason", "left the team"); !strings.Contains(d.stdout, "deleted user") {
		t.Errorf("users delete: %s", d.stdout)
	}
	after := as("admin", "access", "who", "--org", "acme", "--tunnel", "api")
	if strings.Contains(after.stdout, "user     victor") || !strings.Contains(after.stdout, "deleted users") ||
		!strings.Contains(strings.Join(strings.Fields(after.stdout), " "), "left the team") {
		t.Errorf("access who after victor's deletion:\n%s", after.stdout)
	}
}
