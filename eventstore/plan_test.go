package eventstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

// These tests run without PostgreSQL: planBatch is the appender's decision, given what
// beginBatch read under the head lock.

func testKey(t *testing.T, seed byte) *SigningKey {
	t.Helper()
	k, err := NewSigningKeyFromSeed(bytes.Repeat([]byte{seed}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// group is one stream's part of a test request: n events at an expected version.
func group(stream string, expected ExpectedVersion, n int) streamGroup {
	return streamGroup{stream: stream, expected: expected, n: n}
}

// ordinaryRequest builds a request as Append and AppendMulti do, signed by key.
func ordinaryRequest(key *SigningKey, groups ...streamGroup) *appendRequest {
	r := &appendRequest{groups: groups, keyID: key.ID(), signed: true}
	for _, g := range groups {
		for range g.n {
			r.events = append(r.events, testEvent(g.stream))
		}
	}
	signAll(key, r.events)
	return r
}

// presignedRequest builds a request as AppendPresigned does, signed by a producer's key.
func presignedRequest(key *SigningKey, streams ...string) *appendRequest {
	r := &appendRequest{presigned: true}
	for _, s := range streams {
		r.events = append(r.events, testEvent(s))
	}
	signAll(key, r.events)
	return r
}

func testEvent(stream string) pendingEvent {
	return pendingEvent{env: Envelope{EventID: uuid.New(), StreamID: stream, Type: "test.note_added", SchemaVersion: 1,
		Payload: []byte(`{"n":1}`), Metadata: []byte(`{}`)}}
}

// testRing is a key history: the log key from position 0, and a node key registered by the
// record at position 5, so in force from position 6.
func testRing(t *testing.T, logKey, nodeKey *SigningKey) *KeyRing {
	t.Helper()
	const origin = "tunnelplane/log/test"
	genesis, _ := json.Marshal(GenesisPayload{LogID: "test", Origin: origin, Algorithm: AlgorithmEd25519, KeyID: logKey.ID(), PublicKey: logKey.Public()})
	ring, err := NewKeyRing().Apply(0, TypeGenesis, genesis)
	if err != nil {
		t.Fatal(err)
	}
	added, _ := json.Marshal(NewKeyAdded(origin, PurposeNode, "n1", nodeKey))
	if ring, err = ring.Apply(5, TypeKeyAdded, added); err != nil {
		t.Fatal(err)
	}
	return ring
}

// outcome is what a request of the batch should get: results when accepted, err when rejected.
type outcome struct {
	results []AppendResult // RecordedAt is left out: every result gets the batch time
	err     error          // a *WrongExpectedVersionError is compared field by field, others with errors.Is
}

func accepted(results ...AppendResult) outcome { return outcome{results: results} }

func wrongVersion(stream string, expected ExpectedVersion, actual uint64) outcome {
	return outcome{err: &WrongExpectedVersionError{StreamID: stream, Expected: expected, Actual: actual}}
}

func res(version, first, last uint64) AppendResult {
	return AppendResult{StreamVersion: version, FirstPosition: first, LastPosition: last}
}

func TestPlanBatch(t *testing.T) {
	t.Parallel()
	logKey, nodeKey := testKey(t, 1), testKey(t, 2)
	ring := testRing(t, logKey, nodeKey)
	dup := ordinaryRequest(logKey, group("dup-a", NoStream, 1))
	dupID := dup.events[0].env.EventID

	tests := []struct {
		name     string
		next     uint64            // the head's next position
		versions map[string]uint64 // as read under the head lock
		reqs     func() []*appendRequest
		want     []outcome // one per request, in batch order
	}{
		{
			name: "empty batch",
			next: 7,
			reqs: func() []*appendRequest { return nil },
		},
		{
			name:     "exact version that matches",
			next:     10,
			versions: map[string]uint64{"a": 2},
			reqs:     func() []*appendRequest { return []*appendRequest{ordinaryRequest(logKey, group("a", Exact(2), 2))} },
			want:     []outcome{accepted(res(4, 10, 11))},
		},
		{
			name:     "expected version conflicts",
			next:     10,
			versions: map[string]uint64{"a": 2},
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("a", Exact(1), 1)),
					ordinaryRequest(logKey, group("a", Exact(3), 1)),
					ordinaryRequest(logKey, group("a", NoStream, 1)),
					ordinaryRequest(logKey, group("b", Exact(1), 1)), // b has no events
				}
			},
			want: []outcome{wrongVersion("a", Exact(1), 2), wrongVersion("a", Exact(3), 2),
				wrongVersion("a", NoStream, 2), wrongVersion("b", Exact(1), 0)},
		},
		{
			name:     "AnyVersion appends at whatever version the stream has",
			versions: map[string]uint64{"a": 7},
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("a", AnyVersion, 1)),
					ordinaryRequest(logKey, group("b", AnyVersion, 2)),
					ordinaryRequest(logKey, group("a", AnyVersion, 1)),
				}
			},
			want: []outcome{accepted(res(8, 0, 0)), accepted(res(2, 1, 2)), accepted(res(9, 3, 3))},
		},
		{
			name: "several requests for one stream see each other's versions",
			next: 3,
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("a", NoStream, 2)),
					ordinaryRequest(logKey, group("a", Exact(2), 1)),
					ordinaryRequest(logKey, group("a", Exact(2), 1)), // lost the race to the one before
					ordinaryRequest(logKey, group("a", AnyVersion, 1)),
					ordinaryRequest(logKey, group("a", NoStream, 1)),
				}
			},
			want: []outcome{accepted(res(2, 3, 4)), accepted(res(3, 5, 5)), wrongVersion("a", Exact(2), 3),
				accepted(res(4, 6, 6)), wrongVersion("a", NoStream, 4)},
		},
		{
			name:     "a rejected request takes no position",
			next:     5,
			versions: map[string]uint64{"taken": 1},
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("x", NoStream, 1)),
					ordinaryRequest(logKey, group("taken", NoStream, 3)),
					ordinaryRequest(logKey, group("y", NoStream, 2)),
				}
			},
			want: []outcome{accepted(res(1, 5, 5)), wrongVersion("taken", NoStream, 1), accepted(res(2, 6, 7))},
		},
		{
			name:     "a request over several streams is accepted whole",
			versions: map[string]uint64{"b": 1},
			reqs: func() []*appendRequest {
				return []*appendRequest{ordinaryRequest(logKey, group("a", NoStream, 2), group("b", Exact(1), 1))}
			},
			want: []outcome{accepted(res(2, 0, 1), res(2, 2, 2))},
		},
		{
			name:     "a request over several streams is rejected whole",
			versions: map[string]uint64{"b": 1},
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("a", NoStream, 1), group("b", NoStream, 1)),
					ordinaryRequest(logKey, group("a", NoStream, 1)), // a did not move
				}
			},
			want: []outcome{wrongVersion("b", NoStream, 1), accepted(res(1, 0, 0))},
		},
		{
			// Only the database knows which ids are stored already; commit retries each
			// request alone when it refuses the batch, so only the culprit fails.
			name: "duplicate event ids are left to the database",
			reqs: func() []*appendRequest {
				again := ordinaryRequest(logKey, group("dup-b", NoStream, 1))
				again.events[0].env.EventID = dupID
				signAll(logKey, again.events)
				return []*appendRequest{dup, again}
			},
			want: []outcome{accepted(res(1, 0, 0)), accepted(res(1, 1, 1))},
		},
		{
			name:     "presigned events take the next version of each stream they name",
			next:     10,
			versions: map[string]uint64{"node-n1": 3},
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("node-n1", Exact(3), 1)),
					presignedRequest(nodeKey, "node-n1", "tunnel-a", "node-n1"),
				}
			},
			// A presigned request's result is that of its last event.
			want: []outcome{accepted(res(4, 10, 10)), accepted(res(6, 11, 13))},
		},
		{
			name: "a presigned key is checked at the position its record gets",
			next: 5,
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("a", NoStream, 1)),
					presignedRequest(nodeKey, "node-n1"), // position 6: the node key is in force
				}
			},
			want: []outcome{accepted(res(1, 5, 5)), accepted(res(1, 6, 6))},
		},
		{
			name:     "a presigned request before its key is in force is rejected and takes no position",
			next:     5,
			versions: map[string]uint64{"a": 1},
			reqs: func() []*appendRequest {
				return []*appendRequest{
					ordinaryRequest(logKey, group("a", NoStream, 1)), // rejected: nothing moves
					presignedRequest(nodeKey, "node-n1"),             // position 5: not yet
					ordinaryRequest(logKey, group("b", NoStream, 1)),
				}
			},
			want: []outcome{wrongVersion("a", NoStream, 1), {err: ErrBadSignature}, accepted(res(1, 5, 5))},
		},
		{
			name: "a presigned request whose signature does not verify is rejected",
			next: 10,
			reqs: func() []*appendRequest {
				forged := presignedRequest(nodeKey, "node-n1")
				forged.events[0].env.Payload = []byte(`{"n":2}`)
				forged.events[0].envelope = AppendEnvelope(nil, &forged.events[0].env)
				return []*appendRequest{forged, ordinaryRequest(logKey, group("a", NoStream, 1))}
			},
			want: []outcome{{err: ErrBadSignature}, accepted(res(1, 10, 10))},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Date(2025, 3, 4, 5, 6, 7, 8000, time.UTC)
			h := head{next: tc.next, hash: bytes.Repeat([]byte{0xab}, HashSize), keyID: logKey.ID(), origin: "tunnelplane/log/test"}
			reqs := tc.reqs()
			before := maps.Clone(tc.versions)
			p := planBatch(reqs, tc.versions, h, now, ring)
			if !maps.Equal(tc.versions, before) {
				t.Errorf("planBatch changed the versions it was given: %v, was %v", tc.versions, before)
			}
			checkOutcomes(t, reqs, p, tc.want, now)
			checkRows(t, h, tc.versions, now, p)
		})
	}
}

