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
	signer      *RingKey
	keyFail     FailureKind
	keyDetail   string
	keyEventErr error
	checkpoint  *verifyCheckpoint
	cpKey       *VerifyingKey
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
	opts = opts.withDefaults()
	var headNext int64
	var headHash []byte
	if err := pool.QueryRow(ctx, `SELECT next_position, head_hash FROM log_head`).Scan(&headNext, &headHash); err != nil {
		return VerifyReport{}, fmt.Errorf("verify: read head: %w", classify(err))
	}
	rep := VerifyReport{From: opts.From}
	to, toHead, err := verifyBounds(headNext, opts.From, opts.To)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	rep.To = to
	st, f, err := startFrom(ctx, pool, opts.From)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	if f != nil {
		rep.Failure = f
		return finish(rep, started), nil
	}
	rep.From = st.pos

	seq, f, err := verifyRecords(ctx, pool, opts, st, to, started)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	rep.Failure = f
	rep.Count = seq.expected - st.pos
	rep.Checkpoints = seq.checkpoints
	rep.HeadHash = hex.EncodeToString(seq.lastHash)
	if seq.ring != nil {
		rep.Origin = seq.ring.Origin()
		rep.Keys = seq.ring.Infos()
	}
	if rep.Failure == nil {
		rep.Failure = checkEnd(seq.expected, to, toHead, headNext)
	}
	if rep.Failure == nil && toHead {
		tail, err := readTail(ctx, pool, seq.expected)
		if err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
		rep.Failure = checkTail(seq.expected, seq.lastHash, headHash, tail)
	}
	if rep.Failure == nil && toHead {
		if rep.Failure, err = checkPastHead(ctx, pool); err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
	}
	return finish(rep, started), nil
}

// checkPastHead reports a record at or beyond the head's next position: a row written around the
// appender, which would take the position of the next append (every append then fails). Head and
// rows are read in one statement, so a log growing meanwhile is not mistaken for one.
func checkPastHead(ctx context.Context, pool *pgxpool.Pool) (*Failure, error) {
	var pos, next int64
	err := pool.QueryRow(ctx, `SELECT e.global_position, h.next_position FROM events e, log_head h
		WHERE e.global_position >= h.next_position ORDER BY e.global_position LIMIT 1`).Scan(&pos, &next)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look past the head: %w", classify(err))
	}
	return &Failure{Position: uint64(pos), Kind: FailPastHead,
		Detail: fmt.Sprintf("a record lies at position %d but the head says the log has %d records: it was written around the appender, "+
			"and every append fails until it is removed", pos, next)}, nil
}

