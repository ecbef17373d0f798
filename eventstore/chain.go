package eventstore

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrUnverified: a record does not continue the log as its keys signed it (see ChainVerifier).
var ErrUnverified = errors.New("record does not verify")

// ChainVerifier checks records one at a time, in position order, as Verify checks the stored log:
// each record is the next position, extends the hash chain (its prev_hash is the hash of the
// record before it, and its hash is recomputed from its bytes), and is signed, in the batch its
// producer signed, by a key of the log's key history that is in force at its position; "$log"
// records move that history on. Whoever holds only copies of the log (a node reading the relayed
// log from NATS) takes exactly the records the log's keys signed, in the log's order, and nothing
// anyone else wrote there.
//
// The trust anchor is the genesis record: it must name the expected origin. A ChainVerifier is
// not safe for concurrent use.
type ChainVerifier struct {
	origin         string // expected origin
	producerStream func(owner string) string
	next           uint64
	lastHash []byte
	ring     *keyRing
	// The last batch signature that verified: the records of one batch share it, and checking
	// it again is most of the cost of a record.
	lastKey          string
	lastSig, lastMsg []byte
}

// NewChainVerifier expects the log's genesis record (position 0) of the log named origin.
// producerStream names the one stream a producer key (a node's) may sign, by the key's owner;
// every other stream takes only the log key. (The store's ingester enforces it when it writes;
// a reader must not take a producer's record anywhere else.)
func NewChainVerifier(origin string, producerStream func(owner string) string) *ChainVerifier {
	return &ChainVerifier{origin: origin, producerStream: producerStream, ring: &keyRing{keys: map[string]*ringKey{}}}
}

// Next is the position Check expects.
func (v *ChainVerifier) Next() uint64 { return v.next }

// Check verifies rec as the next record of the log and, when it does, takes it in. rec must carry
// what was hashed and signed: StoredSchemaVersion, StoredPayload, Signature, SignatureProof,
// PrevHash and Hash. An error wraps ErrUnverified and leaves the verifier as it was.
func (v *ChainVerifier) Check(rec *Record) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: position %d: %s", ErrUnverified, rec.Position, fmt.Sprintf(format, args...))
	}
	if rec.Position != v.next {
		return fail("the log continues at position %d", v.next)
	}
	prev := v.lastHash
	if prev == nil {
		prev = make([]byte, HashSize)
	}
	if !bytes.Equal(rec.PrevHash, prev) {
		return fail("prev_hash %x is not the hash of the record before (%x)", rec.PrevHash, prev)
	}
	envelope, leaf := recordLeaf(rec.Position, rec.StreamVersion, rec.RecordedAt, &Envelope{EventID: rec.EventID, StreamID: rec.StreamID,
		Type: rec.Type, SchemaVersion: rec.StoredSchemaVersion, KeyID: rec.KeyID, Payload: rec.StoredPayload, Metadata: rec.Metadata},
		rec.Signature, rec.SignatureProof)
	if computed := ChainHash(prev, leaf); !bytes.Equal(computed[:], rec.Hash) {
		return fail("its bytes hash to %x, not to the hash it carries", computed)
	}
	// A record is signed under the key history as it stood before it, except the genesis, which
	// is signed by the key it introduces; a "$log" record moves the history on after it.
	ring, after := v.ring, v.ring
	if rec.StreamID == LogStream {
		next, err := ring.apply(rec.Position, rec.Type, rec.StoredPayload)
		if err != nil {
			return fail("%v", err)
		}
		if rec.Position == 0 {
			if next.origin != v.origin {
				return fail("the genesis names the log %q, not %q", next.origin, v.origin)
			}
			ring = next
		}
		after = next
	}
	signer, _, detail := ring.signerAt(rec.KeyID, rec.Position)
	if signer == nil {
		return fail("%s", detail)
	}
	if signer.purpose != PurposeLog && (v.producerStream == nil || rec.StreamID != v.producerStream(signer.owner)) {
		return fail("key %s is a %s key of %q: it may not sign a record of stream %q", rec.KeyID, signer.purpose, signer.owner, rec.StreamID)
	}
	root, count, err := BatchRoot(envelope, rec.SignatureProof)
	if err != nil {
		return fail("the signature proof is malformed: %v", err)
	}
	msg := SignedMessage(count, root)
	if rec.KeyID != v.lastKey || !bytes.Equal(rec.Signature, v.lastSig) || !bytes.Equal(msg, v.lastMsg) {
		if !signer.verify(msg, rec.Signature) {
			return fail("the signature does not verify with key %s", rec.KeyID)
		}
		v.lastKey, v.lastSig, v.lastMsg = rec.KeyID, slices.Clone(rec.Signature), msg
	}
	v.lastHash = slices.Clone(rec.Hash)
	v.ring = after
	v.next++
	return nil
}

