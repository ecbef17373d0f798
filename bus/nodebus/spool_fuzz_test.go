package nodebus

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// realBatches encodes batches exactly as a node's Publisher does.
func realBatches(t testing.TB) [][]byte {
	t.Helper()
	key, err := ledger.NewSigningKeyFromSeed(bytes.Repeat([]byte{7}, 32))
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
