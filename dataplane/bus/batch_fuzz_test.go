package bus

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// realBatches encodes batches exactly as a node's Publisher does.
func realBatches(t testing.TB) [][]byte {
	t.Helper()
	key, err := eventstore.NewSigningKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	nodeID := "6f1c8a52-8b0e-4d55-9c43-0e6f7f3c2a19"
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	p := &Publisher{cfg: PublisherConfig{NodeID: nodeID, Key: key, MaxMessageBytes: 1 << 20, Now: func() time.Time { return at }},
		stream: domain.NodeFactsStream(nodeID)}
	var out [][]byte
	for _, n := range []int{1, 2, 3, 5} {
		facts := make([]Fact, n)
		for i := range facts {
			facts[i] = Fact{ID: uuid.NewSHA1(uuid.Nil, []byte{byte(n), byte(i)}), CorrelationID: "req",
				Event: domain.UsageRecorded{NodeID: nodeID, Requests: int64(i), WindowStart: at, WindowEnd: at.Add(time.Minute)}}
		}
		body, _, err := p.encode(facts)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, body)
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
		events, err := DecodeBatch(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
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
		if again := EncodeBatch(events[0].Signature, envs, proofs); !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, data)
		}
	})
}

// Real batches decode into events whose signatures verify on their own.
func TestRealBatchesDecodeAndVerify(t *testing.T) {
	for _, b := range realBatches(t) {
		events, err := DecodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range events {
			root, count, err := eventstore.BatchRoot(ev.Envelope, ev.Proof)
			if err != nil || int(count) != len(events) || len(root) != eventstore.HashSize {
				t.Fatalf("event %d: root %x, count %d, %v", i, root, count, err)
			}
		}
		if _, err := DecodeBatch(b[:len(b)-1]); !errors.Is(err, ErrMalformed) {
			t.Errorf("truncated batch: err = %v, want ErrMalformed", err)
		}
	}
}

func realRelayed(t testing.TB) [][]byte {
	t.Helper()
	recs := []eventstore.Record{
		{Position: 0, StreamID: "$log", StreamVersion: 1, EventID: uuid.NewSHA1(uuid.Nil, []byte("g")), Type: eventstore.TypeGenesis,
			SchemaVersion: 1, RecordedAt: time.Date(2025, 1, 2, 3, 4, 5, 123456000, time.UTC), KeyID: "ed25519:0011223344556677",
			Payload: []byte(`{"log_id":"x","origin":"tunnelplane.example/log"}`), Metadata: []byte(`{}`)},
		{Position: 42, StreamID: "tunnel-abc", StreamVersion: 3, EventID: uuid.NewSHA1(uuid.Nil, []byte("t")), Type: domain.TypeTunnelCreated,
			SchemaVersion: 1, RecordedAt: time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC), KeyID: "ed25519:8899aabbccddeeff",
			Payload: []byte(`{"tunnel_id":"abc","name":"ollama"}`), Metadata: []byte(`{"actor":"u1","correlation_id":"r1"}`)},
	}
	var out [][]byte
	for i := range recs {
		msg, err := relayMessage(&recs[i], "")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msg.Data)
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
		ev, err := DecodeRelayedEvent(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		ev2, err := DecodeRelayedEvent(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if ev2.Position != ev.Position || ev2.EventID != ev.EventID || ev2.Type != ev.Type || !ev2.RecordedAt.Equal(ev.RecordedAt) {
			t.Fatalf("round trip changed %+v into %+v", ev, ev2)
		}
	})
}

// FuzzSpoolRecovery: whatever a crash or a bad disk leaves in a segment, opening the spool never
// panics, keeps only intact records, and appends after them.
func FuzzSpoolRecovery(f *testing.F) {
	var seg []byte
	for _, b := range realBatches(f) {
		seg = binary.BigEndian.AppendUint32(seg, uint32(len(b)))
		seg = binary.BigEndian.AppendUint32(seg, crc32c(b))
		seg = append(seg, b...)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-5])                 // torn payload
	f.Add(seg[:len(seg)-len(seg)/3])        // torn somewhere in the middle
	f.Add(append(seg, 0, 0, 0))             // torn header
	f.Add(append(seg, make([]byte, 64)...)) // zeros after a crash (allocated, never written)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "00000000000000000001.seg"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		log := discardLogger()
		s, err := openSpool(dir, 1<<30, 1<<20, log)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		n := s.Len()
		var intact [][]byte
		for range n {
			p, ok, err := s.Peek()
			if !ok || err != nil {
				t.Fatalf("peek: %v %v", ok, err)
			}
			intact = append(intact, append([]byte(nil), p...))
			// Walk without acknowledging: move the head by hand through a copy of the queue.
			s.head++
		}
		s.head = 0
		if err := s.Append([]byte("next")); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
		s.close()
		s2, err := openSpool(dir, 1<<30, 1<<20, log)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s2.close()
		if s2.Len() != n+1 {
			t.Fatalf("reopened spool holds %d records, want %d", s2.Len(), n+1)
		}
		for i := range n + 1 {
			p, _, err := s2.Peek()
			if err != nil {
				t.Fatal(err)
			}
			want := []byte("next")
			if i < n {
				want = intact[i]
			}
			if !bytes.Equal(p, want) {
				t.Fatalf("record %d changed across reopen", i)
			}
			if err := s2.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(left) != 0 {
			t.Fatalf("segments left after every record was acknowledged: %v", left)
		}
	})
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crcTable) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
