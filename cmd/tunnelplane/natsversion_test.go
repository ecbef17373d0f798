package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
)

// control against a NATS server older than the minimum stops before it says it started, names both
// versions, and creates nothing on the server.
func TestControlRefusesAnOldNATSBeforeSayingItStarted(t *testing.T) {
	t.Parallel()
	url, published := natstest.OldServer(t, "2.8.4")
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	if r := tp(t, "init", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	start := time.Now()
	r := tp(t, "control", "--database-url", u, "--data-dir", dir, "--api-addr", freeAddr(t), "--nats-url", url)
	if r.code == 0 || !strings.Contains(r.stderr, "version 2.8.4") || !strings.Contains(r.stderr, "2.9.0 or later") {
		t.Fatalf("control on NATS 2.8.4: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "api:") || strings.Contains(r.stderr, "control plane started") {
		t.Fatalf("control said it started:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the refusal took %v", d)
	}
	if p := published(); len(p) != 0 {
		t.Fatalf("control published %v to the old server", p)
	}
}