// checkOutcomes compares what each request got with what it should get.
func checkOutcomes(t *testing.T, reqs []*appendRequest, p batchPlan, want []outcome, now time.Time) {
	t.Helper()
	if len(p.accepted) != len(p.results) {
		t.Fatalf("%d accepted requests but %d results", len(p.accepted), len(p.results))
	}
	if len(p.accepted)+len(p.rejected) != len(reqs) {
		t.Fatalf("%d requests: %d accepted, %d rejected", len(reqs), len(p.accepted), len(p.rejected))
	}
	var acc, rej int
	for i, r := range reqs {
		w := want[i]
		if w.err == nil {
			if acc >= len(p.accepted) || p.accepted[acc] != r {
				t.Fatalf("request %d: not accepted in batch order", i)
			}
			wantRes := slices.Clone(w.results)
			for j := range wantRes {
				wantRes[j].RecordedAt = now
			}
			if got := p.results[acc]; !slices.Equal(got, wantRes) {
				t.Errorf("request %d: results %+v, want %+v", i, got, wantRes)
			}
			acc++
			continue
		}
		if rej >= len(p.rejected) || p.rejected[rej].req != r {
			t.Fatalf("request %d: not rejected in batch order", i)
		}
		got := p.rejected[rej].err
		var wantWEV, gotWEV *WrongExpectedVersionError
		switch {
		case errors.As(w.err, &wantWEV):
			if !errors.As(got, &gotWEV) || *gotWEV != *wantWEV {
				t.Errorf("request %d: rejected with %v, want %v", i, got, wantWEV)
			}
		case !errors.Is(got, w.err):
			t.Errorf("request %d: rejected with %v, want %v", i, got, w.err)
		}
		rej++
	}
}

