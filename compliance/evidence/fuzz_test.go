package evidence

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// seedEntries is a records file of two entries as export writes them (a leaf, chain hashes and
// an inclusion proof), from records built here.
func seedEntries() []byte {
	key, _ := ledger.NewSigningKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	var out []byte
	prev := make([]byte, ledger.HashSize)
	for pos := uint64(0); pos < 2; pos++ {
		env := &ledger.Envelope{EventID: uuid.New(), StreamID: "org-1", Type: "organization.created", SchemaVersion: 1,
			KeyID: key.ID(), Payload: []byte(`{"org_id":"1"}`), Metadata: []byte(`{}`)}
		envelope := ledger.AppendEnvelope(nil, env)
		b := ledger.SignEnvelopes(key, [][]byte{envelope})
		_, leaf := ledger.RecordLeaf(pos, 1, time.Unix(1, 0), env, b.Signature, b.Proofs[0])
		h := ledger.ChainHash(prev, leaf)
		out = appendEntry(out, &Entry{Leaf: leaf, PrevHash: prev, Hash: h[:], Proof: [][]byte{bytes.Repeat([]byte{1}, 32)}})
		prev = h[:]
	}
	return out
}

// Entries decode from any bytes without panicking, and what decodes encodes back to the bytes it
// came from.
func FuzzDecodeEntries(f *testing.F) {
	f.Add(seedEntries())
	f.Add([]byte{0, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeEntries(b)
		enc := encodeEntries(es)
		if !bytes.HasPrefix(b, enc) || (err == nil && len(enc) != len(b)) {
			t.Fatalf("decoded entries encode to %d bytes of the %d read (err %v)", len(enc), len(b), err)
		}
	})
}

// A bundle file of any bytes is read and checked without panicking (a hostile bundle), and a
// damaged one is never reported intact.
func FuzzVerifyBundle(f *testing.F) {
	m, _ := json.Marshal(Manifest{Format: Format, Origin: "tunnelplane/log/x", From: 0, To: 1, WindowCheckpoint: 2, NewestCheckpoint: 2,
		Records: 2, Files: map[string]string{}})
	files := map[string][]byte{FileManifest: m, FileManifestSig: []byte(`{}`), FileRecords: seedEntries(),
		FileLeaves: bytes.Repeat([]byte{3}, 64), FileWindowCheckpoint: []byte("x\n"), FileNewestCheckpoint: []byte("x\n")}
	var buf bytes.Buffer
	if err := WriteBundle(&buf, files, time.Unix(0, 0)); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("not a bundle"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, err := Verify(bytes.NewReader(b), VerifyOptions{TrustedCheckpoint: "x\n1\nAAAA\n\n— x AAAA\n"})
		if err == nil && rep.OK() {
			t.Fatalf("bytes no exporter signed verify as intact")
		}
	})
}
