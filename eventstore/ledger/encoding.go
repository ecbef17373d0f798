package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Canonical byte layout. Everything that is hashed or signed is built from these encoders and
// nothing else; docs/event-format.md describes the same layout for third-party verifiers.
//
// Integers are big-endian. Every variable-length field is prefixed with its length as a uint32,
// so no two different records can encode to the same bytes.
//
//	envelope = "TPE1"
//	           event_id        16 bytes (UUID)
//	           stream_id       u32 len ‖ UTF-8
//	           type            u32 len ‖ UTF-8
//	           schema_version  u32
//	           key_id          u32 len ‖ UTF-8
//	           payload         u32 len ‖ bytes
//	           metadata        u32 len ‖ bytes
//
// A producer signs a batch of envelopes (the Store: all local requests it commits in one
// transaction; a node: one presigned submission; n ≥ 1) with one Ed25519 signature over the
// RFC 6962 Merkle root of those envelopes:
//
//	batch_root = MTH(envelope_0 … envelope_n-1)          (leaf hash = SHA-256(0x00 ‖ envelope))
//	signature  = Ed25519(producer key, SignatureContext ‖ u32 n ‖ batch_root)
//	proof      = u32 index ‖ u32 n ‖ u32 k ‖ k × 32-byte hashes   (RFC 6962 inclusion path)
//
// Every record carries the signature and its own inclusion proof, so each record verifies on its
// own; for n = 1 the proof is empty and the root is the envelope's leaf hash.
//
//	leaf     = "TPL1"
//	           global_position u64
//	           stream_version  u64
//	           recorded_at     i64 (microseconds since the Unix epoch, UTC)
//	           envelope        u32 len ‖ envelope
//	           signature       u32 len ‖ signature
//	           proof           u32 len ‖ proof
//
//	hash_i   = SHA-256(ChainContext ‖ prev_hash (32 bytes) ‖ u32 len ‖ leaf_i)
//	prev_hash of position 0 is 32 zero bytes.
//
// The Merkle tree of checkpoints is RFC 6962 over the leaf bytes (leaf hash = SHA-256(0x00 ‖ leaf)).
const (
	envelopeMagic = "TPE1"
	leafMagic     = "TPL1"

	// SignatureContext separates event signatures from every other use of a key.
	SignatureContext = "tunnelplane/event-signature/v1\x00"
	// ChainContext separates the hash chain from other SHA-256 uses.
	ChainContext = "tunnelplane/chain/v1\x00"

	// HashSize is the size of a chain hash and of a Merkle root.
	HashSize = sha256.Size
)

// ErrMalformed reports bytes that are not a canonical envelope or leaf.
var ErrMalformed = errors.New("malformed canonical encoding")

// Envelope is the part of an event its producer signs. The store adds position, stream version
// and time around it (see Leaf); a producer that does not know them can still sign.
type Envelope struct {
	EventID       uuid.UUID
	StreamID      string
	Type          string
	SchemaVersion uint32
	KeyID         string
	Payload       []byte
	Metadata      []byte
}

// Leaf is one record of the log as it is hashed into the chain and the Merkle tree.
type Leaf struct {
	Position      uint64
	StreamVersion uint64
	RecordedAt    int64 // microseconds since the Unix epoch
	Envelope      []byte
	Signature     []byte
	Proof         []byte // encoded SigProof
}

// SigProof places one envelope in the batch its producer signed.
type SigProof struct {
	Index uint32
	Count uint32
	Path  [][]byte
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// EnvelopeSize is the exact encoded size of e.
func EnvelopeSize(e *Envelope) int {
	return 4 + 16 + 4 + len(e.StreamID) + 4 + len(e.Type) + 4 + 4 + len(e.KeyID) + 4 + len(e.Payload) + 4 + len(e.Metadata)
}

// AppendEnvelope appends the canonical encoding of e to dst.
func AppendEnvelope(dst []byte, e *Envelope) []byte {
	dst = append(dst, envelopeMagic...)
	dst = append(dst, e.EventID[:]...)
	dst = appendString(dst, e.StreamID)
	dst = appendString(dst, e.Type)
	dst = binary.BigEndian.AppendUint32(dst, e.SchemaVersion)
	dst = appendString(dst, e.KeyID)
	dst = appendBytes(dst, e.Payload)
	dst = appendBytes(dst, e.Metadata)
	return dst
}

// LeafSize is the exact encoded size of a leaf around an envelope, signature and proof of these sizes.
func LeafSize(envelopeLen, sigLen, proofLen int) int {
	return 4 + 8 + 8 + 8 + 4 + envelopeLen + 4 + sigLen + 4 + proofLen
}

// AppendLeaf appends the canonical encoding of l to dst.
func AppendLeaf(dst []byte, l *Leaf) []byte {
	dst = append(dst, leafMagic...)
	dst = binary.BigEndian.AppendUint64(dst, l.Position)
	dst = binary.BigEndian.AppendUint64(dst, l.StreamVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(l.RecordedAt))
	dst = appendBytes(dst, l.Envelope)
	dst = appendBytes(dst, l.Signature)
	dst = appendBytes(dst, l.Proof)
	return dst
}

// AppendSigProof appends the canonical encoding of p to dst.
func AppendSigProof(dst []byte, p *SigProof) []byte {
	dst = binary.BigEndian.AppendUint32(dst, p.Index)
	dst = binary.BigEndian.AppendUint32(dst, p.Count)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p.Path)))
	for _, h := range p.Path {
		dst = append(dst, h...)
	}
	return dst
}

