package eventstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
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

// VerifyOptions selects what to verify.
type VerifyOptions struct {
	// From is the first position to verify. Verification starts at the newest checkpoint at or
	// before From, whose signed root authenticates everything before it.
	From uint64
	// To is the last position to verify (inclusive); nil means the head.
	To *uint64
	// Workers check signatures and hashes in parallel. Default GOMAXPROCS.
	Workers int
	// PageSize is the number of rows read per query. Default 4096.
	PageSize int
	// Progress, when set, is called about every ProgressEvery (default 1s).
	Progress      func(VerifyProgress)
	ProgressEvery time.Duration
}

// VerifyProgress reports a running verification.
type VerifyProgress struct {
	Verified uint64
	Total    uint64
	Elapsed  time.Duration
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	From        uint64        `json:"from"`
	To          uint64        `json:"to"`
	Count       uint64        `json:"count"`
	Checkpoints int           `json:"checkpoints"`
	HeadHash    string        `json:"head_hash,omitempty"`
	Origin      string        `json:"origin,omitempty"`
	Keys        []KeyInfo     `json:"keys,omitempty"`
	Duration    time.Duration `json:"-"`
	Seconds     float64       `json:"seconds"`
	PerSecond   float64       `json:"events_per_second"`
	Failure     *Failure      `json:"failure,omitempty"`
}

// OK reports whether everything verified.
func (r *VerifyReport) OK() bool { return r.Failure == nil }

type verifyCheckpoint struct {
	size     uint64
	root     []byte
	note     string
	keyID    string
	frontier []byte
}

type verifyRecord struct {
	pos, streamVersion uint64
	streamID, typ      string
	schemaVersion      uint32
	eventID            uuid.UUID
	recordedAt         time.Time
	payload, metadata  []byte
	prevHash, hash     []byte
	keyID              string
	sig, proof         []byte

	// Set by the reader, which walks the key history in order.
	signer      *ringKey
	keyFail     FailureKind
	keyDetail   string
	keyEventErr error
	checkpoint  *verifyCheckpoint
	cpKey       *verifyingKey
	origin      string

	// Set by a worker.
	computed [HashSize]byte
	leafHash []byte
	sigOK    bool
	sigErr   string // why the signature could not even be checked (a bad proof)
	cpRoot   []byte
	cpErr    error
}

type verifyChunk struct {
	recs []verifyRecord
	done chan struct{}
}

