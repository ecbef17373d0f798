package eventstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// ErrInconsistent: the log is not an extension of a checkpoint seen earlier. It was truncated,
// rolled back or rewritten since (re-signing with the real key does not hide that).
var ErrInconsistent = errors.New("the log is not consistent with an earlier checkpoint")

// Consistency proves that the log now extends a tree seen earlier.
type Consistency struct {
	Size     uint64   `json:"size"`      // the earlier tree's size
	HeadSize uint64   `json:"head_size"` // the log's size now
	HeadRoot []byte   `json:"head_root"`
	Proof    [][]byte `json:"proof"` // RFC 6962 consistency proof from Size to HeadSize
}

// CheckConsistency checks that the log in the database extends the Merkle tree of size records
// with this root (from a checkpoint kept outside the database): the log holds at least size
// records, its first size records hash to root, and the head row's frontier is the tree of every
// record. It recomputes the leaves from the records themselves, starting at the newest stored
// checkpoint at or below size (whose stored frontier is trusted only because the leaves after it
// must then hash to root), and builds the RFC 6962 consistency proof from size to the head.
// A log that fails is reported as ErrInconsistent, naming the size and what differs; other
// errors mean the check could not run.
func CheckConsistency(ctx context.Context, pool *pgxpool.Pool, size uint64, root []byte) (Consistency, error) {
	if size == 0 {
		return Consistency{}, fmt.Errorf("consistency: %w: a checkpoint of size 0", ErrCheckpoint)
	}
	var next int64
	var headFrontier []byte
	if err := pool.QueryRow(ctx, `SELECT next_position, frontier FROM log_head`).Scan(&next, &headFrontier); err != nil {
		return Consistency{}, fmt.Errorf("consistency: read head: %w", classify(err))
	}
	head := uint64(next)
	if head < size {
		return Consistency{}, fmt.Errorf("%w: the log holds %d records but a checkpoint seen earlier vouches for %d: "+
			"it was truncated or rolled back by %d records", ErrInconsistent, head, size, size-head)
	}
	nodes, err := proof.Consistency(size, head)
	if err != nil {
		return Consistency{}, fmt.Errorf("consistency: %w", err)
	}
	want := make(map[compact.NodeID]int, len(nodes.IDs))
	for i, id := range nodes.IDs {
		want[id] = i
	}
	hashes := make([][]byte, len(nodes.IDs))
	visit := func(id compact.NodeID, h []byte) {
		if i, ok := want[id]; ok {
			hashes[i] = h
		}
	}

	rng := RangeFactory.NewEmptyRange(0)
	cp, err := checkpointAtOrBefore(ctx, pool, size)
	if err != nil {
		return Consistency{}, fmt.Errorf("consistency: %w", err)
	}
	if cp != nil {
		if rng, err = rangeFromFrontier(cp.size, cp.frontier); err != nil {
			return Consistency{}, fmt.Errorf("consistency: checkpoint %d frontier: %w", cp.size, err)
		}
	}
	// The nodes of the proof left of size are the perfect subtrees of the tree of size records.
	atSize := func() error {
		got, err := rng.GetRootHash(nil)
		if err != nil {
			return fmt.Errorf("consistency: %w", err)
		}
		if !bytes.Equal(got, root) {
			return fmt.Errorf("%w: the log's first %d records hash to root %x but the checkpoint seen earlier signs %x: "+
				"they were rewritten (a rollback followed by new writes, or an edit)", ErrInconsistent, size, got, root)
		}
		for i, id := range compact.RangeNodes(0, size, nil) {
			visit(id, rng.Hashes()[i])
		}
		return nil
	}
	if rng.End() == size {
		if err := atSize(); err != nil {
			return Consistency{}, err
		}
	}
	err = leafHashes(ctx, pool, rng.End(), head, func(pos uint64, leafHash []byte) error {
		if err := rng.Append(leafHash, visit); err != nil {
			return fmt.Errorf("consistency: merkle append: %w", err)
		}
		if pos+1 == size {
			return atSize()
		}
		return nil
	})
	if err != nil {
		return Consistency{}, err
	}
	headRoot, err := rng.GetRootHash(nil)
	if err != nil {
		return Consistency{}, fmt.Errorf("consistency: %w", err)
	}
	stored, err := rangeFromFrontier(head, headFrontier)
	if err != nil {
		return Consistency{}, fmt.Errorf("consistency: head frontier: %w", err)
	}
	if storedRoot, _ := stored.GetRootHash(nil); !bytes.Equal(storedRoot, headRoot) {
		return Consistency{}, fmt.Errorf("%w: the log's %d records hash to root %x but its head row says %x", ErrInconsistent, head, headRoot, storedRoot)
	}
	p, err := nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
	if err != nil {
		return Consistency{}, fmt.Errorf("consistency: %w", err)
	}
	// The proof is built from the same leaves that were just compared; checking it as a client
	// would guards the construction itself.
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, size, head, p, root, headRoot); err != nil {
		return Consistency{}, fmt.Errorf("consistency: the proof from %d to %d does not verify: %w", size, head, err)
	}
	return Consistency{Size: size, HeadSize: head, HeadRoot: headRoot, Proof: p}, nil
}

