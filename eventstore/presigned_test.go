package eventstore_test

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// nodeBatch encodes and signs events as a data-plane node does.
func nodeBatch(key *eventstore.SigningKey, streams ...string) []eventstore.PresignedEvent {
	envs := make([][]byte, len(streams))
	for i, s := range streams {
		env := eventstore.Envelope{EventID: uuid.Must(uuid.NewV7()), StreamID: s, Type: typeNoteAdded, SchemaVersion: 1,
			KeyID: key.ID(), Payload: []byte(`{"from":"node"}`), Metadata: []byte(`{"node":"n1"}`)}
		envs[i] = eventstore.AppendEnvelope(nil, &env)
	}
	signed := eventstore.SignEnvelopes(key, envs)
	out := make([]eventstore.PresignedEvent, len(envs))
	for i := range envs {
		out[i] = eventstore.PresignedEvent{Envelope: envs[i], Signature: signed.Signature, Proof: signed.Proofs[i]}
	}
	return out
}

func TestAppendPresigned(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	nodeKey, _ := eventstore.GenerateSigningKey()

	// Unknown key: refused, nothing written.
	if _, err := e.store.AppendPresigned(ctx, nodeBatch(nodeKey, "node-n1")); !errors.Is(err, eventstore.ErrBadSignature) {
		t.Fatalf("unknown key: err = %v, want ErrBadSignature", err)
	}
	// Another process registers the key; this store learns it on demand.
	other := startStore(t, e.url, e.key, nil)
	if _, err := other.AddKey(ctx, nil, eventstore.PurposeNode, "n1", nodeKey); err != nil {
		t.Fatal(err)
	}
	batch := nodeBatch(nodeKey, "node-n1", "tunnel-a", "node-n1")
	res, err := e.store.AppendPresigned(ctx, batch)
	if err != nil {
		t.Fatalf("append presigned: %v", err)
	}
	if res.LastPosition-res.FirstPosition != 2 {
		t.Fatalf("result %+v", res)
	}
	recs, err := e.store.ReadStream(ctx, "node-n1", 1, 10)
	if err != nil || len(recs) != 2 || recs[0].KeyID != nodeKey.ID() || recs[1].StreamVersion != 2 {
		t.Fatalf("node stream = %+v, %v", recs, err)
	}
	// Redelivery is recognised and stores nothing.
	if _, err := e.store.AppendPresigned(ctx, batch); !errors.Is(err, eventstore.ErrDuplicateEventID) {
		t.Fatalf("redelivered batch: err = %v, want ErrDuplicateEventID", err)
	}
	// A payload changed in transit.
	forged := nodeBatch(nodeKey, "node-n1")
	env, _ := eventstore.DecodeEnvelope(forged[0].Envelope)
	env.Payload = []byte(`{"from":"mallory"}`)
	forged[0].Envelope = eventstore.AppendEnvelope(nil, &env)
	if _, err := e.store.AppendPresigned(ctx, forged); !errors.Is(err, eventstore.ErrBadSignature) {
		t.Fatalf("forged payload: err = %v, want ErrBadSignature", err)
	}
	// Reserved streams stay reserved.
	if _, err := e.store.AppendPresigned(ctx, nodeBatch(nodeKey, "$log")); !errors.Is(err, eventstore.ErrReservedStream) {
		t.Fatalf("presigned into $log: err = %v", err)
	}
	// Revoked by another process after this store cached the key: refused under the head lock.
	if _, err := other.RevokeKey(ctx, nil, nodeKey.ID(), "node removed"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AppendPresigned(ctx, nodeBatch(nodeKey, "node-n1")); !errors.Is(err, eventstore.ErrBadSignature) {
		t.Fatalf("revoked key: err = %v, want ErrBadSignature", err)
	}
	rep := verifyOK(t, e.url)
	head, _ := e.store.Head(ctx)
	if rep.Count != head {
		t.Fatalf("verified %d of %d", rep.Count, head)
	}
}
