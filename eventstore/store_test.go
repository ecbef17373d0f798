package eventstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestAppendReadAndVerify(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	res, err := e.store.Append(ctx, "note-1", eventstore.NoStream, note(1), note(2))
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if res.FirstPosition != 1 || res.LastPosition != 2 || res.StreamVersion != 2 {
		t.Fatalf("result = %+v, want positions 1..2 (0 is genesis), version 2", res)
	}
	recs, err := e.store.ReadStream(ctx, "note-1", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || string(recs[1].Payload) != `{"n":2,"text":"note 2"}` || recs[1].StreamVersion != 2 {
		t.Fatalf("read stream = %+v", recs)
	}
	if recs[0].KeyID != e.key.ID() || len(recs[0].Signature) != 64 || !bytes.Equal(recs[1].PrevHash, recs[0].Hash) {
		t.Fatalf("records are not signed and chained: %+v", recs)
	}
	all, err := e.store.ReadAll(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 || all[0].Type != eventstore.TypeGenesis || all[0].StreamID != eventstore.LogStream {
		t.Fatalf("read all = %d records, first %q", len(all), all[0].Type)
	}
	// Unsigned: the same records but for what only a verifier reads.
	lean, err := e.store.ReadAllUnsigned(ctx, 0, 10)
	if err != nil || len(lean) != len(all) {
		t.Fatalf("read all unsigned = %d records, %v", len(lean), err)
	}
	for i := range lean {
		if len(lean[i].PrevHash)+len(lean[i].Signature)+len(lean[i].SignatureProof) != 0 {
			t.Fatalf("record %d read unsigned has its signature: %+v", i, lean[i])
		}
		want := all[i]
		want.PrevHash, want.Signature, want.SignatureProof = lean[i].PrevHash, lean[i].Signature, lean[i].SignatureProof
		if !reflect.DeepEqual(lean[i], want) {
			t.Fatalf("record %d read unsigned:\n%+v\nread whole:\n%+v", i, lean[i], all[i])
		}
	}
	rep := verifyOK(t, e.url)
	if rep.Count != 3 || rep.Checkpoints != 2 || rep.HeadHash == "" {
		t.Fatalf("report = %+v, want 3 records and 2 checkpoints", rep)
	}
}

func TestExpectedVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.store.Append(ctx, "s", eventstore.NoStream, note(1), note(2), note(3)); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		expected eventstore.ExpectedVersion
		ok       bool
	}{
		{"no stream on existing stream", eventstore.NoStream, false},
		{"stale exact version", eventstore.Exact(2), false},
		{"future exact version", eventstore.Exact(9), false},
		{"current exact version", eventstore.Exact(3), true},
		{"any version", eventstore.AnyVersion, true},
	}
	version := uint64(3)
	for _, c := range cases {
		res, err := e.store.Append(ctx, "s", c.expected, note(0))
		if c.ok {
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			version++
			if res.StreamVersion != version {
				t.Fatalf("%s: version %d, want %d", c.name, res.StreamVersion, version)
			}
			continue
		}
		var wrong *eventstore.WrongExpectedVersionError
		if !errors.As(err, &wrong) || !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			t.Fatalf("%s: err = %v, want WrongExpectedVersionError", c.name, err)
		}
		if wrong.Actual != version || wrong.StreamID != "s" {
			t.Fatalf("%s: error carries actual %d stream %q, want %d", c.name, wrong.Actual, wrong.StreamID, version)
		}
	}
}

// Two writers read version v and both try to append at v: exactly one wins.
func TestConcurrentConflictOneWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other := startStore(t, e.url, e.key, nil) // a second appender, as another process would have
	ctx := ctxT(t)
	for round := range 20 {
		stream := fmt.Sprintf("race-%d", round)
		if _, err := e.store.Append(ctx, stream, eventstore.NoStream, note(0)); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, st := range []*eventstore.Store{e.store, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = st.Append(ctx, stream, eventstore.Exact(1), note(i))
			}()
		}
		wg.Wait()
		wins, conflicts := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, eventstore.ErrWrongExpectedVersion):
				conflicts++
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if wins != 1 || conflicts != 1 {
			t.Fatalf("round %d: %d wins and %d conflicts, want 1 and 1", round, wins, conflicts)
		}
	}
	verifyOK(t, e.url)
}

