package ledger

import (
	"fmt"
	"time"
)

// FailureKind names what is wrong at a position.
type FailureKind string

// Every way verification can fail.
const (
	FailGap                 FailureKind = "gap"                      // a position is missing
	FailChainBreak          FailureKind = "chain_break"              // prev_hash is not the previous record's hash
	FailHashMismatch        FailureKind = "hash_mismatch"            // the stored hash is not the hash of the record
	FailBadSignature        FailureKind = "bad_signature"            // the signature does not verify
	FailUnknownKey          FailureKind = "unknown_key"              // the signing key is not in the key history
	FailKeyNotInForce       FailureKind = "key_not_in_force"         // the key exists but was not valid at this position
	FailKeyEvent            FailureKind = "invalid_key_event"        // a "$log" key record is invalid
	FailStreamVersion       FailureKind = "stream_version"           // a stream's versions are not 1, 2, 3 …
	FailCheckpointMismatch  FailureKind = "checkpoint_mismatch"      // a signed root differs from the records
	FailCheckpointSignature FailureKind = "checkpoint_bad_signature" // a checkpoint is not signed by the log key in force
	FailTruncated           FailureKind = "truncated"                // records the head or a checkpoint vouches for are gone
	FailHeadMismatch        FailureKind = "head_mismatch"            // the head row disagrees with the records
	FailPastHead            FailureKind = "past_head"                // a record lies at or beyond the head's next position
)

// Failure is the first problem verification found.
type Failure struct {
	Position uint64      `json:"position"`
	Kind     FailureKind `json:"kind"`
	Detail   string      `json:"detail"`
}

func (f *Failure) Error() string {
	return fmt.Sprintf("position %d: %s: %s", f.Position, f.Kind, f.Detail)
}

// RecordLeaf is a record's envelope and its leaf: what the hash chain and the Merkle tree hash.
func RecordLeaf(pos, streamVersion uint64, recordedAt time.Time, env *Envelope, sig, proof []byte) (envelope, leaf []byte) {
	envelope = AppendEnvelope(make([]byte, 0, EnvelopeSize(env)), env)
	leaf = AppendLeaf(make([]byte, 0, LeafSize(len(envelope), len(sig), len(proof))), &Leaf{
		Position: pos, StreamVersion: streamVersion, RecordedAt: recordedAt.UnixMicro(),
		Envelope: envelope, Signature: sig, Proof: proof,
	})
	return envelope, leaf
}
