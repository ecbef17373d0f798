package eventstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// insertEvents writes a batch from column arrays in one statement; the jsonb query copies are made
// by the server from the hashed bytes, so the payload crosses the wire once.
const insertEvents = `INSERT INTO events (global_position, stream_id, stream_version, event_id, type, schema_version,

	recorded_at, payload, metadata, payload_json, metadata_json, prev_hash, hash, key_id, signature, signature_proof)
SELECT p, s, v, id, t, sv, $14, pl, md, convert_from(pl, 'UTF8')::jsonb, convert_from(md, 'UTF8')::jsonb, ph, h, k, sig, pr
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::int[], $7::bytea[], $8::bytea[],
	$9::bytea[], $10::bytea[], $11::text[], $12::bytea[], $13::bytea[]) AS x(p, s, v, id, t, sv, pl, md, ph, h, k, sig, pr)`

// batchBuilder turns accepted events into rows chained onto the head.
type batchBuilder struct {
	head     head
	next     uint64
	prevHash []byte
	now      time.Time
	leafHash [][]byte

	positions, versions []int64
	streams, types      []string
	ids                 []pgtype.UUID
	schemaVersions      []int32
	payloads, metas     [][]byte
	prevs, hashes, sigs [][]byte
	proofs              [][]byte
	keyIDs              []string
}

func newBatchBuilder(h head, now time.Time) *batchBuilder {
	return &batchBuilder{head: h, next: h.next, prevHash: h.hash, now: now}
}

func (b *batchBuilder) add(ev *pendingEvent, streamVersion uint64) {
	env := &ev.env
	leaf := AppendLeaf(make([]byte, 0, LeafSize(len(ev.envelope), len(ev.sig), len(ev.proof))), &Leaf{
		Position: b.next, StreamVersion: streamVersion, RecordedAt: b.now.UnixMicro(),
		Envelope: ev.envelope, Signature: ev.sig, Proof: ev.proof,
	})
	hash := ChainHash(b.prevHash, leaf)
	b.positions = append(b.positions, int64(b.next))
	b.streams = append(b.streams, env.StreamID)
	b.versions = append(b.versions, int64(streamVersion))
	b.ids = append(b.ids, pgtype.UUID{Bytes: env.EventID, Valid: true})
	b.types = append(b.types, env.Type)
	b.schemaVersions = append(b.schemaVersions, int32(env.SchemaVersion))
	b.payloads = append(b.payloads, env.Payload)
	b.metas = append(b.metas, env.Metadata)
	b.prevs = append(b.prevs, b.prevHash)
	b.hashes = append(b.hashes, hash[:])
	b.keyIDs = append(b.keyIDs, env.KeyID)
	b.sigs = append(b.sigs, ev.sig)
	b.proofs = append(b.proofs, ev.proof)
	b.leafHash = append(b.leafHash, rfc6962.DefaultHasher.HashLeaf(leaf))
	b.prevHash = hash[:]
	b.next++
}

// queue adds to batch the statements that insert the rows, the batch's checkpoint signed by key
// (the log key in force after the batch) and the new head, and notify listeners (delivered at
// commit).
func (b *batchBuilder) queue(batch *pgx.Batch, key *SigningKey, origin string) error {
	rng, err := rangeFromFrontier(b.head.next, b.head.frontier)
	if err != nil {
		return fmt.Errorf("eventstore: head frontier: %w", err)
	}
	for _, lh := range b.leafHash {
		if err := rng.Append(lh, nil); err != nil {
			return fmt.Errorf("eventstore: merkle append: %w", err)
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("eventstore: merkle root: %w", err)
	}
	frontier := encodeFrontier(rng.Hashes())
	note, err := SignCheckpoint(key, origin, b.next, root)
	if err != nil {
		return err
	}
	batch.Queue(insertEvents, b.positions, b.streams, b.versions, b.ids, b.types, b.schemaVersions,
		b.payloads, b.metas, b.prevs, b.hashes, b.keyIDs, b.sigs, b.proofs, b.now)
	batch.Queue(`INSERT INTO checkpoints (size, root, note, key_id, frontier, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		int64(b.next), root, note, key.ID(), frontier, b.now)
	batch.Queue(`UPDATE log_head SET next_position = $1, head_hash = $2, frontier = $3, key_id = $4, origin = $5`,
		int64(b.next), b.prevHash, frontier, key.ID(), origin)
	batch.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, formatPosition(b.next))
	return nil
}

// write runs the queued statements inside tx.
func (b *batchBuilder) write(ctx context.Context, tx pgx.Tx, key *SigningKey, origin string) error {
	batch := &pgx.Batch{}
	if err := b.queue(batch, key, origin); err != nil {
		return err
	}
	return classify(tx.SendBatch(ctx, batch).Close())
}

func rangeFromFrontier(size uint64, frontier []byte) (*compact.Range, error) {
	if len(frontier)%HashSize != 0 {
		return nil, fmt.Errorf("frontier has %d bytes, not a multiple of %d", len(frontier), HashSize)
	}
	hashes := make([][]byte, 0, len(frontier)/HashSize)
	for i := 0; i < len(frontier); i += HashSize {
		hashes = append(hashes, frontier[i:i+HashSize])
	}
	return RangeFactory.NewRange(0, size, hashes)
}

func encodeFrontier(hashes [][]byte) []byte {
	out := make([]byte, 0, len(hashes)*HashSize)
	for _, h := range hashes {
		out = append(out, h...)
	}
	return out
}