func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	big := []byte(`{"x":"` + strings.Repeat("a", eventstore.MaxPayloadBytes) + `"}`)
	cases := []struct {
		name   string
		stream string
		events []eventstore.EventData
		want   error
	}{
		{"unknown type", "s", []eventstore.EventData{{Type: "test.nope", Payload: []byte(`{}`)}}, eventstore.ErrUnknownEventType},
		{"payload over the limit", "s", []eventstore.EventData{{Type: typeNoteAdded, Payload: big}}, eventstore.ErrTooLarge},
		{"metadata over the limit", "s", []eventstore.EventData{{Type: typeNoteAdded, Payload: []byte(`{}`),
			Metadata: []byte(`{"x":"` + strings.Repeat("m", eventstore.MaxMetadataBytes) + `"}`)}}, eventstore.ErrTooLarge},
		{"payload not JSON", "s", []eventstore.EventData{{Type: typeNoteAdded, Payload: []byte(`{"a":`)}}, eventstore.ErrInvalidEvent},
		{"payload with NUL escape", "s", []eventstore.EventData{{Type: typeNoteAdded, Payload: []byte(`{"a":"\u0000"}`)}}, eventstore.ErrInvalidEvent},
		{"metadata not an object", "s", []eventstore.EventData{{Type: typeNoteAdded, Payload: []byte(`{}`), Metadata: []byte(`[1]`)}}, eventstore.ErrInvalidEvent},
		{"no events", "s", nil, eventstore.ErrInvalidEvent},
		{"empty stream id", "", []eventstore.EventData{note(1)}, eventstore.ErrInvalidStreamID},
		{"stream id with spaces", "a b", []eventstore.EventData{note(1)}, eventstore.ErrInvalidStreamID},
		{"stream id too long", strings.Repeat("s", 201), []eventstore.EventData{note(1)}, eventstore.ErrInvalidStreamID},
		{"reserved stream", "$log", []eventstore.EventData{note(1)}, eventstore.ErrReservedStream},
		{"one bad event among good ones", "s", []eventstore.EventData{note(1), {Type: "test.nope", Payload: []byte(`{}`)}}, eventstore.ErrUnknownEventType},
	}
	for _, c := range cases {
		_, err := e.store.Append(ctx, c.stream, eventstore.AnyVersion, c.events...)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	head, err := e.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if head != 1 {
		t.Fatalf("head = %d after rejected appends, want 1 (genesis only)", head)
	}
}

// A duplicate event id fails only its own append, even when batched with others.
func TestDuplicateEventIDFailsOnlyItsAppend(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	dup := uuid.New()
	first := note(0)
	first.ID = dup
	if _, err := e.store.Append(ctx, "d", eventstore.AnyVersion, first); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := note(i)
			if i == 25 {
				ev.ID = dup
			}
			_, errs[i] = e.store.Append(ctx, fmt.Sprintf("d-%d", i), eventstore.AnyVersion, ev)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i == 25 {
			if !errors.Is(err, eventstore.ErrDuplicateEventID) {
				t.Fatalf("duplicate append: err = %v, want ErrDuplicateEventID", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("append %d failed because of another's duplicate: %v", i, err)
		}
	}
	rep := verifyOK(t, e.url)
	if rep.Count != 1+1+49 {
		t.Fatalf("log has %d records, want 51", rep.Count)
	}
}

func TestUpcastOnRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	// Write a version-1 payload the way an older build did: a store whose registry has v1.
	st := v1RenameStore(t, e)
	if _, err := st.Append(ctx, "r", eventstore.NoStream, eventstore.EventData{Type: typeNoteRenamed, Payload: []byte(`{"name":"old"}`)}); err != nil {
		t.Fatal(err)
	}
	st.Stop()
	recs, err := e.store.ReadStream(ctx, "r", 1, 10)
	if err != nil {
		t.Fatal(err)
	}
	r := recs[0]
	if r.SchemaVersion != 2 || string(r.Payload) != `{"title":"old"}` {
		t.Fatalf("upcast read = v%d %s, want v2 {\"title\":\"old\"}", r.SchemaVersion, r.Payload)
	}
	if r.StoredSchemaVersion != 1 || string(r.StoredPayload) != `{"name":"old"}` {
		t.Fatalf("stored form = v%d %s, want the original", r.StoredSchemaVersion, r.StoredPayload)
	}
	verifyOK(t, e.url) // upcasting never touches what was hashed
}

