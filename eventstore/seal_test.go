package eventstore_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// The Seal hook changes an event before it is hashed and signed, on every path that takes
// metadata from a caller (Append, AppendMulti, key rotations): the log holds and verifies only what
// it returned; when it fails, nothing is appended and the error is ErrSeal.
func TestSealRunsBeforeSigning(t *testing.T) {
	t.Parallel()
	u := pgtest.NewDatabase(t)
	key, _ := eventstore.GenerateSigningKey()
	if _, err := eventstore.Init(ctxT(t), pgtest.Pool(t, u), key, time.Now()); err != nil {
		t.Fatal(err)
	}
	reg, _ := eventstore.NewRegistry(testTypes()...)
	refuse := errors.New("no key for this subject")
	seal := func(_ context.Context, _ string, payload, meta []byte) ([]byte, []byte, error) {
		if bytes.Contains(meta, []byte("refuse")) {
			return nil, nil, refuse
		}
		return bytes.ReplaceAll(payload, []byte("secret"), []byte("SEALED")), bytes.ReplaceAll(meta, []byte("secret"), []byte("SEALED")), nil
	}
	st, err := eventstore.New(eventstore.Config{Pool: pgtest.Pool(t, u), Key: key, Registry: reg, Seal: seal})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	ctx := ctxT(t)
	ev := eventstore.EventData{Type: typeNoteAdded, Payload: []byte(`{"text":"secret"}`), Metadata: []byte(`{"client_ip":"secret"}`)}
	if _, err := st.Append(ctx, "notes-1", eventstore.NoStream, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AppendMulti(ctx, eventstore.StreamAppend{StreamID: "notes-2", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev}}); err != nil {
		t.Fatal(err)
	}
	next, _ := eventstore.GenerateSigningKey()
	if _, err := st.RotateLogKey(ctx, []byte(`{"client_ip":"secret"}`), next); err != nil {
		t.Fatal(err)
	}
	bad := ev
	bad.Metadata = []byte(`{"client_ip":"refuse"}`)
	if _, err := st.Append(ctx, "notes-3", eventstore.NoStream, bad); !errors.Is(err, eventstore.ErrSeal) || !errors.Is(err, refuse) {
		t.Fatalf("a failed seal: %v, want ErrSeal wrapping the cause", err)
	}
	recs, err := st.ReadAll(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	sealed := 0
	for _, r := range recs {
		if r.StreamID == "notes-3" {
			t.Fatal("an event whose seal failed was appended")
		}
		if bytes.Contains(r.Payload, []byte("secret")) || bytes.Contains(r.Metadata, []byte("secret")) {
			t.Fatalf("record %d holds what the hook replaced: %s %s", r.Position, r.Payload, r.Metadata)
		}
		sealed += bytes.Count(r.Metadata, []byte("SEALED"))
	}
	if sealed != 3 {
		t.Fatalf("%d sealed metadata, want 3 (append, append multi, rotation)", sealed)
	}
	verifyOK(t, u)
}
