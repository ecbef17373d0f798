package wire_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// realBatches encodes batches as a node's publisher does (bus/nodebus): envelopes of node facts
// signed together by the node's event key.
func realBatches(t testing.TB) [][]byte {
	t.Helper()
	key, err := ledger.NewSigningKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	nodeID := "6f1c8a52-8b0e-4d55-9c43-0e6f7f3c2a19"
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var out [][]byte
	for _, n := range []int{1, 2, 3, 5} {
		envelopes := make([][]byte, n)
		for i := range envelopes {
			payload, _ := json.Marshal(domain.UsageRecorded{NodeID: nodeID, Requests: int64(i), WindowStart: at, WindowEnd: at.Add(time.Minute)})
			meta, _ := json.Marshal(domain.Metadata{Actor: "node:" + nodeID, NodeID: nodeID, OccurredAt: at, CorrelationID: "req"})
			env := ledger.Envelope{EventID: uuid.NewSHA1(uuid.Nil, []byte{byte(n), byte(i)}), StreamID: domain.NodeFactsStream(nodeID),
				Type: domain.TypeUsageRecorded, SchemaVersion: 1, KeyID: key.ID(), Payload: payload, Metadata: meta}
			envelopes[i] = ledger.AppendEnvelope(nil, &env)
		}
		signed := ledger.SignEnvelopes(key, envelopes)
		out = append(out, wire.EncodeBatch(signed.Signature, envelopes, signed.Proofs))
	}
	return out
}

// FuzzDecodeBatch: the decoder never panics or over-allocates, and whatever it accepts is exactly
// the canonical encoding of what it returned.
func FuzzDecodeBatch(f *testing.F) {
	for _, b := range realBatches(f) {
		f.Add(b)
		for _, cut := range []int{0, 3, 4, 7, 8, 11, 12, 40, 76, len(b) / 2, len(b) - 33, len(b) - 1} {
			if cut >= 0 && cut < len(b) {
				f.Add(b[:cut]) // truncated in transit or in a torn spool record
			}
		}
		f.Add(append(append([]byte(nil), b...), 0)) // trailing byte
		huge := append([]byte(nil), b...)
		binary.BigEndian.PutUint32(huge[4:8], 1<<31) // a count the bytes cannot hold
		f.Add(huge)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := wire.DecodeBatch(data)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("error %v does not wrap wire.ErrMalformed", err)
			}
			return
		}
		envs := make([][]byte, len(events))
		proofs := make([][]byte, len(events))
		for i, ev := range events {
			if !bytes.Equal(ev.Signature, events[0].Signature) {
				t.Fatal("events of one batch carry different signatures")
			}
			envs[i], proofs[i] = ev.Envelope, ev.Proof
		}
		if again := wire.EncodeBatch(events[0].Signature, envs, proofs); !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, data)
		}
	})
}

// Real batches decode into events whose signatures verify on their own.
func TestRealBatchesDecodeAndVerify(t *testing.T) {
	for _, b := range realBatches(t) {
		events, err := wire.DecodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range events {
			root, count, err := ledger.BatchRoot(ev.Envelope, ev.Proof)
			if err != nil || int(count) != len(events) || len(root) != ledger.HashSize {
				t.Fatalf("event %d: root %x, count %d, %v", i, root, count, err)
			}
		}
		if _, err := wire.DecodeBatch(b[:len(b)-1]); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("truncated batch: err = %v, want wire.ErrMalformed", err)
		}
	}
}

func realRelayed(t testing.TB) [][]byte {
	t.Helper()
	recs := []ledger.Record{
		{Position: 0, StreamID: "$log", StreamVersion: 1, EventID: uuid.NewSHA1(uuid.Nil, []byte("g")), Type: ledger.TypeGenesis,
			SchemaVersion: 1, RecordedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC), KeyID: "ed25519:0011223344556677",
			Payload: []byte(`{"log_id":"x","origin":"tunnelplane.example/log"}`), Metadata: []byte(`{}`)},
		{Position: 42, StreamID: "tunnel-abc", StreamVersion: 3, EventID: uuid.NewSHA1(uuid.Nil, []byte("t")), Type: domain.TypeTunnelCreated,
			SchemaVersion: 1, RecordedAt: time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC), KeyID: "ed25519:8899aabbccddeeff",
			Payload: []byte(`{"tunnel_id":"abc","name":"ollama"}`), Metadata: []byte(`{"actor":"u1","correlation_id":"r1"}`)},
	}
	var out [][]byte
	for i := range recs {
		body, err := wire.EncodeRelayedEvent(&recs[i], "")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, body)
	}
	return out
}

// FuzzDecodeRelayedEvent: nodes parse relayed events from the network; the parser never panics
// and what it accepts survives a round trip.
func FuzzDecodeRelayedEvent(f *testing.F) {
	for _, b := range realRelayed(f) {
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(bytes.Replace(b, []byte(`"type"`), []byte(`"typo"`), 1))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := wire.DecodeRelayedEvent(data)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("error %v does not wrap wire.ErrMalformed", err)
			}
			return
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		ev2, err := wire.DecodeRelayedEvent(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if ev2.Position != ev.Position || ev2.EventID != ev.EventID || ev2.Type != ev.Type || !ev2.RecordedAt.Equal(ev.RecordedAt) {
			t.Fatalf("round trip changed %+v into %+v", ev, ev2)
		}
	})
}