func (o VerifyOptions) withDefaults() VerifyOptions {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.PageSize <= 0 {
		o.PageSize = 4096
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	return o
}

// verifyBounds returns the last position to verify, and whether that is the head's last record,
// for a log whose head says it holds headNext records.
func verifyBounds(headNext int64, from uint64, to *uint64) (last uint64, toHead bool, err error) {
	if headNext == 0 {
		return 0, false, ErrNotInitialized
	}
	last, toHead = uint64(headNext)-1, true
	if to != nil && *to < last {
		last, toHead = *to, false
	}
	if from > last {
		return 0, false, fmt.Errorf("--from %d is past the last position %d", from, last)
	}
	return last, toHead, nil
}

// verifyStart is where verification begins: position 0, or a checkpoint whose signed root
// authenticates every record before it.
type verifyStart struct {
	pos  uint64
	ring *KeyRing       // the key history before pos
	rng  *compact.Range // the Merkle tree's frontier over the leaves before pos
}

// startFrom finds the start for verifying from position from: the newest checkpoint at or before
// it, checked by checkStart, or the empty log.
func startFrom(ctx context.Context, pool *pgxpool.Pool, from uint64) (verifyStart, *Failure, error) {
	empty := verifyStart{ring: NewKeyRing(), rng: RangeFactory.NewEmptyRange(0)}
	if from == 0 {
		return empty, nil, nil
	}
	cp, err := checkpointAtOrBefore(ctx, pool, from)
	if err != nil || cp == nil {
		return empty, nil, err
	}
	ring, _, err := loadKeyRing(ctx, pool, cp.size)
	if err != nil {
		return empty, nil, err
	}
	rng, f, err := checkStart(cp, ring)
	if err != nil || f != nil {
		return empty, f, err
	}
	return verifyStart{pos: cp.size, ring: ring, rng: rng}, nil, nil
}

// checkStart checks a checkpoint verification starts from: signed by the log key in force at its
// size (ring is the key history before it), and its stored frontier hashes to the signed root.
// It returns that frontier. An error means the frontier cannot even be decoded.
func checkStart(cp *verifyCheckpoint, ring *KeyRing) (*compact.Range, *Failure, error) {
	rng, err := rangeFromFrontier(cp.size, cp.frontier)
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %d frontier: %w", cp.size, err)
	}
	root, _ := rng.GetRootHash(nil)
	signed, err := OpenCheckpointWith(cp.note, ring.Origin(), ring.LogKey().VerifyingKey)
	switch {
	case err != nil:
		return nil, &Failure{Position: cp.size - 1, Kind: FailCheckpointSignature, Detail: err.Error()}, nil
	case !bytes.Equal(signed.Root, root) || signed.Size != cp.size:
		return nil, &Failure{Position: cp.size - 1, Kind: FailCheckpointMismatch,
			Detail: fmt.Sprintf("the stored frontier of checkpoint %d does not hash to its signed root", cp.size)}, nil
	}
	return rng, nil, nil
}

// verifyRecords reads the records from st.pos to to (one reader), hashes them and checks their
// signatures (opts.Workers workers), and checks them in position order (sequencer.check). It
// returns the sequencer as it stopped, with the key history the reader reached, and the first
// failure.
func verifyRecords(ctx context.Context, pool *pgxpool.Pool, opts VerifyOptions, st verifyStart, to uint64, started time.Time) (*sequencer, *Failure, error) {
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *verifyChunk, opts.Workers*2)
	order := make(chan *verifyChunk, opts.Workers*4)
	type readResult struct {
		ring *KeyRing
		err  error
	}
	readDone := make(chan readResult, 1)
	go func() {
		defer close(work)
		defer close(order)
		r, err := readForVerify(pctx, pool, st.pos, to, opts.PageSize, st.ring, work, order)
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

	seq := &sequencer{expected: st.pos, rng: st.rng, versions: map[string]uint64{}, strictVersions: st.pos == 0}
	var failure *Failure
	lastProgress := time.Now()
	for c := range order {
		select {
		case <-c.done:
		case <-pctx.Done():
			return nil, nil, ctx.Err()
		}
		if failure = seq.check(c.recs); failure != nil {
			break
		}
		if opts.Progress != nil && time.Since(lastProgress) >= opts.ProgressEvery {
			lastProgress = time.Now()
			opts.Progress(VerifyProgress{Verified: seq.expected - st.pos, Total: to - st.pos + 1, Elapsed: time.Since(started)})
		}
	}
	cancel()
	for range order { //nolint:revive // drain so the reader can exit
	}
	rr := <-readDone
	if rr.err != nil && failure == nil && !errors.Is(rr.err, context.Canceled) {
		return nil, nil, rr.err
	}
	seq.ring = rr.ring
	return seq, failure, nil
}

// checkEnd reports records missing at the end: the records verified stop at next, before the
// last position to verify.
func checkEnd(next, to uint64, toHead bool, headNext int64) *Failure {
	if next > to {
		return nil
	}
	if toHead {
		return &Failure{Position: next, Kind: FailTruncated,
			Detail: fmt.Sprintf("records from position %d are missing: the head says the log has %d records", next, headNext)}
	}
	return &Failure{Position: next, Kind: FailGap,
		Detail: fmt.Sprintf("the log ends at position %d but verification was asked to reach %d", next, to)}
}

