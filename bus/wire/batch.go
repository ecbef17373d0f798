package wire

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"

	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// Node-facts batch: the body of one message on "nodefacts.<node-id>", written by Publisher and
// read by Ingester. Binary, big-endian, every variable field length-prefixed (like the event
// store's canonical encoding, whose envelopes and proofs it carries unchanged):
//
//	batch = "TPB1"                                  magic and format version
//	        u32 n                                   number of events, 1 ≤ n ≤ 10 000
//	        u32 len ‖ signature                     the batch signature, len = 64 (Ed25519)
//	        n × ( u32 len ‖ envelope                canonical envelope (ledger "TPE1")
//	              u32 len ‖ proof )                 its inclusion proof in the signed batch
//
// The signature covers the RFC 6962 root of the n envelopes (ledger.SignEnvelopes); each
// event's proof places it under that root, so the ingester hands the triples to
// eventstore.Store.AppendPresigned unchanged and the log keeps the node's own signature. The
// message header Nats-Msg-Id is the first event's id. Nothing may follow the last proof.
const batchMagic = "TPB1"

// Bounds the decoder enforces before allocating anything.
const (
	maxBatchEvents   = ledger.MaxEventsPerCall
	maxEnvelopeBytes = ledger.MaxPayloadBytes + ledger.MaxMetadataBytes + 64<<10
	maxProofBytes    = 12 + 64*ledger.HashSize
)

// EncodeBatch builds a batch message from envelopes signed together: the shared signature and
// one proof per envelope, as ledger.SignEnvelopes returns them.
func EncodeBatch(signature []byte, envelopes, proofs [][]byte) []byte {
	size := 4 + 4 + 4 + len(signature)
	for i := range envelopes {
		size += 8 + len(envelopes[i]) + len(proofs[i])
	}
	b := make([]byte, 0, size)
	b = append(b, batchMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(envelopes)))
	b = appendField(b, signature)
	for i := range envelopes {
		b = appendField(b, envelopes[i])
		b = appendField(b, proofs[i])
	}
	return b
}

func appendField(dst, f []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f)))
	return append(dst, f...)
}

// DecodeBatch parses a batch message. The returned events alias data. It checks the framing
// only; signatures, envelopes and proofs are checked by the event store.
func DecodeBatch(data []byte) ([]ledger.PresignedEvent, error) {
	r := reader{b: data}
	if magic := r.take(4); string(magic) != batchMagic {
		return nil, fmt.Errorf("decode batch: %w: not a TPB1 batch", ErrMalformed)
	}
	n, ok := r.u32()
	if !ok {
		return nil, fmt.Errorf("decode batch: %w: truncated count", ErrMalformed)
	}
	// Each event needs at least its two length prefixes: reject counts the bytes cannot hold
	// before allocating for them.
	if n == 0 || n > maxBatchEvents || uint64(n)*8 > uint64(r.left()) {
		return nil, fmt.Errorf("decode batch: %w: %d events", ErrMalformed, n)
	}
	sig, err := r.field("signature", ed25519.SignatureSize)
	if err != nil {
		return nil, err
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("decode batch: %w: signature has %d bytes, want %d", ErrMalformed, len(sig), ed25519.SignatureSize)
	}
	out := make([]ledger.PresignedEvent, n)
	for i := range out {
		env, err := r.field("envelope", maxEnvelopeBytes)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		if len(env) == 0 {
			return nil, fmt.Errorf("decode batch: event %d: %w: empty envelope", i, ErrMalformed)
		}
		proof, err := r.field("proof", maxProofBytes)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		out[i] = ledger.PresignedEvent{Envelope: env, Signature: sig, Proof: proof}
	}
	if r.left() != 0 {
		return nil, fmt.Errorf("decode batch: %w: %d bytes after the last event", ErrMalformed, r.left())
	}
	return out, nil
}

// reader walks a byte slice without ever reading past its end.
type reader struct {
	b   []byte
	off int
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) take(n int) []byte {
	if n < 0 || n > r.left() {
		r.off = len(r.b)
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

func (r *reader) u32() (uint32, bool) {
	s := r.take(4)
	if s == nil {
		return 0, false
	}
	return binary.BigEndian.Uint32(s), true
}

func (r *reader) field(name string, limit int) ([]byte, error) {
	n, ok := r.u32()
	if !ok {
		return nil, fmt.Errorf("decode batch: %w: truncated %s length", ErrMalformed, name)
	}
	if uint64(n) > uint64(limit) {
		return nil, fmt.Errorf("decode batch: %w: %s of %d bytes exceeds %d", ErrMalformed, name, n, limit)
	}
	if int(n) > r.left() {
		return nil, fmt.Errorf("decode batch: %w: truncated %s (%d of %d bytes)", ErrMalformed, name, r.left(), n)
	}
	return r.take(int(n)), nil
}

// MaxNodeFactBytes bounds a node's fact (payload and metadata): facts are small, and each is
// relayed to every node inside one NATS message with its envelope (about twice its size), which
// must stay well under NATS's max_payload (1 MiB by default) or the relay could not go on.
const MaxNodeFactBytes = 64 << 10
