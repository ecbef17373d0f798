package eventstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// tamperLog builds a log of 61 records (genesis + 60 events in batches of 1 to 7 over 4 streams)
// and returns the env and a superuser connection with triggers disabled: the attacker.
func tamperLog(t *testing.T) (*env, *pgx.Conn) {
	t.Helper()
	e := newEnv(t)
	ctx := ctxT(t)
	n := 0
	for n < 60 {
		batch := min(1+n%7, 60-n)
		evs := make([]eventstore.EventData, batch)
		for i := range evs {
			evs[i] = note(n + i)
		}
		if _, err := e.store.Append(ctx, fmt.Sprintf("s-%d", n%4), eventstore.AnyVersion, evs...); err != nil {
			t.Fatal(err)
		}
		n += batch
	}
	verifyOK(t, e.url)
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		t.Fatalf("disable triggers: %v", err)
	}
	return e, conn
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(ctxT(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

type row struct {
	pos, version       int64
	stream, typ, keyID string
	id                 uuid.UUID
	sv                 int32
	at                 time.Time
	payload, meta      []byte
	sig, proof         []byte
}

func readRow(t *testing.T, conn *pgx.Conn, pos int64) row {
	t.Helper()
	var r row
	err := conn.QueryRow(ctxT(t), `SELECT global_position, stream_version, stream_id, type, key_id, event_id, schema_version,
		recorded_at, payload, metadata, signature, signature_proof FROM events WHERE global_position = $1`, pos).
		Scan(&r.pos, &r.version, &r.stream, &r.typ, &r.keyID, &r.id, &r.sv, &r.at, &r.payload, &r.meta, &r.sig, &r.proof)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r row) envelope() []byte {
	env := eventstore.Envelope{EventID: r.id, StreamID: r.stream, Type: r.typ, SchemaVersion: uint32(r.sv), KeyID: r.keyID, Payload: r.payload, Metadata: r.meta}
	return eventstore.AppendEnvelope(nil, &env)
}

// rechain recomputes prev_hash and hash of every row from pos on, and the head hash, as an
// attacker who understands the chain would.
func rechain(t *testing.T, conn *pgx.Conn, from int64) {
	t.Helper()
	var prev []byte
	if err := conn.QueryRow(ctxT(t), `SELECT hash FROM events WHERE global_position = $1`, from-1).Scan(&prev); err != nil {
		t.Fatal(err)
	}
	var last int64
	if err := conn.QueryRow(ctxT(t), `SELECT max(global_position) FROM events`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	for p := from; p <= last; p++ {
		r := readRow(t, conn, p)
		leaf := eventstore.AppendLeaf(nil, &eventstore.Leaf{Position: uint64(p), StreamVersion: uint64(r.version),
			RecordedAt: r.at.UnixMicro(), Envelope: r.envelope(), Signature: r.sig, Proof: r.proof})
		h := eventstore.ChainHash(prev, leaf)
		mustExec(t, conn, `UPDATE events SET prev_hash = $1, hash = $2 WHERE global_position = $3`, prev, h[:], p)
		prev = h[:]
	}
	mustExec(t, conn, `UPDATE log_head SET head_hash = $1`, prev)
}

func expectFailure(t *testing.T, u string, pos uint64, kind eventstore.FailureKind) {
	t.Helper()
	rep, err := eventstore.Verify(ctxT(t), pgtest.Pool(t, u), eventstore.VerifyOptions{PageSize: 16})
	if err != nil {
		t.Fatalf("verify could not run: %v", err)
	}
	if rep.OK() {
		t.Fatalf("verify passed a tampered log")
	}
	if rep.Failure.Position != pos || rep.Failure.Kind != kind {
		t.Fatalf("verify: %v; want %s at position %d", rep.Failure, kind, pos)
	}
}

func TestTamperDetection(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		pos    uint64
		kind   eventstore.FailureKind
		tamper func(t *testing.T, e *env, conn *pgx.Conn)
	}{
		{"payload changed", 23, eventstore.FailHashMismatch, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `UPDATE events SET payload = convert_to('{"n":999}', 'UTF8') WHERE global_position = 23`)
		}},
		{"payload changed and the chain recomputed", 23, eventstore.FailBadSignature, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `UPDATE events SET payload = convert_to('{"n":999}', 'UTF8') WHERE global_position = 23`)
			rechain(t, c, 23)
		}},
		{"row deleted", 30, eventstore.FailGap, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `DELETE FROM events WHERE global_position = 30`)
		}},
		{"two rows swapped", 12, eventstore.FailChainBreak, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `UPDATE events SET global_position = 1000000 WHERE global_position = 12`)
			mustExec(t, c, `UPDATE events SET global_position = 12 WHERE global_position = 40`)
			mustExec(t, c, `UPDATE events SET global_position = 40 WHERE global_position = 1000000`)
		}},
		{"tail truncated", 56, eventstore.FailTruncated, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `DELETE FROM events WHERE global_position >= 56`)
		}},
		{"tail truncated and the head rewound", 56, eventstore.FailTruncated, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `DELETE FROM events WHERE global_position >= 56`)
			mustExec(t, c, `UPDATE log_head SET next_position = 56, head_hash = (SELECT hash FROM events WHERE global_position = 55)`)
		}},
		{"re-signed with a key not in the history", 17, eventstore.FailUnknownKey, func(t *testing.T, e *env, c *pgx.Conn) {
			forger, _ := eventstore.GenerateSigningKey()
			r := readRow(t, c, 17)
			r.keyID = forger.ID()
			r.payload = []byte(`{"n":17,"text":"forged"}`)
			signed := eventstore.SignEnvelopes(forger, [][]byte{r.envelope()})
			mustExec(t, c, `UPDATE events SET key_id = $1, payload = $2, signature = $3, signature_proof = $4 WHERE global_position = 17`,
				r.keyID, r.payload, signed.Signature, signed.Proofs[0])
			rechain(t, c, 17)
		}},
		{"signature of another record copied", 33, eventstore.FailBadSignature, func(t *testing.T, e *env, c *pgx.Conn) {
			other := readRow(t, c, 5)
			mustExec(t, c, `UPDATE events SET signature = $1, signature_proof = $2 WHERE global_position = 33`, other.sig, other.proof)
			rechain(t, c, 33)
		}},
		{"prev_hash rewritten", 41, eventstore.FailChainBreak, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `UPDATE events SET prev_hash = sha256('x') WHERE global_position = 41`)
		}},
		{"stream version renumbered and the chain recomputed", 44, eventstore.FailStreamVersion, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `UPDATE events SET stream_version = stream_version + 100 WHERE global_position = 44`)
			rechain(t, c, 44)
		}},
		{"a whole record inserted and the chain recomputed", 50, eventstore.FailCheckpointMismatch, func(t *testing.T, e *env, c *pgx.Conn) {
			// The attacker holds a real log key (a stolen copy): only the signed Merkle
			// checkpoints, which cover every record, can tell.
			mustExec(t, c, `UPDATE events SET global_position = global_position + 1000000 WHERE global_position >= 50`)
			mustExec(t, c, `UPDATE events SET global_position = global_position - 1000000 + 1 WHERE global_position >= 1000000`)
			r := readRow(t, c, 49)
			r.id = uuid.New()
			r.stream = "injected"
			r.version = 1
			r.payload = []byte(`{"n":-1,"text":"backdated"}`)
			signed := eventstore.SignEnvelopes(e.key, [][]byte{r.envelope()})
			mustExec(t, c, `INSERT INTO events (global_position, stream_id, stream_version, event_id, type, schema_version, recorded_at,
				payload, metadata, payload_json, metadata_json, prev_hash, hash, key_id, signature, signature_proof)
				VALUES (50, $1, 1, $2, $3, 1, $4, $5, $6, '{}', '{}', sha256('x'), sha256('x'), $7, $8, $9)`,
				r.stream, r.id, r.typ, r.at, r.payload, r.meta, r.keyID, signed.Signature, signed.Proofs[0])
			rechain(t, c, 50)
			mustExec(t, c, `UPDATE log_head SET next_position = next_position + 1`)
		}},
		{"checkpoint root replaced", 0, eventstore.FailCheckpointMismatch, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `UPDATE checkpoints SET root = sha256('x') WHERE size = (SELECT min(size) FROM checkpoints)`)
		}},
		{"checkpoint note altered", 0, eventstore.FailCheckpointSignature, func(t *testing.T, e *env, c *pgx.Conn) {
			mustExec(t, c, `UPDATE checkpoints SET note = replace(note, E'\n1\n', E'\n2\n') WHERE size = 1`)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e, conn := tamperLog(t)
			c.tamper(t, e, conn)
			expectFailure(t, e.url, c.pos, c.kind)
		})
	}
}
