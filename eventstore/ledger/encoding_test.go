package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

func sampleEnvelope(i int) Envelope {
	return Envelope{
		EventID: uuid.MustParse(fmt.Sprintf("0193f2a4-7c1e-7d3a-9b2e-%012d", i)), StreamID: "tunnel-7", Type: "tunnel.created",
		SchemaVersion: 2, KeyID: "ed25519:0011223344556677", Payload: []byte(`{"name":"llm"}`), Metadata: []byte(`{"actor":"u1"}`),
	}
}

func sampleLeaf(t testing.TB) []byte {
	t.Helper()
	key, err := NewSigningKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	envs := [][]byte{}
	for i := range 3 {
		e := sampleEnvelope(i)
		envs = append(envs, AppendEnvelope(nil, &e))
	}
	signed := SignEnvelopes(key, envs)
	return AppendLeaf(nil, &Leaf{Position: 42, StreamVersion: 3, RecordedAt: 1_700_000_000_123_456,
		Envelope: envs[1], Signature: signed.Signature, Proof: signed.Proofs[1]})
}

func TestEncodingRoundTrip(t *testing.T) {
	t.Parallel()
	e := sampleEnvelope(1)
	enc := AppendEnvelope(nil, &e)
	if len(enc) != EnvelopeSize(&e) {
		t.Fatalf("EnvelopeSize = %d, encoded %d bytes", EnvelopeSize(&e), len(enc))
	}
	got, err := DecodeEnvelope(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.EventID != e.EventID || got.StreamID != e.StreamID || got.Type != e.Type || got.SchemaVersion != e.SchemaVersion ||
		got.KeyID != e.KeyID || !bytes.Equal(got.Payload, e.Payload) || !bytes.Equal(got.Metadata, e.Metadata) {
		t.Fatalf("round trip: got %+v, want %+v", got, e)
	}
	leaf := sampleLeaf(t)
	l, err := DecodeLeaf(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if l.Position != 42 || l.StreamVersion != 3 || l.RecordedAt != 1_700_000_000_123_456 {
		t.Fatalf("leaf = %+v", l)
	}
	if !bytes.Equal(AppendLeaf(nil, &l), leaf) {
		t.Fatal("re-encoding a decoded leaf changed it")
	}
}

// Moving bytes between adjacent fields must change the encoding (length prefixes).
func TestEncodingIsInjective(t *testing.T) {
	t.Parallel()
	a := Envelope{StreamID: "ab", Type: "c.d", Payload: []byte("{}"), Metadata: []byte("{}")}
	b := Envelope{StreamID: "a", Type: "bc.d", Payload: []byte("{}"), Metadata: []byte("{}")}
	if bytes.Equal(AppendEnvelope(nil, &a), AppendEnvelope(nil, &b)) {
		t.Fatal("two different envelopes encode to the same bytes")
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	t.Parallel()
	leaf := sampleLeaf(t)
	cases := map[string][]byte{
		"empty":          nil,
		"bad magic":      append([]byte("XXXX"), leaf[4:]...),
		"truncated":      leaf[:len(leaf)-1],
		"trailing bytes": append(append([]byte(nil), leaf...), 0),
		"huge length":    append(append([]byte(nil), leaf[:28]...), 0xff, 0xff, 0xff, 0xff),
	}
	for name, b := range cases {
		if _, err := DecodeLeaf(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := DecodeSigProof([]byte{0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 0}); !errors.Is(err, ErrMalformed) {
		t.Errorf("proof index past count accepted: %v", err)
	}
}

// Our batch signatures carry RFC 6962 inclusion proofs that the reference implementation accepts,
// for every batch size and index.
func TestBatchProofsMatchRFC6962(t *testing.T) {
	t.Parallel()
	key, _ := GenerateSigningKey()
	for n := 1; n <= 33; n++ {
		envs := make([][]byte, n)
		leaves := make([][]byte, n)
		for i := range envs {
			e := sampleEnvelope(i)
			envs[i] = AppendEnvelope(nil, &e)
			leaves[i] = rfc6962.DefaultHasher.HashLeaf(envs[i])
		}
		signed := SignEnvelopes(key, envs)
		var wantRoot []byte
		for i := range envs {
			root, count, err := BatchRoot(envs[i], signed.Proofs[i])
			if err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			if count != uint32(n) {
				t.Fatalf("n=%d: count %d", n, count)
			}
			p, _ := DecodeSigProof(signed.Proofs[i])
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(n), leaves[i], p.Path, root); err != nil {
				t.Fatalf("n=%d i=%d: reference verifier: %v", n, i, err)
			}
			if wantRoot == nil {
				wantRoot = root
			} else if !bytes.Equal(root, wantRoot) {
				t.Fatalf("n=%d: envelope %d yields another root", n, i)
			}
			if !newVerifyingKeyMust(t, key).Verify(SignedMessage(count, root), signed.Signature) {
				t.Fatalf("n=%d: signature does not verify", n)
			}
		}
		// A proof for one envelope does not fit another.
		if n > 1 {
			root, _, _ := BatchRoot(envs[0], signed.Proofs[1])
			if bytes.Equal(root, wantRoot) {
				t.Fatalf("n=%d: a proof verified for the wrong envelope", n)
			}
		}
	}
}

func newVerifyingKeyMust(t *testing.T, k *SigningKey) *VerifyingKey {
	t.Helper()
	v, err := newVerifyingKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Signatures are deterministic RFC 8032 Ed25519: the same bytes as the standard library.
func TestSignatureMatchesStandardLibrary(t *testing.T) {
	t.Parallel()
	key, _ := GenerateSigningKey()
	msg := SignedMessage(1, bytes.Repeat([]byte{1}, 32))
	std := stdSign(key, msg)
	if !bytes.Equal(key.Sign(msg), std) {
		t.Fatal("signature differs from crypto/ed25519")
	}
}

func FuzzDecodeLeaf(f *testing.F) {
	leaf := sampleLeaf(f)
	f.Add(leaf)
	f.Add(leaf[:len(leaf)/2]) // a leaf split across reads
	f.Add(leaf[len(leaf)/2:])
	e := sampleEnvelope(0)
	f.Add(AppendEnvelope(nil, &e))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeLeaf(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(AppendLeaf(nil, &l), b) {
			t.Fatalf("decode/encode is not the identity for %x", b)
		}
		if env, err := DecodeEnvelope(l.Envelope); err == nil {
			if !bytes.Equal(AppendEnvelope(nil, &env), l.Envelope) {
				t.Fatalf("envelope decode/encode is not the identity")
			}
		}
		if p, err := DecodeSigProof(l.Proof); err == nil {
			if !bytes.Equal(AppendSigProof(nil, &p), l.Proof) {
				t.Fatalf("proof decode/encode is not the identity")
			}
		}
	})
}

func FuzzDecodeEnvelope(f *testing.F) {
	for i := range 3 {
		e := sampleEnvelope(i)
		enc := AppendEnvelope(nil, &e)
		f.Add(enc)
		f.Add(enc[:len(enc)-3])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEnvelope(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(AppendEnvelope(nil, &e), b) {
			t.Fatalf("decode/encode is not the identity for %x", b)
		}
	})
}
