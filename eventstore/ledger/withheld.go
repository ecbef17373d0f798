package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/rfc6962"
)

// A reader that acts on some record types only (a node) may be sent every other record
// withheld: its position, type, time, chain hashes and Merkle leaf hash, nothing of its content.
// It cannot check that record's signature, but the batch's checkpoint, signed by the log key,
// covers its leaf hash in the Merkle root, and the log key vouches for its type in an
// attestation over the batch's withheld records, so a record the reader needs cannot be passed
// off as one it may skip. Records of the "$log" stream (the key history) are never withheld.

// WithheldEntry is what an attestation covers of one withheld record.
type WithheldEntry struct {
	Position uint64
	LeafHash []byte
	Type     string
}

// withheldContext separates attestations from every other signature of the log key.
const withheldContext = "tunnelplane/withheld/v1"

// WithheldMessage is what the log key signs for the withheld records of one batch, in position
// order.
func WithheldMessage(origin string, entries []WithheldEntry) []byte {
	h := sha256.New()
	h.Write([]byte(withheldContext))
	h.Write([]byte{0})
	h.Write(appendString(nil, origin))
	var b [8]byte
	for _, e := range entries {
		binary.BigEndian.PutUint64(b[:], e.Position)
		h.Write(b[:])
		h.Write(e.LeafHash)
		h.Write(appendString(nil, e.Type))
	}
	return append([]byte(withheldContext+"\x00"), h.Sum(nil)...)
}

// LeafHashOf is the record's RFC 6962 Merkle leaf hash (what checkpoints' roots cover).
func LeafHashOf(rec *Record) []byte {
	_, leaf := RecordLeaf(rec.Position, rec.StreamVersion, rec.RecordedAt, envelopeOf(rec), rec.Signature, rec.SignatureProof)
	return rfc6962.DefaultHasher.HashLeaf(leaf)
}

// WithheldCopy is rec as sent withheld (its event id stays: a random id that names the record,
// which readers compare with what a stream holds at a position).
func WithheldCopy(rec *Record) Record {
	return Record{Position: rec.Position, EventID: rec.EventID, Type: rec.Type, RecordedAt: rec.RecordedAt, PrevHash: rec.PrevHash, Hash: rec.Hash,
		Withheld: true, LeafHash: LeafHashOf(rec)}
}

// AcceptWithheld lets the verifier take withheld records of the types skippable allows (nil, the
// default: none). Their content is never released: a released withheld record has Withheld set.
func (v *ChainVerifier) AcceptWithheld(skippable func(eventType string) bool) {
	v.skippable = skippable
}

// checkWithheld checks the withheld records of a verified path: each of a type the reader may
// skip and not a key-history type, and each covered by an attestation of the log key (the one in
// force after the path, or an earlier log key of the history) on a record after it in the path.
func (v *ChainVerifier) checkWithheld(path []*Record, ring *KeyRing) error {
	var entries []WithheldEntry
	for _, rec := range path {
		if rec.Withheld {
			if v.skippable == nil || !v.skippable(rec.Type) || isLogType(rec.Type) {
				return fmt.Errorf("position %d: a record of type %q may not be withheld", rec.Position, rec.Type)
			}
			entries = append(entries, WithheldEntry{Position: rec.Position, LeafHash: rec.LeafHash, Type: rec.Type})
		}
		if len(rec.WithheldAttestation) == 0 {
			continue
		}
		if len(entries) == 0 {
			return fmt.Errorf("position %d: an attestation of withheld records where none were", rec.Position)
		}
		if !v.attested(ring, WithheldMessage(v.origin, entries), rec.WithheldAttestation) {
			return fmt.Errorf("position %d: the attestation of %d withheld records does not verify with a log key", rec.Position, len(entries))
		}
		entries = entries[:0]
	}
	if len(entries) > 0 {
		return fmt.Errorf("position %d: %d withheld records without an attestation", entries[0].Position, len(entries))
	}
	return nil
}

func (v *ChainVerifier) attested(ring *KeyRing, msg, sig []byte) bool {
	if k := ring.keys[ring.logKey]; k != nil && k.Verify(msg, sig) {
		return true
	}
	for _, k := range ring.keys {
		if k.purpose == PurposeLog && k.Verify(msg, sig) {
			return true
		}
	}
	return false
}

func isLogType(t string) bool {
	return slices.ContainsFunc(logEventTypes(), func(et EventType) bool { return et.Name == t })
}
