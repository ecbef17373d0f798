package eventstore_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// The chain verifier takes a log's records in order, through key rotations, added, presigned and
// revoked keys, and from a saved state; it refuses anything changed, out of place, signed by a
// key not in force, or of another log, and stays where it was when it refuses.
func TestChainVerifier(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.store.Append(ctx, "a", eventstore.NoStream, note(1), note(2)); err != nil {
		t.Fatal(err)
	}
	nodeKey, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.AddKey(ctx, eventstore.PurposeNode, "n1", nodeKey); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AppendPresigned(ctx, nodeBatch(nodeKey, "node-n1", "node-n1")); err != nil {
		t.Fatal(err)
	}
	next, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.RotateLogKey(ctx, next); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Append(ctx, "a", eventstore.Exact(2), note(3)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RevokeKey(ctx, nodeKey.ID(), "removed"); err != nil {
		t.Fatal(err)
	}
	recs, err := e.store.ReadAll(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	origin, _ := e.store.Origin(ctx)

	mustFail := func(v *eventstore.ChainVerifier, r eventstore.Record, what string) {
		t.Helper()
		before := v.Next()
		if err := v.Check(&r); !errors.Is(err, eventstore.ErrUnverified) {
			t.Fatalf("%s: err = %v, want ErrUnverified", what, err)
		}
		if v.Next() != before {
			t.Fatalf("%s: the verifier moved on to %d", what, v.Next())
		}
	}
	other := eventstore.NewChainVerifier("another-log", producerStream)
	mustFail(other, recs[0], "the genesis of another origin")

	v := eventstore.NewChainVerifier(origin, producerStream)
	mustFail(v, recs[1], "a record before the genesis")
	var saved []byte
	for i, r := range recs {
		changed := r
		changed.StoredPayload = []byte(`{"n":99}`)
		mustFail(v, changed, "a changed payload")
		if i > 0 {
			mustFail(v, recs[i-1], "a record again")
		}
		if err := v.Check(&r); err != nil {
			t.Fatalf("record %d (%s): %v", r.Position, r.Type, err)
		}
		if i == 4 {
			if saved, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if v.Next() != uint64(len(recs)) || !slices.Equal(v.LogKey(), next.Public()) {
		t.Fatalf("after the log: next %d, log key %x", v.Next(), v.LogKey())
	}

	// From the saved state, the rest verifies the same way.
	restored := eventstore.NewChainVerifier(origin, producerStream)
	if err := json.Unmarshal(saved, restored); err != nil {
		t.Fatal(err)
	}
	if restored.Next() != 5 {
		t.Fatalf("restored at %d", restored.Next())
	}
	for _, r := range recs[5:] {
		if err := restored.Check(&r); err != nil {
			t.Fatalf("restored, record %d: %v", r.Position, err)
		}
	}

	// What a key not in force signs does not verify, even correctly chained: a node record after
	// its key's revocation, a record signed with the retired log key.
	head := recs[len(recs)-1]
	forged := recs[len(recs)-1]
	forged.Position, forged.PrevHash = head.Position+1, head.Hash
	batch := nodeBatch(nodeKey, "node-n1")
	envl, _ := eventstore.DecodeEnvelope(batch[0].Envelope)
	forged.EventID, forged.StreamID, forged.Type, forged.StoredSchemaVersion, forged.KeyID = envl.EventID, envl.StreamID, envl.Type, envl.SchemaVersion, envl.KeyID
	forged.StoredPayload, forged.Metadata, forged.Signature, forged.SignatureProof = envl.Payload, envl.Metadata, batch[0].Signature, batch[0].Proof
	forged.Hash = chainHash(&forged)
	mustFail(v, forged, "a record signed by a revoked node key")

	// A node key in force signs only its own stream.
	n2, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.AddKey(ctx, eventstore.PurposeNode, "n2", n2); err != nil {
		t.Fatal(err)
	}
	added, err := e.store.ReadAll(ctx, head.Position+1, 1)
	if err != nil || len(added) != 1 {
		t.Fatal(err)
	}
	if err := v.Check(&added[0]); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{"a", eventstore.LogStream, "node-n1"} {
		b := nodeBatch(n2, stream)
		env, _ := eventstore.DecodeEnvelope(b[0].Envelope)
		r := eventstore.Record{Position: added[0].Position + 1, PrevHash: added[0].Hash, StreamVersion: 1, RecordedAt: added[0].RecordedAt,
			EventID: env.EventID, StreamID: env.StreamID, Type: env.Type, StoredSchemaVersion: env.SchemaVersion, KeyID: env.KeyID,
			StoredPayload: env.Payload, Metadata: env.Metadata, Signature: b[0].Signature, SignatureProof: b[0].Proof}
		r.Hash = chainHash(&r)
		mustFail(v, r, "node n2's key signing stream "+stream)
	}
}

// producerStream: in these tests a producer key of owner n1 signs the stream node-n1.
func producerStream(owner string) string { return "node-" + owner }

// chainHash is the hash a record carries: its leaf chained to prev_hash.
func chainHash(r *eventstore.Record) []byte {
	env := eventstore.Envelope{EventID: r.EventID, StreamID: r.StreamID, Type: r.Type, SchemaVersion: r.StoredSchemaVersion,
		KeyID: r.KeyID, Payload: r.StoredPayload, Metadata: r.Metadata}
	leaf := eventstore.AppendLeaf(nil, &eventstore.Leaf{Position: r.Position, StreamVersion: r.StreamVersion,
		RecordedAt: r.RecordedAt.UnixMicro(), Envelope: eventstore.AppendEnvelope(nil, &env), Signature: r.Signature, Proof: r.SignatureProof})
	h := eventstore.ChainHash(r.PrevHash, leaf)
	return h[:]
}

// BenchmarkChainVerifier: what a node spends per relayed record, for records appended one per
// batch (a signature each) and 100 per batch (one signature for all).
func BenchmarkChainVerifier(b *testing.B) {
	e := newEnv(b)
	ctx := ctxT(b)
	for range 500 {
		if _, err := e.store.Append(ctx, "single", eventstore.AnyVersion, note(1)); err != nil {
			b.Fatal(err)
		}
	}
	batch := make([]eventstore.EventData, 100)
	for i := range batch {
		batch[i] = note(i)
	}
	for range 5 {
		if _, err := e.store.Append(ctx, "batched", eventstore.AnyVersion, batch...); err != nil {
			b.Fatal(err)
		}
	}
	recs, err := e.store.ReadAll(ctx, 0, 2000)
	if err != nil {
		b.Fatal(err)
	}
	origin, _ := e.store.Origin(ctx)
	for _, c := range []struct {
		name     string
		from, to int
	}{{"one-per-batch", 1, 501}, {"100-per-batch", 501, len(recs)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				b.StopTimer()
				v := eventstore.NewChainVerifier(origin, producerStream)
				for i := range c.from {
					if err := v.Check(&recs[i]); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				for i := c.from; i < c.to; i++ {
					if err := v.Check(&recs[i]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*(c.to-c.from))/1000, "µs/record")
		})
	}
}