// A ChainVerifier's state, for a node's snapshot: the position it expects, the hash before it and
// the key history.
type chainState struct {
	Origin   string          `json:"origin"`
	Next     uint64          `json:"next"`
	LastHash []byte          `json:"last_hash,omitempty"`
	LogKey   string          `json:"log_key,omitempty"`
	Keys     []chainStateKey `json:"keys"`
}

type chainStateKey struct {
	PublicKey []byte     `json:"public_key"`
	Purpose   KeyPurpose `json:"purpose"`
	Owner     string     `json:"owner,omitempty"`
	From      uint64     `json:"from"`
	Until     *uint64    `json:"until,omitempty"` // absent while in force
}

// MarshalJSON saves the verifier's state.
func (v *ChainVerifier) MarshalJSON() ([]byte, error) {
	s := chainState{Origin: v.origin, Next: v.next, LastHash: v.lastHash, LogKey: v.ring.logKey, Keys: []chainStateKey{}}
	for _, k := range v.ring.keys {
		sk := chainStateKey{PublicKey: k.pub, Purpose: k.purpose, Owner: k.owner, From: k.from}
		if k.until != math.MaxUint64 {
			u := k.until
			sk.Until = &u
		}
		s.Keys = append(s.Keys, sk)
	}
	slices.SortFunc(s.Keys, func(a, b chainStateKey) int { return bytes.Compare(a.PublicKey, b.PublicKey) })
	return json.Marshal(s)
}

// UnmarshalJSON restores a state MarshalJSON saved (into a verifier made by NewChainVerifier,
// whose producerStream it keeps).
func (v *ChainVerifier) UnmarshalJSON(b []byte) error {
	var s chainState
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	ring := &keyRing{logKey: s.LogKey, keys: map[string]*ringKey{}}
	if s.Next > 0 {
		ring.origin = s.Origin
	}
	for _, k := range s.Keys {
		vk, err := newVerifyingKey(ed25519.PublicKey(k.PublicKey))
		if err != nil {
			return fmt.Errorf("chain state: %w", err)
		}
		rk := &ringKey{verifyingKey: vk, purpose: k.Purpose, owner: k.Owner, from: k.From, until: math.MaxUint64}
		if k.Until != nil {
			rk.until = *k.Until
		}
		ring.keys[vk.id] = rk
	}
	if s.Next > 0 && (len(s.LastHash) != HashSize || ring.keys[s.LogKey] == nil) {
		return errors.New("chain state: no hash or no log key after the genesis")
	}
	*v = ChainVerifier{origin: s.Origin, producerStream: v.producerStream, next: s.Next, lastHash: s.LastHash, ring: ring}
	return nil
}

// Origin is the origin of the log the verifier expects.
func (v *ChainVerifier) Origin() string { return v.origin }

// LogKey is the log key in force at Next (nil before the genesis).
func (v *ChainVerifier) LogKey() ed25519.PublicKey {
	if k := v.ring.keys[v.ring.logKey]; k != nil {
		return k.pub
	}
	return nil
}