// Verify recomputes every hash, checks that positions are contiguous, checks every signature
// against the key in force at its position and every checkpoint's signed Merkle root. It returns
// an error only when it cannot run; a damaged log yields a report with Failure set.
func Verify(ctx context.Context, pool *pgxpool.Pool, opts VerifyOptions) (VerifyReport, error) {
	started := time.Now()
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 4096
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = time.Second
	}
	var headNext int64
	var headHash []byte
	if err := pool.QueryRow(ctx, `SELECT next_position, head_hash FROM log_head`).Scan(&headNext, &headHash); err != nil {
		return VerifyReport{}, fmt.Errorf("verify: read head: %w", classify(err))
	}
	rep := VerifyReport{From: opts.From}
	if headNext == 0 {
		return rep, fmt.Errorf("verify: %w", ErrNotInitialized)
	}
	to := uint64(headNext) - 1
	toHead := true
	if opts.To != nil {
		if *opts.To < to {
			to, toHead = *opts.To, false
		}
	}
	if opts.From > to {
		return rep, fmt.Errorf("verify: --from %d is past the last position %d", opts.From, to)
	}
	rep.To = to

	// Start state: the empty log, or the newest checkpoint at or before From.
	start := uint64(0)
	ring := &keyRing{keys: map[string]*ringKey{}}
	rng := rangeFactory.NewEmptyRange(0)
	if opts.From > 0 {
		cp, err := checkpointAtOrBefore(ctx, pool, opts.From)
		if err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
		if cp != nil {
			ring, _, err = loadKeyRing(ctx, pool, cp.size)
			if err != nil {
				return rep, fmt.Errorf("verify: %w", err)
			}
			rng, err = rangeFromFrontier(cp.size, cp.frontier)
			if err != nil {
				return rep, fmt.Errorf("verify: checkpoint %d frontier: %w", cp.size, err)
			}
			root, _ := rng.GetRootHash(nil)
			signed, err := openCheckpoint(cp.note, ring.origin, ring.keys[ring.logKey].verifyingKey)
			switch {
			case err != nil:
				rep.Failure = &Failure{Position: cp.size - 1, Kind: FailCheckpointSignature, Detail: err.Error()}
			case !bytes.Equal(signed.Root, root) || signed.Size != cp.size:
				rep.Failure = &Failure{Position: cp.size - 1, Kind: FailCheckpointMismatch,
					Detail: fmt.Sprintf("the stored frontier of checkpoint %d does not hash to its signed root", cp.size)}
			}
			if rep.Failure != nil {
				return finish(rep, started), nil
			}
			start = cp.size
		}
	}
	rep.From = start

	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *verifyChunk, opts.Workers*2)
	order := make(chan *verifyChunk, opts.Workers*4)
	type readResult struct {
		ring *keyRing
		err  error
	}
	readDone := make(chan readResult, 1)
	go func() {
		defer close(work)
		defer close(order)
		r, err := readForVerify(pctx, pool, start, to, opts.PageSize, ring, work, order)
		readDone <- readResult{r, err}
	}()
	for range opts.Workers {
		go func() {
			for c := range work {
				verifyChunkWork(c)
				close(c.done)
			}
		}()
	}

	seq := sequencer{expected: start, rng: rng, versions: map[string]uint64{}, strictVersions: start == 0}
	lastProgress := time.Now()
	for c := range order {
		select {
		case <-c.done:
		case <-pctx.Done():
			return rep, fmt.Errorf("verify: %w", ctx.Err())
		}
		if f := seq.check(c.recs); f != nil {
			rep.Failure = f
			break
		}
		if opts.Progress != nil && time.Since(lastProgress) >= opts.ProgressEvery {
			lastProgress = time.Now()
			opts.Progress(VerifyProgress{Verified: seq.expected - start, Total: to - start + 1, Elapsed: time.Since(started)})
		}
	}
	cancel()
	for range order { //nolint:revive // drain so the reader can exit
	}
	rr := <-readDone
	if rr.err != nil && rep.Failure == nil && !errors.Is(rr.err, context.Canceled) {
		return rep, fmt.Errorf("verify: %w", rr.err)
	}
	seq.ring = rr.ring
	rep.Count = seq.expected - start
	rep.Checkpoints = seq.checkpoints
	rep.HeadHash = hex.EncodeToString(seq.lastHash)
	if seq.ring != nil {
		rep.Origin = seq.ring.origin
		rep.Keys = seq.ring.infos()
	}
	if rep.Failure == nil && seq.expected <= to {
		kind, detail := FailGap, fmt.Sprintf("the log ends at position %d but verification was asked to reach %d", seq.expected, to)
		if toHead {
			kind, detail = FailTruncated, fmt.Sprintf("records from position %d are missing: the head says the log has %d records", seq.expected, headNext)
		}
		rep.Failure = &Failure{Position: seq.expected, Kind: kind, Detail: detail}
	}
	if rep.Failure == nil && toHead {
		f, err := checkTail(ctx, pool, seq.expected, seq.lastHash, headHash)
		if err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
		rep.Failure = f
	}
	return finish(rep, started), nil
}

func finish(rep VerifyReport, started time.Time) VerifyReport {
	rep.Duration = time.Since(started)
	rep.Seconds = rep.Duration.Seconds()
	if rep.Seconds > 0 {
		rep.PerSecond = math.Round(float64(rep.Count) / rep.Seconds)
	}
	return rep
}

