package eventstore_test

import (
	"errors"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// The statement of AppendMultiThen is committed with the events, made of their results, and not
// run at all for an append that is refused.
func TestAppendMultiThenCommitsTheStatementWithTheEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	record := func(key string) func([]eventstore.AppendResult) eventstore.Statement {
		return func(res []eventstore.AppendResult) eventstore.Statement {
			return eventstore.Statement{SQL: `INSERT INTO idempotency_keys (actor, key, command, request_hash, status, response)
				VALUES ('test', $1, 'append', '', 1, jsonb_build_object('position', $2::bigint))`, Args: []any{key, int64(res[0].LastPosition)}}
		}
	}
	res, err := e.store.AppendMultiThen(ctx, record("ok"), eventstore.StreamAppend{StreamID: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(1), note(2)}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.store.AppendMultiThen(ctx, record("refused"), eventstore.StreamAppend{StreamID: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(3)}})
	if !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		t.Fatalf("second append to a new stream: %v", err)
	}
	rows, err := pgtest.Pool(t, e.url).Query(ctx, `SELECT key, (response->>'position')::bigint FROM idempotency_keys WHERE actor = 'test'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int64{}
	for rows.Next() {
		var k string
		var p int64
		if err := rows.Scan(&k, &p); err != nil {
			t.Fatal(err)
		}
		got[k] = p
	}
	if len(got) != 1 || got["ok"] != int64(res[0].LastPosition) {
		t.Fatalf("recorded %v, want only ok at %d", got, res[0].LastPosition)
	}
}
