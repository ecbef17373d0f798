package main

import (
	"strings"
	"testing"
)

// admin webhooks: create prints the whsec_ secret last, once; list and show never do; a private
// address is refused, naming SSRF; rotate-secret prints a new one; delete ends it.
func TestAdminWebhooks(t *testing.T) {
	t.Parallel()
	e := startAdminEnv(t)
	e.must(t, "admin", "orgs", "create", "acme")
	r := e.must(t, "admin", "webhooks", "create", "--org", "acme", "--name", "chatops", "--url", "https://hooks.example.com/tp",
		"--type", "access.requested,grant.expiring")
	secret := lastLine(r.stdout)
	if !strings.HasPrefix(secret, "whsec_") || !strings.Contains(r.stdout, "the signing secret is shown once") || !strings.HasPrefix(r.stdout, "created webhook ") {
		t.Fatalf("create: %s", r.stdout)
	}
	id := strings.Fields(r.stdout)[2]
	for _, args := range [][]string{{"list"}, {"show", id}, {"list", "--json"}} {
		out := e.must(t, append([]string{"admin", "webhooks", "--org", "acme"}, args...)...).stdout
		if !strings.Contains(out, id) || !strings.Contains(out, "access.requested,grant.expiring") && !strings.Contains(out, `"grant.expiring"`) ||
			strings.Contains(out, secret) || strings.Contains(out, strings.TrimPrefix(secret, "whsec_")) {
			t.Fatalf("%v: %s", args, out)
		}
	}
	if r := e.run(t, "admin", "webhooks", "create", "--org", "acme", "--name", "meta", "--url", "https://169.254.169.254/latest"); r.code == 0 ||
		!strings.Contains(r.stderr, "SSRF") {
		t.Fatalf("a link-local endpoint: %d %s", r.code, r.stderr)
	}
	rot := e.must(t, "admin", "webhooks", "rotate-secret", id, "--org", "acme")
	if s := lastLine(rot.stdout); !strings.HasPrefix(s, "whsec_") || s == secret {
		t.Fatalf("rotate-secret: %s", rot.stdout)
	}
	e.must(t, "admin", "webhooks", "update", id, "--org", "acme", "--name", "chatops", "--url", "https://hooks.example.com/v2")
	if r := e.must(t, "admin", "webhooks", "delete", id, "--org", "acme", "--reason", "moved"); !strings.HasPrefix(r.stdout, "deleted webhook "+id) {
		t.Fatalf("delete: %s", r.stdout)
	}
	if out := e.must(t, "admin", "webhooks", "list", "--org", "acme").stdout; strings.Contains(out, id) {
		t.Fatalf("a deleted endpoint is listed: %s", out)
	}
}