// checkTail compares the end of the verified records with the head row and the newest checkpoint.
func checkTail(ctx context.Context, pool *pgxpool.Pool, count uint64, lastHash, headHash []byte) (*Failure, error) {
	var maxSize *int64
	if err := pool.QueryRow(ctx, `SELECT max(size) FROM checkpoints`).Scan(&maxSize); err != nil {
		return nil, classify(err)
	}
	if maxSize != nil && uint64(*maxSize) > count {
		// A checkpoint beyond what was verified is fine if the records it covers exist: the log
		// grew while verify ran. Missing ones mean the tail was cut.
		var present int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE global_position >= $1 AND global_position < $2`,
			int64(count), *maxSize).Scan(&present); err != nil {
			return nil, classify(err)
		}
		if uint64(present) != uint64(*maxSize)-count {
			return &Failure{Position: count, Kind: FailTruncated,
				Detail: fmt.Sprintf("a signed checkpoint vouches for %d records but the log has %d", *maxSize, count+uint64(present))}, nil
		}
	}
	if !bytes.Equal(lastHash, headHash) {
		return &Failure{Position: count - 1, Kind: FailHeadMismatch,
			Detail: fmt.Sprintf("the head hash %x is not the hash of the last record %x", headHash, lastHash)}, nil
	}
	return nil, nil
}

func checkpointAtOrBefore(ctx context.Context, pool *pgxpool.Pool, pos uint64) (*verifyCheckpoint, error) {
	var cp verifyCheckpoint
	var size int64
	err := pool.QueryRow(ctx, `SELECT size, root, note, key_id, frontier FROM checkpoints WHERE size <= $1 ORDER BY size DESC LIMIT 1`,
		int64(pos)).Scan(&size, &cp.root, &cp.note, &cp.keyID, &cp.frontier)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(err)
	}
	cp.size = uint64(size)
	return &cp, nil
}

// readForVerify streams records in position order, resolving each record's key against the key
// history as it stood just before it, and attaching the checkpoint that ends at it.
func readForVerify(ctx context.Context, pool *pgxpool.Pool, start, to uint64, pageSize int, ring *keyRing, work, order chan<- *verifyChunk) (*keyRing, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return ring, classify(err)
	}
	defer conn.Release()
	pos := start
	for pos <= to {
		rows, err := conn.Query(ctx, `SELECT global_position, stream_id, stream_version, event_id, type, schema_version,
			recorded_at, payload, metadata, prev_hash, hash, key_id, signature, signature_proof
			FROM events WHERE global_position >= $1 AND global_position <= $2 ORDER BY global_position LIMIT $3`,
			int64(pos), int64(to), pageSize)
		if err != nil {
			return ring, classify(err)
		}
		c := &verifyChunk{recs: make([]verifyRecord, 0, pageSize), done: make(chan struct{})}
		for rows.Next() {
			var r verifyRecord
			var p, v int64
			var sv int32
			if err := rows.Scan(&p, &r.streamID, &v, &r.eventID, &r.typ, &sv, &r.recordedAt,
				&r.payload, &r.metadata, &r.prevHash, &r.hash, &r.keyID, &r.sig, &r.proof); err != nil {
				rows.Close()
				return ring, classify(err)
			}
			r.pos, r.streamVersion, r.schemaVersion = uint64(p), uint64(v), uint32(sv)
			c.recs = append(c.recs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return ring, classify(err)
		}
		if len(c.recs) == 0 {
			return ring, nil
		}
		last := c.recs[len(c.recs)-1].pos
		cps, err := readCheckpoints(ctx, conn, pos, last+1)
		if err != nil {
			return ring, err
		}
		for i := range c.recs {
			r := &c.recs[i]
			r.origin = ring.origin
			r.signer, r.keyFail, r.keyDetail = ring.signerAt(r.keyID, r.pos)
			if r.streamID == LogStream {
				if next, err := ring.apply(r.pos, r.typ, r.payload); err != nil {
					r.keyEventErr = err
				} else {
					ring = next
				}
				if r.pos == 0 && r.keyEventErr == nil {
					// The genesis record is signed by the key it introduces.
					r.origin = ring.origin
					r.signer, r.keyFail, r.keyDetail = ring.signerAt(r.keyID, r.pos)
				}
			}
			if cp, ok := cps[r.pos+1]; ok {
				r.checkpoint = cp
				if lk, ok := ring.keys[ring.logKey]; ok {
					r.cpKey = lk.verifyingKey
				}
				r.origin = ring.origin
			}
		}
		select {
		case order <- c:
		case <-ctx.Done():
			return ring, ctx.Err()
		}
		select {
		case work <- c:
		case <-ctx.Done():
			return ring, ctx.Err()
		}
		pos = last + 1
		if len(c.recs) < pageSize {
			return ring, nil
		}
	}
	return ring, nil
}

func readCheckpoints(ctx context.Context, conn *pgxpool.Conn, fromPos, toSize uint64) (map[uint64]*verifyCheckpoint, error) {
	rows, err := conn.Query(ctx, `SELECT size, root, note, key_id FROM checkpoints WHERE size > $1 AND size <= $2`, int64(fromPos), int64(toSize))
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	out := map[uint64]*verifyCheckpoint{}
	for rows.Next() {
		var cp verifyCheckpoint
		var size int64
		if err := rows.Scan(&size, &cp.root, &cp.note, &cp.keyID); err != nil {
			return nil, classify(err)
		}
		cp.size = uint64(size)
		out[cp.size] = &cp
	}
	return out, classify(rows.Err())
}

// verifyChunkWork does the order-independent work: leaf and chain hashes (against the stored
// prev_hash, compared in order later), signatures and checkpoint notes. Records signed together
// share one signature, which is checked once (batched across the chunk).
func verifyChunkWork(c *verifyChunk) {
	bv := voi.NewBatchVerifierWithCapacity(len(c.recs))
	slot := make([]int, len(c.recs)) // index into the batch verifier, or -1
	seen := map[string]int{}
	n := 0
	for i := range c.recs {
		r := &c.recs[i]
		slot[i] = -1
		envelope, leaf := recordLeaf(r.pos, r.streamVersion, r.recordedAt, &Envelope{EventID: r.eventID, StreamID: r.streamID,
			Type: r.typ, SchemaVersion: r.schemaVersion, KeyID: r.keyID, Payload: r.payload, Metadata: r.metadata}, r.sig, r.proof)
		r.computed = ChainHash(r.prevHash, leaf)
		r.leafHash = rfc6962.DefaultHasher.HashLeaf(leaf)
		if r.signer != nil {
			root, count, err := BatchRoot(envelope, r.proof)
			if err != nil {
				r.sigErr = "the signature proof is malformed: " + err.Error()
			} else {
				msg := SignedMessage(count, root)
				k := r.keyID + "\x00" + string(r.sig) + string(msg)
				j, ok := seen[k]
				if !ok {
					j = n
					n++
					seen[k] = j
					bv.AddExpandedWithOptions(r.signer.expanded, msg, r.sig, verifyOptions)
				}
				slot[i] = j
			}
		}
		if r.checkpoint != nil {
			if r.cpKey == nil {
				r.cpErr = fmt.Errorf("no log key is in force")
			} else if signed, err := openCheckpoint(r.checkpoint.note, r.origin, r.cpKey); err != nil {
				r.cpErr = err
			} else if signed.Size != r.checkpoint.size {
				r.cpErr = fmt.Errorf("the note says size %d but is stored as checkpoint %d", signed.Size, r.checkpoint.size)
			} else {
				r.cpRoot = signed.Root
			}
		}
	}
	if n == 0 {
		return
	}
	_, valid := bv.Verify(nil)
	for i := range c.recs {
		if slot[i] >= 0 {
			c.recs[i].sigOK = valid[slot[i]]
		}
	}
}

// recordLeaf is a record's envelope and its leaf: what the hash chain and the Merkle tree hash.
func recordLeaf(pos, streamVersion uint64, recordedAt time.Time, env *Envelope, sig, proof []byte) (envelope, leaf []byte) {
	envelope = AppendEnvelope(make([]byte, 0, EnvelopeSize(env)), env)
	leaf = AppendLeaf(make([]byte, 0, LeafSize(len(envelope), len(sig), len(proof))), &Leaf{
		Position: pos, StreamVersion: streamVersion, RecordedAt: recordedAt.UnixMicro(),
		Envelope: envelope, Signature: sig, Proof: proof,
	})
	return envelope, leaf
}

// sequencer checks, in position order, everything that depends on the previous record.
type sequencer struct {
	expected       uint64
	lastHash       []byte
	rng            *compact.Range
	versions       map[string]uint64
	strictVersions bool
	checkpoints    int
	ring           *keyRing
}

func (s *sequencer) check(recs []verifyRecord) *Failure {
	for i := range recs {
		r := &recs[i]
		if r.pos != s.expected {
			return &Failure{Position: s.expected, Kind: FailGap,
				Detail: fmt.Sprintf("position %d is missing (the next record found is %d)", s.expected, r.pos)}
		}
		if s.lastHash != nil && !bytes.Equal(r.prevHash, s.lastHash) {
			return &Failure{Position: r.pos, Kind: FailChainBreak,
				Detail: fmt.Sprintf("prev_hash %x is not the hash of position %d (%x)", r.prevHash, r.pos-1, s.lastHash)}
		}
		if s.lastHash == nil && r.pos == 0 && !bytes.Equal(r.prevHash, make([]byte, HashSize)) {
			return &Failure{Position: 0, Kind: FailChainBreak, Detail: "the first record's prev_hash is not 32 zero bytes"}
		}
		if !bytes.Equal(r.computed[:], r.hash) {
			return &Failure{Position: r.pos, Kind: FailHashMismatch,
				Detail: fmt.Sprintf("stored hash %x, recomputed %x (the record was changed after it was written)", r.hash, r.computed)}
		}
		if r.keyEventErr != nil {
			return &Failure{Position: r.pos, Kind: FailKeyEvent, Detail: r.keyEventErr.Error()}
		}
		if r.signer == nil {
			return &Failure{Position: r.pos, Kind: r.keyFail, Detail: r.keyDetail}
		}
		if r.sigErr != "" {
			return &Failure{Position: r.pos, Kind: FailBadSignature, Detail: r.sigErr}
		}
		if !r.sigOK {
			return &Failure{Position: r.pos, Kind: FailBadSignature,
				Detail: fmt.Sprintf("the signature does not verify with key %s", r.keyID)}
		}
		if prev, seen := s.versions[r.streamID]; (seen || s.strictVersions) && r.streamVersion != prev+1 {
			return &Failure{Position: r.pos, Kind: FailStreamVersion,
				Detail: fmt.Sprintf("stream %q jumps from version %d to %d", r.streamID, prev, r.streamVersion)}
		}
		s.versions[r.streamID] = r.streamVersion
		if err := s.rng.Append(r.leafHash, nil); err != nil {
			return &Failure{Position: r.pos, Kind: FailCheckpointMismatch, Detail: err.Error()}
		}
		if r.checkpoint != nil {
			if r.cpErr != nil {
				return &Failure{Position: r.pos, Kind: FailCheckpointSignature,
					Detail: fmt.Sprintf("checkpoint %d: %v", r.checkpoint.size, r.cpErr)}
			}
			root, _ := s.rng.GetRootHash(nil)
			if !bytes.Equal(root, r.cpRoot) || !bytes.Equal(root, r.checkpoint.root) {
				return &Failure{Position: r.pos, Kind: FailCheckpointMismatch,
					Detail: fmt.Sprintf("checkpoint %d signs root %x but the records hash to %x", r.checkpoint.size, r.cpRoot, root)}
			}
			s.checkpoints++
		}
		s.lastHash = r.hash
		s.expected++
	}
	return nil
}