func finish(rep VerifyReport, started time.Time) VerifyReport {
	rep.Duration = time.Since(started)
	rep.Seconds = rep.Duration.Seconds()
	if rep.Seconds > 0 {
		rep.PerSecond = math.Round(float64(rep.Count) / rep.Seconds)
	}
	return rep
}

// logTail is what the log holds past the verified records: the size of its newest checkpoint
// (0 without one) and, when that is larger than the verified count, how many of the records
// between them exist.
type logTail struct {
	checkpointSize int64 // as stored
	present        uint64
}

// readTail reads the log's tail past the first count records.
func readTail(ctx context.Context, pool *pgxpool.Pool, count uint64) (logTail, error) {
	var t logTail
	var maxSize *int64
	if err := pool.QueryRow(ctx, `SELECT max(size) FROM checkpoints`).Scan(&maxSize); err != nil {
		return t, classify(err)
	}
	if maxSize == nil {
		return t, nil
	}
	t.checkpointSize = *maxSize
	if uint64(*maxSize) > count {
		var present int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE global_position >= $1 AND global_position < $2`,
			int64(count), *maxSize).Scan(&present); err != nil {
			return t, classify(err)
		}
		t.present = uint64(present)
	}
	return t, nil
}

// checkTail compares the end of the count verified records with the head row and the newest
// checkpoint.
func checkTail(count uint64, lastHash, headHash []byte, tail logTail) *Failure {
	// A checkpoint beyond what was verified is fine if the records it covers exist: the log grew
	// while verify ran. Missing ones mean the tail was cut.
	if size := uint64(tail.checkpointSize); size > count && tail.present != size-count {
		return &Failure{Position: count, Kind: FailTruncated,
			Detail: fmt.Sprintf("a signed checkpoint vouches for %d records but the log has %d", tail.checkpointSize, count+tail.present)}
	}
	if !bytes.Equal(lastHash, headHash) {
		return &Failure{Position: count - 1, Kind: FailHeadMismatch,
			Detail: fmt.Sprintf("the head hash %x is not the hash of the last record %x", headHash, lastHash)}
	}
	return nil
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
func readForVerify(ctx context.Context, pool *pgxpool.Pool, start, to uint64, pageSize int, ring *KeyRing, work, order chan<- *verifyChunk) (*KeyRing, error) {
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
			r.origin = ring.Origin()
			r.signer, r.keyFail, r.keyDetail = ring.SignerAt(r.keyID, r.pos)
			if r.streamID == LogStream {
				if next, err := ring.Apply(r.pos, r.typ, r.payload); err != nil {
					r.keyEventErr = err
				} else {
					ring = next
				}
				if r.pos == 0 && r.keyEventErr == nil {
					// The genesis record is signed by the key it introduces.
					r.origin = ring.Origin()
					r.signer, r.keyFail, r.keyDetail = ring.SignerAt(r.keyID, r.pos)
				}
			}
			if cp, ok := cps[r.pos+1]; ok {
				r.checkpoint = cp
				if lk := ring.LogKey(); lk != nil {
					r.cpKey = lk.VerifyingKey
				}
				r.origin = ring.Origin()
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
		envelope, leaf := RecordLeaf(r.pos, r.streamVersion, r.recordedAt, &Envelope{EventID: r.eventID, StreamID: r.streamID,
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
					bv.AddExpandedWithOptions(r.signer.Expanded(), msg, r.sig, Ed25519VerifyOptions)
				}
				slot[i] = j
			}
		}
		if r.checkpoint != nil {
			if r.cpKey == nil {
				r.cpErr = fmt.Errorf("no log key is in force")
			} else if signed, err := OpenCheckpointWith(r.checkpoint.note, r.origin, r.cpKey); err != nil {
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

// sequencer checks, in position order, everything that depends on the previous record.
type sequencer struct {
	expected       uint64
	lastHash       []byte
	rng            *compact.Range
	versions       map[string]uint64
	strictVersions bool
	checkpoints    int
	ring           *KeyRing
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