func TestRegistryRejectsBadTypes(t *testing.T) {
	t.Parallel()
	cases := []eventstore.EventType{
		{Name: "NoDots", SchemaVersion: 1},
		{Name: "x.y", SchemaVersion: 0},
		{Name: "x.y", SchemaVersion: 3, Upcasters: map[uint32]eventstore.Upcaster{1: func(b []byte) ([]byte, error) { return b, nil }}},
		{Name: eventstore.TypeGenesis, SchemaVersion: 1}, // already registered
	}
	for _, c := range cases {
		if _, err := eventstore.NewRegistry(c); err == nil {
			t.Errorf("NewRegistry(%+v) succeeded, want an error", c)
		}
	}
}

func TestInitIsIdempotentAndChecksTheKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	pool := pgtest.Pool(t, e.url)
	again, err := eventstore.Init(ctx, pool, e.key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.LogID != e.init.LogID || again.KeyID != e.key.ID() || !e.init.Created {
		t.Fatalf("second init = %+v, first = %+v", again, e.init)
	}
	stranger, _ := eventstore.GenerateSigningKey()
	if _, err := eventstore.Init(ctx, pool, stranger, time.Now()); !errors.Is(err, eventstore.ErrKeyMismatch) {
		t.Fatalf("init with a foreign key: err = %v, want ErrKeyMismatch", err)
	}
	head, _ := e.store.Head(ctx)
	if head != 1 {
		t.Fatalf("head = %d, want 1", head)
	}
}

func TestAppendBeforeInitFails(t *testing.T) {
	t.Parallel()
	u := pgtest.NewDatabase(t)
	key, _ := eventstore.GenerateSigningKey()
	st := startStore(t, u, key, nil)
	if _, err := st.Append(ctxT(t), "s", eventstore.AnyVersion, note(1)); !errors.Is(err, eventstore.ErrNotInitialized) {
		t.Fatalf("err = %v, want ErrNotInitialized", err)
	}
	if _, err := eventstore.Verify(ctxT(t), pgtest.Pool(t, u), eventstore.VerifyOptions{}); !errors.Is(err, eventstore.ErrNotInitialized) {
		t.Fatalf("verify err = %v, want ErrNotInitialized", err)
	}
}

func TestStopIsSafeTwiceAndRefusesAppends(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.store.Stop()
	e.store.Stop()
	if _, err := e.store.Append(ctxT(t), "s", eventstore.AnyVersion, note(1)); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("append after stop: err = %v, want ErrClosed", err)
	}
}

func TestCancelledContextWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	if _, err := e.store.Append(ctx, "s", eventstore.AnyVersion, note(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if head, _ := e.store.Head(ctxT(t)); head != 1 {
		t.Fatalf("head = %d, want 1", head)
	}
}

// AppendMulti writes to several streams or to none.
func TestAppendMultiIsAtomic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	res, err := e.store.AppendMulti(ctx,
		eventstore.StreamAppend{StreamID: "tunnel-1", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(1), note(2)}},
		eventstore.StreamAppend{StreamID: "name-llm", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(3)}},
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].StreamVersion != 2 || res[1].StreamVersion != 1 || res[1].FirstPosition != res[0].LastPosition+1 {
		t.Fatalf("results %+v", res)
	}
	// The name is taken: the second tunnel is not created either.
	_, err = e.store.AppendMulti(ctx,
		eventstore.StreamAppend{StreamID: "tunnel-2", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(4)}},
		eventstore.StreamAppend{StreamID: "name-llm", Expected: eventstore.NoStream, Events: []eventstore.EventData{note(5)}},
	)
	var wrong *eventstore.WrongExpectedVersionError
	if !errors.As(err, &wrong) || wrong.StreamID != "name-llm" || wrong.Actual != 1 {
		t.Fatalf("err = %v, want a conflict on name-llm", err)
	}
	if recs, _ := e.store.ReadStream(ctx, "tunnel-2", 1, 10); len(recs) != 0 {
		t.Fatalf("tunnel-2 has %d events after a failed multi-append", len(recs))
	}
	if _, err := e.store.AppendMulti(ctx,
		eventstore.StreamAppend{StreamID: "a", Events: []eventstore.EventData{note(1)}},
		eventstore.StreamAppend{StreamID: "a", Events: []eventstore.EventData{note(1)}}); !errors.Is(err, eventstore.ErrInvalidEvent) {
		t.Fatalf("same stream twice: %v", err)
	}
	verifyOK(t, e.url)
}

// Verify runs correctly while appends continue: records and checkpoints written after it started
// are not mistaken for damage.
func TestVerifyWhileAppending(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := e.store.Append(ctx, "busy", eventstore.AnyVersion, note(i)); err != nil && ctx.Err() == nil {
				t.Error(err)
				return
			}
		}
	}()
	pool := pgtest.Pool(t, e.url)
	for range 30 {
		rep, err := eventstore.Verify(ctxT(t), pool, eventstore.VerifyOptions{})
		if err != nil || !rep.OK() {
			t.Fatalf("verify during appends: %v %v", err, rep.Failure)
		}
	}
	cancel()
	<-done
}

// Requests that reach the appender together share one signature over the Merkle root of all
// their envelopes; each record still verifies alone, also when a request of the batch failed its
// version check and so left an unused leaf under the signed root.
func TestBatchSharesOneSignature(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	pool := pgtest.Pool(t, e.url)
	if _, err := e.store.Append(ctx, "taken", eventstore.NoStream, note(0)); err != nil {
		t.Fatal(err)
	}
	// Hold the head lock so that the appender blocks on its first request while the others queue.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM log_head FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	const n = 12
	queued := make(chan struct{}, n)
	eventstore.SetQueuedHook(e.store, func() { queued <- struct{}{} })
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			stream, expected := fmt.Sprintf("batched-%d", i), eventstore.NoStream
			if i == n-1 {
				stream = "taken" // fails its version check inside the batch
			}
			_, errs[i] = e.store.AppendMulti(ctx, eventstore.StreamAppend{StreamID: stream, Expected: expected, Events: []eventstore.EventData{note(i), note(i + 100)}})
		})
	}
	// Release the head once every request is queued: the appender's first batch (waiting for the
	// lock) holds the requests it took, the next one all the others.
	for range n {
		select {
		case <-queued:
		case <-ctx.Done():
			t.Fatal("the appends were not all queued")
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if i == n-1 {
			if !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
				t.Fatalf("append to a taken stream: %v", err)
			}
		} else if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	var records, signatures int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT signature) FROM events WHERE stream_id LIKE 'batched-%'`).Scan(&records, &signatures); err != nil {
		t.Fatal(err)
	}
	if records != 2*(n-1) || signatures > 2 {
		t.Fatalf("%d records with %d distinct signatures; want %d records under at most 2 (the first request may go alone)", records, signatures, 2*(n-1))
	}
	verifyOK(t, e.url)
}
