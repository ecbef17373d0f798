package controlapp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/projections"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newApp(t *testing.T, db, dir string) *controlapp.App {
	t.Helper()
	a, err := controlapp.New(controlapp.Config{DatabaseURL: db, DataDir: dir, APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// createOrgs appends n organizations (named prefix-i), one batch (and checkpoint) each, and waits until every read
// model applied them. It returns the log's size after the first and after the last.
func createOrgs(t *testing.T, a *controlapp.App, prefix string, n int) (first, last uint64) {
	t.Helper()
	ctx := ctxT(t)
	for i := range n {
		org := uuid.Must(uuid.NewV7()).String()
		b, _ := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: fmt.Sprintf("%s-%d", prefix, i), CreatedBy: "root"})
		res, err := a.Log.Store.Append(ctx, domain.OrgStream(org), eventstore.NoStream, eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: b})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = res.LastPosition + 1
		}
		last = res.LastPosition + 1
	}
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name())
	}
	if err := a.Runner.WaitFor(ctx, last-1, names...); err != nil {
		t.Fatal(err)
	}
	return first, last
}

// rollBack cuts the log back to size records as a database superuser can (triggers off): rows
// and later checkpoints deleted, the head rewound to the checkpoint at that size. The read
// models' tables are left as they were.
func rollBack(t *testing.T, db string, size uint64) {
	t.Helper()
	ctx := ctxT(t)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`SET session_replication_role = replica`,
		`DELETE FROM events WHERE global_position >= $1`,
		`DELETE FROM checkpoints WHERE size > $1`,
		`UPDATE log_head SET next_position = $1::bigint, head_hash = (SELECT hash FROM events WHERE global_position = $1::bigint - 1),
			frontier = (SELECT frontier FROM checkpoints WHERE size = $1::bigint)`,
	} {
		var args []any
		if strings.Contains(q, "$1") {
			args = append(args, int64(size))
		}
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func mustContain(t *testing.T, err error, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

// grownLog runs a control plane on a new database and data dir, creates 2n orgs, and stops it:
// mid is the log's size after the first n, last after all of them.
func grownLog(t *testing.T, n int) (db, dir string, mid, last uint64) {
	t.Helper()
	db, dir = pgtest.NewEmptyDatabase(t), t.TempDir()
	a := newApp(t, db, dir)
	if err := a.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	mid, _ = createOrgs(t, a, "a", n)
	_, last = createOrgs(t, a, "b", n)
	a.Close()
	return db, dir, mid, last
}

// A log rolled back inside the database (rows, checkpoints and head rewound consistently, so
// verify passes) is refused at start: the data dir remembers the newest checkpoint it saw, and
// the error names both sizes. Written again at the reused positions (with the real key), it is
// refused too, naming the size whose records now hash differently.
func TestRolledBackLogIsRefusedAtStart(t *testing.T) {
	t.Parallel()
	db, dir, mid, last := grownLog(t, 3)
	if raw, err := os.ReadFile(controlapp.CheckpointFile(dir)); err != nil {
		t.Fatalf("no checkpoint in the data dir: %v", err)
	} else if cp, err := eventstore.ParseCheckpoint(string(raw)); err != nil || cp.Size != last {
		t.Fatalf("remembered checkpoint: %+v %v, want size %d", cp, err, last)
	}

	rollBack(t, db, mid)
	err := newApp(t, db, dir).Start(ctxT(t))
	if !errors.Is(err, eventstore.ErrInconsistent) {
		t.Fatalf("start on a rolled-back log: %v", err)
	}
	mustContain(t, err, fmt.Sprintf("holds %d records", mid), fmt.Sprintf("vouches for %d", last), controlapp.CheckpointFile(dir))

	// The positions are written again, signed with the log's own key.
	pool := pgtest.Pool(t, db)
	key, err := controlapp.LogKeyForInit(ctxT(t), controlapp.LogKeys(dir), pool)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := controlapp.DomainRegistry()
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < last-mid+2; i++ {
		org := uuid.Must(uuid.NewV7()).String()
		b, _ := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: fmt.Sprintf("new-%d", i), CreatedBy: "root"})
		if _, err := st.Append(ctxT(t), domain.OrgStream(org), eventstore.NoStream, eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: b}); err != nil {
			t.Fatal(err)
		}
	}
	st.Stop()
	err = newApp(t, db, dir).Start(ctxT(t))
	if !errors.Is(err, eventstore.ErrInconsistent) {
		t.Fatalf("start on a log rewritten after a rollback: %v", err)
	}
	mustContain(t, err, fmt.Sprintf("first %d records hash to", last))

	// The data dir with another database is another log: not compared, and remembered from now on.
	other := pgtest.NewEmptyDatabase(t)
	a := newApp(t, other, dir)
	if err := a.Start(ctxT(t)); err != nil {
		t.Fatalf("start on another database: %v", err)
	}
	origin, err := a.Log.Store.Origin(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	raw, err := os.ReadFile(controlapp.CheckpointFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := eventstore.ParseCheckpoint(string(raw)); err != nil || cp.Origin != origin {
		t.Fatalf("remembered checkpoint after another log: %+v %v, want log %s", cp, err, origin)
	}
}

// Without a remembered checkpoint (a data dir restored without it), the read models still tell:
// their cursors are past the rolled-back head, and start is refused naming both positions.
func TestReadModelsAheadOfTheLogAreRefused(t *testing.T) {
	t.Parallel()
	db, dir, mid, last := grownLog(t, 2)
	rollBack(t, db, mid)
	if err := os.Remove(controlapp.CheckpointFile(dir)); err != nil {
		t.Fatal(err)
	}
	err := newApp(t, db, dir).Start(ctxT(t))
	if !errors.Is(err, projections.ErrAheadOfLog) {
		t.Fatalf("start with read models ahead of the log: %v", err)
	}
	mustContain(t, err, fmt.Sprintf("up to position %d", last-1), fmt.Sprintf("head is at %d", mid))
	if _, statErr := os.Stat(controlapp.CheckpointFile(dir)); statErr == nil {
		t.Error("a refused start remembered the rolled-back log's checkpoint")
	}
}
