package eventstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// A row inserted at the head's next position without moving the head (the app role may INSERT)
// takes the position of the next append. verify names it, and appends fail with
// ErrRecordPastHead naming the position, not with a bare duplicate key.
func TestRecordPastTheHead(t *testing.T) {
	t.Parallel()
	e, conn := tamperLog(t) // 61 records: the next position is 61
	mustExec(t, conn, `INSERT INTO events (global_position, stream_id, stream_version, event_id, type, schema_version, recorded_at,
		payload, metadata, payload_json, metadata_json, prev_hash, hash, key_id, signature, signature_proof)
		SELECT 61, 'planted', 1, gen_random_uuid(), type, schema_version, recorded_at, payload, metadata, payload_json, metadata_json,
		hash, hash, key_id, signature, signature_proof FROM events WHERE global_position = 60`)

	expectFailure(t, e.url, 61, eventstore.FailPastHead)

	ctx := ctxT(t)
	for range 2 { // the second append meets the same row: still the named error
		_, err := e.store.Append(ctx, "s-after", eventstore.AnyVersion, note(100))
		if !errors.Is(err, eventstore.ErrRecordPastHead) {
			t.Fatalf("append: %v; want ErrRecordPastHead", err)
		}
		if !strings.Contains(err.Error(), "position 61") || !strings.Contains(err.Error(), "verify") {
			t.Fatalf("append error %q does not name position 61 and verify", err)
		}
	}
}

// A checkpoint planted for the size the next append would reach stops appends the same way, and
// verify names it.
func TestCheckpointPastTheHead(t *testing.T) {
	t.Parallel()
	e, conn := tamperLog(t) // 61 records
	mustExec(t, conn, `INSERT INTO checkpoints (size, root, note, key_id, frontier, created_at)
		SELECT 62, root, note, key_id, frontier, created_at FROM checkpoints WHERE size = 61`)
	expectFailure(t, e.url, 61, eventstore.FailTruncated)
	_, err := e.store.Append(ctxT(t), "s-after", eventstore.AnyVersion, note(100))
	if !errors.Is(err, eventstore.ErrRecordPastHead) || !strings.Contains(err.Error(), "61 records") {
		t.Fatalf("append: %v; want ErrRecordPastHead naming the head", err)
	}
}
