package api_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// A request whose process died after claiming its Idempotency-Key (the claim row is all that is
// left) blocks a retry only briefly: 409 in-progress with a Retry-After of a few seconds, then the
// retry runs.
func TestRetryAfterACrashedIdempotentRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	tun := e.write(201, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"})
	path := "/api/v1/tunnels/" + tun.ID + "?org=acme"
	body := map[string]string{"upstream": "http://127.0.0.1:2"}
	e.must(200, "PATCH", path, alice, body, "Idempotency-Key", "k-done")

	// The same request under another key, claimed by a process that is gone.
	ctx := context.Background()
	pool := e.store.Pool()
	if _, err := pool.Exec(ctx, `INSERT INTO idempotency_keys (actor, key, command, request_hash, status, response)
		SELECT actor, 'k-crashed', command, request_hash, 0, 'null' FROM idempotency_keys WHERE key = 'k-done'`); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	r := e.call("PATCH", path, alice, body, "Idempotency-Key", "k-crashed")
	if r.status != 409 || r.problem(t).Type != api.ProblemTypeBase+"in-progress" {
		t.Fatalf("retry during the claim: %d %s", r.status, r.body)
	}
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 5 {
		t.Fatalf("Retry-After %q, want 1 to 5 seconds", r.header.Get("Retry-After"))
	}
	poll.Until(t, 10*time.Second, "the retry runs once the crashed request's claim expired", func() bool {
		r = e.call("PATCH", path, alice, body, "Idempotency-Key", "k-crashed")
		if r.status != 200 && r.status != 409 {
			t.Fatalf("retry: %d %s", r.status, r.body)
		}
		return r.status == 200
	})
	if took := time.Since(crashed); took > 6*time.Second {
		t.Errorf("the retry ran %s after the crash, want at most about the 5 s lease", took)
	}
}
