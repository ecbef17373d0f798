package eventstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		// Child process of TestKilledAppenderLosesNothing: no leak checks, it gets SIGKILLed.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m,
		// pgx's pool health checker and the migrate driver's connections wind down asynchronously.
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

const (
	typeNoteAdded   = "test.note_added"
	typeNoteRenamed = "test.note_renamed"
)

// testTypes: test.note_renamed is at schema version 2; version 1 payloads {"name":…} are upcast
// to {"title":…}.
func testTypes() []eventstore.EventType {
	return []eventstore.EventType{
		{Name: typeNoteAdded, SchemaVersion: 1},
		{Name: typeNoteRenamed, SchemaVersion: 2, Upcasters: map[uint32]eventstore.Upcaster{
			1: func(p []byte) ([]byte, error) {
				var v1 struct {
					Name string `json:"name"`
				}
				if err := json.Unmarshal(p, &v1); err != nil {
					return nil, err
				}
				return json.Marshal(map[string]string{"title": v1.Name})
			},
		}},
	}
}

type env struct {
	url   string
	store *eventstore.Store
	key   *eventstore.SigningKey
	init  eventstore.InitResult
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newEnv makes a fresh database with an initialised log and a started store.
func newEnv(t testing.TB) *env {
	t.Helper()
	u := pgtest.NewDatabase(t)
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.Pool(t, u)
	res, err := eventstore.Init(ctxT(t), pool, key, time.Now())
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	return &env{url: u, store: startStore(t, u, key, nil), key: key, init: res}
}

func startStore(t testing.TB, u string, key *eventstore.SigningKey, source func(context.Context, string) (*eventstore.SigningKey, error)) *eventstore.Store {
	t.Helper()
	reg, err := eventstore.NewRegistry(testTypes()...)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventstore.New(eventstore.Config{Pool: pgtest.Pool(t, u), Key: key, KeySource: source, Registry: reg,
		PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctxT(t)); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(st.Stop)
	return st
}

func note(i int) eventstore.EventData {
	return eventstore.EventData{Type: typeNoteAdded, Payload: []byte(fmt.Sprintf(`{"n":%d,"text":"note %d"}`, i, i))}
}

func verifyOK(t testing.TB, u string) eventstore.VerifyReport {
	t.Helper()
	rep, err := eventstore.Verify(ctxT(t), pgtest.Pool(t, u), eventstore.VerifyOptions{})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !rep.OK() {
		t.Fatalf("verify: %v", rep.Failure)
	}
	return rep
}

// helperEnv marks a child process started by a test.
const helperEnv = "TUNNELPLANE_TEST_HELPER"

// v1RenameStore starts a store on e's log whose registry has test.note_renamed at version 1, the
// way an older build wrote it; the caller stops it.
func v1RenameStore(t testing.TB, e *env) *eventstore.Store {
	t.Helper()
	old := eventstore.MustRegistry(eventstore.EventType{Name: typeNoteRenamed, SchemaVersion: 1})
	st, err := eventstore.New(eventstore.Config{Pool: pgtest.Pool(t, e.url), Key: e.key, Registry: old})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return st
}