// DecodeSigProof parses a canonical proof. Path entries alias b.
func DecodeSigProof(b []byte) (SigProof, error) {
	d := decoder{b: b}
	var p SigProof
	p.Index = d.u32("proof index")
	p.Count = d.u32("proof count")
	k := d.u32("proof length")
	if d.err == nil && (p.Count == 0 || p.Index >= p.Count) {
		d.fail(fmt.Sprintf("proof index %d of %d", p.Index, p.Count))
	}
	if d.err == nil && uint64(k)*HashSize != uint64(len(d.b)) {
		d.fail(fmt.Sprintf("proof claims %d hashes but has %d bytes", k, len(d.b)))
	}
	if d.err == nil {
		p.Path = make([][]byte, 0, k)
	}
	for i := uint32(0); d.err == nil && i < k; i++ {
		p.Path = append(p.Path, d.take(HashSize, "proof hash"))
	}
	d.end()
	if d.err != nil {
		return SigProof{}, d.err
	}
	return p, nil
}

// ChainHash computes hash_i from the previous hash and the leaf bytes.
func ChainHash(prev, leaf []byte) [HashSize]byte {
	h := sha256.New()
	var lenBuf [4]byte
	binary.BigEndian.PutUint32(lenBuf[:], uint32(len(leaf)))
	h.Write([]byte(ChainContext))
	h.Write(prev)
	h.Write(lenBuf[:])
	h.Write(leaf)
	var out [HashSize]byte
	h.Sum(out[:0])
	return out
}

// SignedMessage is what a producer's key signs for a batch of count envelopes with this root.
func SignedMessage(count uint32, root []byte) []byte {
	msg := make([]byte, 0, len(SignatureContext)+4+len(root))
	msg = append(msg, SignatureContext...)
	msg = binary.BigEndian.AppendUint32(msg, count)
	return append(msg, root...)
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(what + " runs past the end")
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u32(what string) uint32 {
	b := d.take(4, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (d *decoder) u64(what string) uint64 {
	b := d.take(8, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *decoder) bytes(what string) []byte {
	n := d.u32(what + " length")
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(d.b)) {
		d.fail(what + " length exceeds the input")
		return nil
	}
	return d.take(int(n), what)
}

func (d *decoder) magic(m string) {
	b := d.take(len(m), "magic")
	if d.err == nil && string(b) != m {
		d.fail(fmt.Sprintf("bad magic %q, want %q", b, m))
	}
}

func (d *decoder) end() {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
}

// DecodeEnvelope parses a canonical envelope. The returned slices alias b.
func DecodeEnvelope(b []byte) (Envelope, error) {
	d := decoder{b: b}
	var e Envelope
	d.magic(envelopeMagic)
	copy(e.EventID[:], d.take(16, "event id"))
	e.StreamID = string(d.bytes("stream id"))
	e.Type = string(d.bytes("type"))
	e.SchemaVersion = d.u32("schema version")
	e.KeyID = string(d.bytes("key id"))
	e.Payload = d.bytes("payload")
	e.Metadata = d.bytes("metadata")
	d.end()
	if d.err != nil {
		return Envelope{}, d.err
	}
	return e, nil
}

// DecodeLeaf parses a canonical leaf. The returned slices alias b.
func DecodeLeaf(b []byte) (Leaf, error) {
	d := decoder{b: b}
	var l Leaf
	d.magic(leafMagic)
	l.Position = d.u64("position")
	l.StreamVersion = d.u64("stream version")
	l.RecordedAt = int64(d.u64("recorded at"))
	l.Envelope = d.bytes("envelope")
	l.Signature = d.bytes("signature")
	l.Proof = d.bytes("proof")
	d.end()
	if d.err != nil {
		return Leaf{}, d.err
	}
	return l, nil
}
