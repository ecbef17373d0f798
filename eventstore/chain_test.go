package eventstore_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// producerStream: in these tests a producer key of owner n1 signs the stream node-n1.
func producerStream(owner string) string { return "node-" + owner }

func positions(recs []eventstore.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Position
	}
	return out
}

// The chain verifier lets through exactly the log, batch by batch as checkpoints close them,
// through key rotations, added, presigned and revoked keys, and from a saved state; what it is
// offered changed, re-chained (a genuine envelope placed elsewhere), under another checkpoint, of
// another log, or signed by a producer key outside its stream never comes out.
func TestChainVerifier(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.store.Append(ctx, "a", eventstore.NoStream, note(1), note(2), note(3)); err != nil {
		t.Fatal(err)
	}
	nodeKey, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.AddKey(ctx, nil, eventstore.PurposeNode, "n1", nodeKey); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AppendPresigned(ctx, nodeBatch(nodeKey, "node-n1", "node-n1")); err != nil {
		t.Fatal(err)
	}
	next, _ := eventstore.GenerateSigningKey()
	if _, err := e.store.RotateLogKey(ctx, nil, next); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Append(ctx, "a", eventstore.Exact(3), note(4)); err != nil {
		t.Fatal(err)
	}
	// The store takes a node's batch for any stream; only the ingester keeps nodes to their own.
	if _, err := e.store.AppendPresigned(ctx, nodeBatch(nodeKey, "tunnel-x")); err != nil {
		t.Fatal(err)
	}
	recs, err := e.store.ReadAll(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := e.store.Checkpoints(ctx, 0, uint64(len(recs)))
	if err != nil {
		t.Fatal(err)
	}
	origin, _ := e.store.Origin(ctx)
	misplaced := recs[len(recs)-1] // the node's record in tunnel-x
	recs = recs[:len(recs)-1]

	offer := func(v *eventstore.ChainVerifier, r eventstore.Record, cp string) ([]eventstore.Record, error) {
		t.Helper()
		before := v.Next()
		out, err := v.Offer(&r, cp)
		if err != nil && v.Next() != before {
			t.Fatalf("a refused offer moved the verifier from %d to %d", before, v.Next())
		}
		return out, err
	}
	if _, err := offer(eventstore.NewChainVerifier("another-log", recs[0].Hash, producerStream), recs[0], cps[1]); !errors.Is(err, eventstore.ErrUnverified) {
		t.Fatalf("the genesis of another origin: %v", err)
	}

	// A genesis naming the right origin but not the one the control plane vouches for (an
	// attacker's own log under the origin anyone can read) is not the log.
	if _, err := offer(eventstore.NewChainVerifier(origin, make([]byte, 32), producerStream), recs[0], cps[1]); !errors.Is(err, eventstore.ErrUnverified) {
		t.Fatalf("a genesis other than the pinned one: %v", err)
	}

	v := eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
	var got []eventstore.Record
	var saved []byte
	for i, r := range recs {
		changed := r
		changed.StoredPayload = []byte(`{"n":99}`)
		if _, err := offer(v, changed, cps[r.Position+1]); !errors.Is(err, eventstore.ErrUnverified) {
			t.Fatalf("record %d changed: %v", r.Position, err)
		}
		out, err := offer(v, r, cps[r.Position+1])
		if err != nil {
			t.Fatalf("record %d (%s): %v", r.Position, r.Type, err)
		}
		got = append(got, out...)
		if _, ok := cps[r.Position+1]; ok != (len(out) > 0) {
			t.Fatalf("record %d: released %v with checkpoint %v", r.Position, positions(out), ok)
		}
		if i == 4 {
			if saved, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !slices.Equal(positions(got), positions(recs)) || !slices.Equal(v.LogKey(), next.Public()) {
		t.Fatalf("released %v of %d records; log key %x", positions(got), len(recs), v.LogKey())
	}

	// A genuine envelope re-chained after the head, with any checkpoint there is, stays out:
	// the head's own (signed by the log key in force there, so only the checkpoint tells) and an
	// early one (whose key is no longer in force).
	head := recs[len(recs)-1]
	for _, r := range []eventstore.Record{head, recs[2]} {
		for _, cp := range []string{"", cps[head.Position+1], cps[3]} {
			moved := r
			moved.Position, moved.PrevHash = head.Position+1, head.Hash
			h := moved.ChainHash()
			moved.Hash = h[:]
			if out, _ := offer(v, moved, cp); len(out) != 0 || v.Next() != head.Position+1 {
				t.Fatalf("a re-chained record came out: %v", positions(out))
			}
		}
	}
	// A node's record outside its stream does not verify, even under the log's checkpoint.
	if out, err := offer(v, misplaced, cps[misplaced.Position+1]); !errors.Is(err, eventstore.ErrUnverified) || len(out) != 0 {
		t.Fatalf("a node's record in tunnel-x: %v %v", positions(out), err)
	}

	// A copy of a batch's last record that came first with a wrong note does not keep the right
	// note out; copies of a record published after it do not hide it.
	w := eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
	if out, err := offer(w, recs[0], cps[1]); err != nil || len(out) != 1 {
		t.Fatalf("genesis: %v %v", positions(out), err)
	}
	offer(w, recs[3], "junk")
	offer(w, recs[3], cps[4])
	offer(w, recs[1], "")
	if out, err := offer(w, recs[2], ""); err != nil || !slices.Equal(positions(out), []uint64{1, 2, 3}) {
		t.Fatalf("a batch whose closer came first with a wrong note: %v %v", positions(out), err)
	}
	w = eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
	offer(w, recs[0], cps[1])
	offer(w, recs[2], "")
	offer(w, recs[3], cps[4])
	for i := range 4200 {
		copied := recs[3]
		copied.StoredPayload = []byte(`{"copy":` + strconv.Itoa(i) + `}`)
		h := copied.ChainHash()
		copied.Hash = h[:]
		offer(w, copied, cps[4])
	}
	if out, err := offer(w, recs[1], ""); err != nil || !slices.Equal(positions(out), []uint64{1, 2, 3}) {
		t.Fatalf("a batch whose closer 4,200 copies came after: %v %v", positions(out), err)
	}

	// From the saved state (position 5), the rest verifies the same way; records offered out
	// of order within a batch come out once the batch is complete.
	restored := eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
	if err := json.Unmarshal(saved, restored); err != nil {
		t.Fatal(err)
	}
	from := restored.Next()
	if from == 0 || from > 5 {
		t.Fatalf("restored at %d", from)
	}
	var rest []eventstore.Record
	for _, r := range backward(recs[from:]) {
		out, err := offer(restored, r, cps[r.Position+1])
		if err != nil {
			t.Fatalf("restored, record %d: %v", r.Position, err)
		}
		rest = append(rest, out...)
	}
	if !slices.Equal(positions(rest), positions(recs[from:])) {
		t.Fatalf("restored, offered backwards: released %v", positions(rest))
	}
}

func backward(recs []eventstore.Record) []eventstore.Record {
	out := slices.Clone(recs)
	slices.Reverse(out)
	return out
}

// BenchmarkChainVerifier: what a node spends per relayed record, for records appended one per
// batch (a signature and a checkpoint each) and 100 per batch (one of each for all).
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
	cps, err := e.store.Checkpoints(ctx, 0, uint64(len(recs)))
	if err != nil {
		b.Fatal(err)
	}
	origin, _ := e.store.Origin(ctx)
	// junk: a chain of records someone else published far ahead, each with a checkpoint string,
	// its bottom missing; they stay held while the genuine log is offered.
	junk := func(v *eventstore.ChainVerifier, n int) {
		prev := make([]byte, eventstore.HashSize)
		prev[0] = 1
		for i := range n {
			r := recs[1]
			r.Position, r.PrevHash = uint64(50_000+i), prev
			h := r.ChainHash()
			r.Hash = h[:]
			if _, err := v.Offer(&r, "junk"); err != nil {
				b.Fatal(err)
			}
			prev = r.Hash
		}
	}
	for _, c := range []struct {
		name     string
		from, to int
		junk     int
	}{{"one-per-batch", 1, 501, 0}, {"100-per-batch", 501, len(recs), 0}, {"one-per-batch-2000-junk-held", 1, 501, 2000}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				b.StopTimer()
				v := eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
				for i := range c.from {
					if _, err := v.Offer(&recs[i], cps[recs[i].Position+1]); err != nil {
						b.Fatal(err)
					}
				}
				junk(v, c.junk)
				b.StartTimer()
				for i := c.from; i < c.to; i++ {
					if _, err := v.Offer(&recs[i], cps[recs[i].Position+1]); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*(c.to-c.from))/1000, "µs/record")
		})
	}
}