// checkRows checks the rows to write: the accepted events in order, at contiguous positions from
// the head, each at its stream's next version (counting only accepted events), chained onto the
// head hash as Verify recomputes the chain.
func checkRows(t *testing.T, h head, versions map[string]uint64, now time.Time, p batchPlan) {
	t.Helper()
	b := p.rows
	var events []*pendingEvent
	for _, r := range p.accepted {
		for j := range r.events {
			events = append(events, &r.events[j])
		}
	}
	if len(b.positions) != len(events) || b.next != h.next+uint64(len(events)) {
		t.Fatalf("%d rows up to next position %d for %d accepted events from %d", len(b.positions), b.next, len(events), h.next)
	}
	cur := maps.Clone(versions)
	if cur == nil {
		cur = map[string]uint64{}
	}
	prev := h.hash
	for k, ev := range events {
		pos := h.next + uint64(k)
		cur[ev.env.StreamID]++
		v := cur[ev.env.StreamID]
		if b.positions[k] != int64(pos) || b.versions[k] != int64(v) || b.streams[k] != ev.env.StreamID ||
			b.ids[k].Bytes != ev.env.EventID || !bytes.Equal(b.sigs[k], ev.sig) || !bytes.Equal(b.proofs[k], ev.proof) {
			t.Fatalf("row %d: position %d, %s version %d; want position %d, %s version %d (or its id, signature or proof differ)",
				k, b.positions[k], b.streams[k], b.versions[k], pos, ev.env.StreamID, v)
		}
		_, leaf := RecordLeaf(pos, v, now, &ev.env, ev.sig, ev.proof)
		want := ChainHash(prev, leaf)
		if !bytes.Equal(b.prevs[k], prev) || !bytes.Equal(b.hashes[k], want[:]) {
			t.Fatalf("row %d: prev_hash %x, hash %x; want %x, %x", k, b.prevs[k], b.hashes[k], prev, want)
		}
		prev = want[:]
	}
	if !bytes.Equal(b.prevHash, prev) {
		t.Fatalf("the batch ends at hash %x, its last row at %x", b.prevHash, prev)
	}
}

func TestBatchStreams(t *testing.T) {
	t.Parallel()
	key := testKey(t, 1)
	tests := []struct {
		reqs []*appendRequest
		want []string
	}{
		{nil, []string{}},
		{[]*appendRequest{
			ordinaryRequest(key, group("a", AnyVersion, 2), group("b", NoStream, 1)),
			ordinaryRequest(key, group("b", AnyVersion, 1), group("c", NoStream, 1)),
		}, []string{"a", "b", "c"}},
		{[]*appendRequest{ // "$log" is read only when a presigned request needs the key history
			ordinaryRequest(key, group(LogStream, AnyVersion, 1)),
			ordinaryRequest(key, group("a", AnyVersion, 1)),
		}, []string{LogStream, "a"}},
		{[]*appendRequest{
			ordinaryRequest(key, group("a", AnyVersion, 1)),
			presignedRequest(key, "node-n1", "a", "tunnel-t"),
		}, []string{"a", "node-n1", "tunnel-t", LogStream}},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if got := batchStreams(tc.reqs); got == nil || !slices.Equal(got, tc.want) {
				t.Fatalf("batchStreams = %q, want %q", got, tc.want)
			}
		})
	}
}
