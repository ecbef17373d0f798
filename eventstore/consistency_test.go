package eventstore_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

type savedCheckpoint struct {
	size uint64
	root []byte
}

func checkpointsOf(t *testing.T, conn *pgx.Conn) []savedCheckpoint {
	t.Helper()
	rows, err := conn.Query(ctxT(t), `SELECT size, root FROM checkpoints ORDER BY size`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (savedCheckpoint, error) {
		var c savedCheckpoint
		var size int64
		err := r.Scan(&size, &c.root)
		c.size = uint64(size)
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rollBack cuts the log back to size records as a superuser would: rows and later checkpoints
// deleted, the head rewound to the checkpoint at that size. verify passes the result.
func rollBack(t *testing.T, conn *pgx.Conn, size uint64) {
	t.Helper()
	mustExec(t, conn, `DELETE FROM events WHERE global_position >= $1`, int64(size))
	mustExec(t, conn, `DELETE FROM checkpoints WHERE size > $1`, int64(size))
	mustExec(t, conn, `UPDATE log_head SET next_position = $1::bigint, head_hash = (SELECT hash FROM events WHERE global_position = $1::bigint - 1),
		frontier = (SELECT frontier FROM checkpoints WHERE size = $1::bigint)`, int64(size))
}

// A log that grew since a checkpoint is consistent with it, with a proof a client can check; a
// log rolled back below it, or rolled back and written again with the real key (which verify
// passes), is not, and the error names the size and what differs.
func TestCheckConsistency(t *testing.T) {
	t.Parallel()
	e, conn := tamperLog(t)
	ctx := ctxT(t)
	pool := pgtest.Pool(t, e.url)
	cps := checkpointsOf(t, conn)
	if len(cps) < 10 {
		t.Fatalf("only %d checkpoints", len(cps))
	}
	last := cps[len(cps)-1]
	for _, cp := range cps {
		c, err := eventstore.CheckConsistency(ctx, pool, cp.size, cp.root)
		if err != nil {
			t.Fatalf("size %d: %v", cp.size, err)
		}
		if c.HeadSize != last.size || string(c.HeadRoot) != string(last.root) {
			t.Fatalf("size %d: head %d %x, want %d %x", cp.size, c.HeadSize, c.HeadRoot, last.size, last.root)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, cp.size, c.HeadSize, c.Proof, cp.root, c.HeadRoot); err != nil {
			t.Fatalf("size %d: the proof does not verify: %v", cp.size, err)
		}
	}
	// A root that is not the log's at that size.
	mid := cps[len(cps)/2]
	if _, err := eventstore.CheckConsistency(ctx, pool, mid.size, last.root); !errors.Is(err, eventstore.ErrInconsistent) ||
		!strings.Contains(err.Error(), fmt.Sprintf("first %d records", mid.size)) {
		t.Fatalf("wrong root at %d: %v", mid.size, err)
	}

	rollBack(t, conn, mid.size)
	verifyOK(t, e.url) // nothing inside the database tells
	_, err := eventstore.CheckConsistency(ctx, pool, last.size, last.root)
	if !errors.Is(err, eventstore.ErrInconsistent) || !strings.Contains(err.Error(), fmt.Sprintf("holds %d records", mid.size)) ||
		!strings.Contains(err.Error(), fmt.Sprint(last.size)) {
		t.Fatalf("rolled back to %d: %v", mid.size, err)
	}
	if _, err := eventstore.CheckConsistency(ctx, pool, mid.size, mid.root); err != nil {
		t.Fatalf("the earlier checkpoint %d still holds: %v", mid.size, err)
	}

	// New writes take the positions again, signed with the real key.
	for i := range int(last.size-mid.size) + 3 {
		if _, err := e.store.Append(ctx, "rewritten", eventstore.AnyVersion, note(1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	verifyOK(t, e.url)
	_, err = eventstore.CheckConsistency(ctx, pool, last.size, last.root)
	if !errors.Is(err, eventstore.ErrInconsistent) || !strings.Contains(err.Error(), fmt.Sprintf("first %d records hash to", last.size)) {
		t.Fatalf("rewritten after %d: %v", mid.size, err)
	}
}

func TestParseCheckpoint(t *testing.T) {
	t.Parallel()
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	root := make([]byte, 32)
	root[0] = 7
	note, err := eventstore.SignCheckpoint(key, "tunnelplane/log/x", 42, root)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := eventstore.ParseCheckpoint(note)
	if err != nil || cp.Origin != "tunnelplane/log/x" || cp.Size != 42 || string(cp.Root) != string(root) {
		t.Fatalf("parse: %+v %v", cp, err)
	}
	for _, bad := range []string{"", "tunnelplane/log/x\n42\n", strings.Replace(note, "\n42\n", "\nx\n", 1)} {
		if _, err := eventstore.ParseCheckpoint(bad); !errors.Is(err, eventstore.ErrCheckpoint) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// A saved checkpoint is checked against every log key of the history (it may predate a
// rotation); one signed by another key, or of another log, is refused before any proof.
func TestCheckCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	pool := pgtest.Pool(t, e.url)
	if _, err := e.store.Append(ctx, "a", eventstore.NoStream, note(1)); err != nil {
		t.Fatal(err)
	}
	before, err := eventstore.CurrentCheckpoint(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	next, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RotateLogKey(ctx, nil, next); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Append(ctx, "a", eventstore.Exact(1), note(2)); err != nil {
		t.Fatal(err)
	}
	signed, c, err := eventstore.CheckCheckpoint(ctx, pool, before)
	if err != nil || signed.Size != 2 || c.HeadSize != 4 {
		t.Fatalf("checkpoint signed by the retired key: %+v %+v %v", signed, c, err)
	}
	if _, _, err := eventstore.CheckCheckpoint(ctx, pool, strings.Replace(before, "\n2\n", "\n3\n", 1)); !errors.Is(err, eventstore.ErrCheckpoint) {
		t.Fatalf("altered note: %v", err)
	}
	other, _ := eventstore.GenerateSigningKey()
	forged, err := eventstore.SignCheckpoint(other, e.init.Origin, signed.Size, signed.Root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eventstore.CheckCheckpoint(ctx, pool, forged); !errors.Is(err, eventstore.ErrCheckpoint) || !strings.Contains(err.Error(), "size 2") {
		t.Fatalf("note by another key: %v", err)
	}
	foreign, err := eventstore.SignCheckpoint(e.key, "tunnelplane/log/another", signed.Size, signed.Root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eventstore.CheckCheckpoint(ctx, pool, foreign); !errors.Is(err, eventstore.ErrInconsistent) || !strings.Contains(err.Error(), "another") {
		t.Fatalf("note of another log: %v", err)
	}
}
