package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// admin exports: the control plane writes the bundle, the CLI waits for it, downloads it checked
// against its SHA-256, and verify-export passes it with no database; list and get show it.
func TestAdminExportsCreateWaitDownload(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	boot := tp(t, "admin", "token", "create", "--user", "root", "--role", "superadmin", "--database-url", u, "--data-dir", dir)
	if boot.code != 0 {
		t.Fatalf("token create: %d %s", boot.code, boot.stderr)
	}
	root := lastLine(boot.stdout)
	cp := startTestControlPlane(t, u, dir)
	as := func(args ...string) result { return tp(t, append(args, "--api-url", cp.URL, "--token", root)...) }
	if r := as("admin", "orgs", "create", "acme", "--owner", "alice"); r.code != 0 {
		t.Fatalf("orgs create: %d %s", r.code, r.stderr)
	}
	bundle := filepath.Join(t.TempDir(), "bundle.tar.zst")
	r := as("admin", "exports", "create", "--from", "0", "--to", "2", "--wait", "--out", bundle)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "wrote "+bundle) {
		t.Fatalf("exports create: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	offline := []string{"--database-url", "postgres://nobody@127.0.0.1:1/none", "--data-dir", t.TempDir()}
	if r := tp(t, append([]string{"verify-export", bundle}, offline...)...); r.code != 0 || !strings.Contains(r.stdout, "ok: ") {
		t.Fatalf("verify-export: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = as("admin", "exports", "list", "--org", "*")
	if r.code != 0 || !strings.Contains(r.stdout, " done ") || !strings.Contains(r.stdout, "whole log") {
		t.Fatalf("exports list: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := strings.Fields(strings.Split(r.stdout, "\n")[1])[0]
	if r := as("admin", "exports", "get", id); r.code != 0 || !strings.Contains(r.stdout, "positions 0..2, 3 records") {
		t.Fatalf("exports get: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A window past the log's end is refused at once, naming the field.
	if r := as("admin", "exports", "create", "--from", "0", "--to", "100000"); r.code == 0 || !strings.Contains(r.stderr, "to: is past the log's last position") {
		t.Fatalf("a window past the end: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
