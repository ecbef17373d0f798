package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// `admin tunnels create/update` set a tunnel's labels and CORS setting (validated by the control
// plane), `admin tunnels list` shows the labels, and `admin access-keys create --label` issues a
// key for a label selector, listed with it.
func TestAdminTunnelLabelsCORSAndLabelKeys(t *testing.T) {
	t.Parallel()
	e := startAdminEnv(t)
	as := func(args ...string) result { return e.run(t, args...) }
	ok := func(args ...string) result {
		t.Helper()
		r := as(args...)
		if r.code != 0 {
			t.Fatalf("%v: %d %s %s", args, r.code, r.stdout, r.stderr)
		}
		return r
	}
	ok("admin", "orgs", "create", "acme", "--owner", "alice")
	ok("admin", "tunnels", "create", "llm", "--org", "acme", "--upstream", "http://127.0.0.1:11434", "--label", "team=ml")
	ok("admin", "tunnels", "update", "llm", "--org", "acme", "--cors-origin", "https://app.example.com", "--label", "team=ml", "--label", "env=dev")
	for _, bad := range [][]string{
		{"--cors-origin", "https://app.example.com/path"},
		{"--cors", "everyone"},
		{"--label", "Team=ML"},
		{"--label", "team"},
		{"--label", "team=ml", "--clear-labels"},
	} {
		if r := as(append([]string{"admin", "tunnels", "update", "llm", "--org", "acme"}, bad...)...); r.code == 0 {
			t.Errorf("update %v was accepted: %s", bad, r.stdout)
		}
	}
	poll.Until(t, 10*time.Second, "the tunnel listed with its labels", func() bool {
		return strings.Contains(as("admin", "tunnels", "list", "--org", "acme").stdout, "env=dev,team=ml")
	})

	r := ok("admin", "access-keys", "create", "--org", "acme", "--label", "team=ml", "--ttl", "30d")
	if !strings.HasPrefix(lastLine(r.stdout), "tpk_") {
		t.Fatalf("create --label: %s", r.stdout)
	}
	if r := as("admin", "access-keys", "create", "--org", "acme", "--ttl", "30d"); r.code == 0 || !strings.Contains(r.stderr, "--label") {
		t.Fatalf("create without --tunnel or --label: %d %s", r.code, r.stderr)
	}
	if r := as("admin", "access-keys", "create", "--org", "acme", "--tunnel", "llm", "--label", "team=ml"); r.code == 0 {
		t.Fatalf("create with --tunnel and --label: %s", r.stdout)
	}
	poll.Until(t, 10*time.Second, "the key listed with its selector", func() bool {
		return strings.Contains(as("admin", "access-keys", "list", "--org", "acme").stdout, "labels team=ml")
	})
}