// leafHashes calls f with the Merkle leaf hash of every record in [from, to), in order. A missing
// position is ErrInconsistent.
func leafHashes(ctx context.Context, pool *pgxpool.Pool, from, to uint64, f func(pos uint64, leafHash []byte) error) error {
	const page = 4096
	for pos := from; pos < to; {
		rows, err := pool.Query(ctx, `SELECT global_position, stream_id, stream_version, event_id, type, schema_version,
			recorded_at, payload, metadata, key_id, signature, signature_proof
			FROM events WHERE global_position >= $1 AND global_position < $2 ORDER BY global_position LIMIT $3`,
			int64(pos), int64(to), page)
		if err != nil {
			return fmt.Errorf("consistency: read records: %w", classify(err))
		}
		n := 0
		for rows.Next() {
			var r verifyRecord
			var p, v int64
			var sv int32
			if err := rows.Scan(&p, &r.streamID, &v, &r.eventID, &r.typ, &sv, &r.recordedAt, &r.payload, &r.metadata,
				&r.keyID, &r.sig, &r.proof); err != nil {
				rows.Close()
				return fmt.Errorf("consistency: read records: %w", classify(err))
			}
			if uint64(p) != pos {
				rows.Close()
				return fmt.Errorf("%w: position %d is missing (the next record found is %d)", ErrInconsistent, pos, p)
			}
			_, leaf := RecordLeaf(pos, uint64(v), r.recordedAt, &Envelope{EventID: r.eventID, StreamID: r.streamID,
				Type: r.typ, SchemaVersion: uint32(sv), KeyID: r.keyID, Payload: r.payload, Metadata: r.metadata}, r.sig, r.proof)
			if err := f(pos, rfc6962.DefaultHasher.HashLeaf(leaf)); err != nil {
				rows.Close()
				return err
			}
			pos++
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("consistency: read records: %w", classify(err))
		}
		if n == 0 {
			return fmt.Errorf("%w: position %d is missing: the head says the log has %d records", ErrInconsistent, pos, to)
		}
	}
	return nil
}

// ParseCheckpoint reads a checkpoint note's origin, size and root without checking its
// signature: for a note this process wrote itself (OpenCheckpoint checks one from elsewhere).
func ParseCheckpoint(text string) (SignedCheckpoint, error) {
	body, _, ok := strings.Cut(text, "\n\n")
	if !ok {
		return SignedCheckpoint{}, fmt.Errorf("%w: not a signed note", ErrCheckpoint)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(body + "\n")); err != nil {
		return SignedCheckpoint{}, fmt.Errorf("%w: body: %w", ErrCheckpoint, err)
	}
	return SignedCheckpoint{Origin: cp.Origin, Size: cp.Size, Root: cp.Hash, Note: text}, nil
}

// CheckCheckpoint checks a checkpoint note saved earlier (as GET /api/v1/log served it) against
// the log in the database: it must name this log's origin and be signed by one of the log keys
// in its key history (the note may predate a rotation), and the log must extend it
// (CheckConsistency). A log truncated, rolled back or rewritten since fails even when every
// record and checkpoint in the database was re-signed with the real key. A note that does not
// verify is ErrCheckpoint, a log that does not extend it ErrInconsistent.
func CheckCheckpoint(ctx context.Context, pool *pgxpool.Pool, note string) (SignedCheckpoint, Consistency, error) {
	parsed, err := ParseCheckpoint(note)
	if err != nil {
		return SignedCheckpoint{}, Consistency{}, err
	}
	ring, _, err := loadKeyRing(ctx, pool, math.MaxInt64)
	if err != nil {
		return parsed, Consistency{}, fmt.Errorf("check checkpoint: %w", err)
	}
	if parsed.Origin != ring.Origin() {
		return parsed, Consistency{}, fmt.Errorf("%w: the checkpoint of size %d is of log %s but the database holds log %s: the log was replaced",
			ErrInconsistent, parsed.Size, parsed.Origin, ring.Origin())
	}
	var signed SignedCheckpoint
	var tried []string
	for _, k := range ring.Infos() {
		if k.Purpose != PurposeLog {
			continue
		}
		tried = append(tried, k.KeyID)
		if signed, err = OpenCheckpointWith(note, ring.Origin(), ring.Key(k.KeyID).VerifyingKey); err == nil {
			break
		}
	}
	if err != nil || len(tried) == 0 {
		return parsed, Consistency{}, fmt.Errorf("%w: the checkpoint of size %d is not signed by a log key of this log (tried %s)",
			ErrCheckpoint, parsed.Size, strings.Join(tried, ", "))
	}
	c, err := CheckConsistency(ctx, pool, signed.Size, signed.Root)
	return signed, c, err
}

// CurrentCheckpoint returns the signed checkpoint at the log's head: the note to save elsewhere
// and check against later (CheckCheckpoint).
func CurrentCheckpoint(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var note string
	err := pool.QueryRow(ctx, `SELECT c.note FROM checkpoints c, log_head h WHERE c.size = h.next_position`).Scan(&note)
	if err != nil {
		return "", fmt.Errorf("current checkpoint: %w", classify(err))
	}
	return note, nil
}
