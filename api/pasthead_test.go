package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/api"
)

// A row planted at the head's next position (the app role may INSERT) stops every write: the API
// says so with 503 and tells the operator to run verify, instead of a bare internal error.
func TestWriteAfterARecordPastTheHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	if _, err := e.store.Pool().Exec(context.Background(), `INSERT INTO events (global_position, stream_id, stream_version, event_id, type,
		schema_version, recorded_at, payload, metadata, payload_json, metadata_json, prev_hash, hash, key_id, signature, signature_proof)
		SELECT h.next_position, 'planted', 1, gen_random_uuid(), e.type, e.schema_version, e.recorded_at, e.payload, e.metadata,
		e.payload_json, e.metadata_json, e.hash, e.hash, e.key_id, e.signature, e.signature_proof
		FROM events e, log_head h WHERE e.global_position = h.next_position - 1`); err != nil {
		t.Fatal(err)
	}
	alice := e.token("alice")
	r := e.call("POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"})
	if r.status != 503 {
		t.Fatalf("status %d, want 503: %s", r.status, r.body)
	}
	p := r.problem(t)
	if p.Type != api.ProblemTypeBase+"log-record-past-head" || !strings.Contains(p.Detail, "past its head") || !strings.Contains(p.Detail, "verify") {
		t.Fatalf("problem: %+v", p)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}
