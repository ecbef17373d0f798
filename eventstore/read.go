package eventstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

const selectRecord = `SELECT global_position, stream_id, stream_version, event_id, type, schema_version,
	recorded_at, payload, metadata, prev_hash, hash, key_id, signature, signature_proof FROM events`

// scanRecords reads the records of rows. The byte fields of a record share one allocation (each
// capped, so appending to one never writes into another): a reader of many records, such as a
// SIEM sink, pays one allocation per record for them instead of six.
func scanRecords(rows pgx.Rows, reg *Registry, sizeHint int) ([]Record, error) {
	return scanInto(rows, reg, sizeHint, nil)
}

// A Page holds the records of one read and the memory their byte fields are carved from. Reading
// into it again (ReadAllInto, ReadAllUnsignedInto) reuses both, so that a reader done with a
// page's records before its next read into it (a SIEM sink, once a page is formatted) allocates
// next to nothing per record: a page of thousands of fresh records costs more in zeroing and
// page faults than in scanning. The records of a page are valid until its next read.
type Page struct {
	Records []Record
	chunks  [][]byte
	chunk   int // the chunk being carved from
}

// pageChunk is the size of a Page's chunks: a few dozen records each.
const pageChunk = 64 << 10

// reset empties p for a new read, keeping its memory (each record is zeroed as it is read into).
func (p *Page) reset() {
	p.Records = p.Records[:0]
	for i := range p.chunks {
		p.chunks[i] = p.chunks[i][:0]
	}
	p.chunk = 0
}

// alloc returns n bytes of room (length 0) from p's chunks, adding a chunk when none has room.
func (p *Page) alloc(n int) []byte {
	for ; p.chunk < len(p.chunks); p.chunk++ {
		c := p.chunks[p.chunk]
		if cap(c)-len(c) >= n {
			return c[len(c):len(c):cap(c)]
		}
	}
	p.chunks = append(p.chunks, make([]byte, 0, max(pageChunk, n)))
	return p.chunks[p.chunk][:0]
}

// used records that b (from alloc) now holds what was carved into it.
func (p *Page) used(b []byte) {
	c := p.chunks[p.chunk]
	p.chunks[p.chunk] = c[:len(c)+len(b)]
}

// scanInto is scanRecords reading into page when it is not nil (the records are page.Records).
func scanInto(rows pgx.Rows, reg *Registry, sizeHint int, page *Page) ([]Record, error) {
	defer rows.Close()
	// Small at first (a reader at the head gets a few records), then at once the page asked
	// for: a SIEM sink's page of thousands of records grown by doubling copied each record
	// about twice.
	var out []Record
	if page != nil {
		page.reset()
		out = page.Records
		defer func() { page.Records = out }() // what was read, also when a record fails
	} else {
		out = make([]Record, 0, min(max(sizeHint, 0), 64))
	}
	var payload, metadata, prevHash, hash, sig, proof pgtype.DriverBytes
	// A page repeats a few types and key ids: one string each, not one per record.
	var typ, keyID pgtype.DriverBytes
	// Declared once with Scan's arguments: declared in the loop they would be allocations of
	// each record.
	var eventID pgtype.UUID
	var pos, ver int64
	var sv int32
	var streamID string
	var recordedAt time.Time
	dest := []any{&pos, &streamID, &ver, &eventID, &typ, &sv, &recordedAt,
		&payload, &metadata, &prevHash, &hash, &keyID, &sig, &proof}
	names := map[string]string{}
	// current[type] is its current schema version plus one (zero: not known yet): a record
	// stored at it needs no upcast, and the registry's lock is not taken for it.
	current := map[string]uint32{}
	intern := func(b []byte) string {
		if s, ok := names[string(b)]; ok {
			return s
		}
		s := string(b)
		if len(names) < 256 {
			names[s] = s
		}
		return s
	}
	for rows.Next() {
		if len(out) == cap(out) && cap(out) < sizeHint {
			out = append(make([]Record, 0, min(sizeHint, 8192)), out...)
		}
		out = append(out, Record{})
		r := &out[len(out)-1]
		if err := rows.Scan(dest...); err != nil {
			return nil, classify(err)
		}
		r.StreamID, r.EventID, r.RecordedAt = streamID, eventID.Bytes, recordedAt
		r.Type, r.KeyID = intern(typ), intern(keyID)
		n := len(payload) + len(metadata) + len(prevHash) + len(hash) + len(sig) + len(proof)
		var buf []byte
		if page != nil {
			buf = page.alloc(n)
		} else {
			buf = make([]byte, 0, n)
		}
		r.StoredPayload, buf = carve(buf, payload)
		r.Metadata, buf = carve(buf, metadata)
		r.PrevHash, buf = carve(buf, prevHash)
		r.Hash, buf = carve(buf, hash)
		r.Signature, buf = carve(buf, sig)
		r.SignatureProof, buf = carve(buf, proof)
		if page != nil {
			page.used(buf)
		}
		r.Position, r.StreamVersion, r.StoredSchemaVersion = uint64(pos), uint64(ver), uint32(sv)
		r.SchemaVersion, r.Payload = r.StoredSchemaVersion, r.StoredPayload
		if reg != nil && current[r.Type] != r.StoredSchemaVersion+1 {
			v, p, err := reg.Upcast(r.Type, r.StoredSchemaVersion, r.StoredPayload)
			if err != nil {
				return nil, fmt.Errorf("position %d: %w", r.Position, err)
			}
			r.SchemaVersion, r.Payload = v, p
			if v == r.StoredSchemaVersion && len(current) < 256 {
				current[r.Type] = v + 1
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err)
	}
	return out, nil
}

// carve appends b to buf and returns the appended part, capped (appending to it never writes
// into what follows), and buf.
func carve(buf, b []byte) ([]byte, []byte) {
	start := len(buf)
	buf = append(buf, b...)
	return buf[start:len(buf):len(buf)], buf
}

// ReadStream returns up to limit events of a stream starting at stream version from (1-based).
func (s *Store) ReadStream(ctx context.Context, streamID string, from uint64, limit int) ([]Record, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, selectRecord+` WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3`,
		streamID, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", streamID, classify(err))
	}
	recs, err := scanRecords(rows, s.registry, 0)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", streamID, err)
	}
	return recs, nil
}

// selectUnsigned is selectRecord without what only a verifier reads (the previous hash, the
// signature and its proof, often more bytes than the payload): empty in the records.
const selectUnsigned = `SELECT global_position, stream_id, stream_version, event_id, type, schema_version,
	recorded_at, payload, metadata, ''::bytea, hash, key_id, ''::bytea, ''::bytea FROM events`

// ReadAll returns up to limit records with global position >= from, in position order.
func (s *Store) ReadAll(ctx context.Context, from uint64, limit int) ([]Record, error) {
	return s.readAll(ctx, selectRecord, from, limit)
}

// ReadAllUnsigned is ReadAll for a reader that verifies nothing (a SIEM sink sending OCSF or
// CEF): the records come without PrevHash, Signature and SignatureProof.
func (s *Store) ReadAllUnsigned(ctx context.Context, from uint64, limit int) ([]Record, error) {
	return s.readAll(ctx, selectUnsigned, from, limit)
}

// ReadAllInto is ReadAll reading into page (its records are page.Records, valid until its next
// read), reusing its memory.
func (s *Store) ReadAllInto(ctx context.Context, page *Page, from uint64, limit int) error {
	_, err := s.readAllInto(ctx, selectRecord, from, limit, page)
	return err
}

// ReadAllUnsignedInto is ReadAllUnsigned reading into page, as ReadAllInto does.
func (s *Store) ReadAllUnsignedInto(ctx context.Context, page *Page, from uint64, limit int) error {
	_, err := s.readAllInto(ctx, selectUnsigned, from, limit, page)
	return err
}

func (s *Store) readAll(ctx context.Context, query string, from uint64, limit int) ([]Record, error) {
	return s.readAllInto(ctx, query, from, limit, nil)
}

func (s *Store) readAllInto(ctx context.Context, query string, from uint64, limit int, page *Page) ([]Record, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, query+` WHERE global_position >= $1 ORDER BY global_position LIMIT $2`, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("read all from %d: %w", from, classify(err))
	}
	recs, err := scanInto(rows, s.registry, limit, page)
	if err != nil {
		return nil, fmt.Errorf("read all from %d: %w", from, err)
	}
	return recs, nil
}

// ReadType returns up to limit records of one type with from <= position <= upTo, in position
// order: what a replay of one kind of history (usage, for forecasts) reads. The log keeps no
// index by type (appends pay for every index), so the database reads past the other records.
func (s *Store) ReadType(ctx context.Context, typ string, from, upTo uint64, limit int) ([]Record, error) {
	if limit <= 0 {
		limit = 1000
	}
	if upTo > math.MaxInt64 {
		upTo = math.MaxInt64
	}
	rows, err := s.pool.Query(ctx, selectRecord+` WHERE type = $1 AND global_position >= $2 AND global_position <= $3 ORDER BY global_position LIMIT $4`,
		typ, int64(from), int64(upTo), limit)
	if err != nil {
		return nil, fmt.Errorf("read %s from %d: %w", typ, from, classify(err))
	}
	recs, err := scanRecords(rows, s.registry, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s from %d: %w", typ, from, err)
	}
	return recs, nil
}

// PositionAt is the last position recorded at or before t; ok is false when the log holds
// nothing that old. Positions are assigned in commit order under the head lock, and a record's
// time is taken under that lock, so time grows with position.
func (s *Store) PositionAt(ctx context.Context, t time.Time) (pos uint64, ok bool, err error) {
	var p *int64
	if err := s.pool.QueryRow(ctx, `SELECT max(global_position) FROM events WHERE recorded_at <= $1`, t).Scan(&p); err != nil {
		return 0, false, fmt.Errorf("position at %s: %w", t.Format(time.RFC3339), classify(err))
	}
	if p == nil {
		return 0, false, nil
	}
	return uint64(*p), true, nil
}

// SubscribeOptions tunes a subscription.
type SubscribeOptions struct {
	// BatchSize is the most records handed to the handler at once. Default 500.
	BatchSize int
}

// Subscribe hands every record with position >= from to handle, in order, in batches: first what
// is already stored, then new records as they commit. It never skips or repeats a record; a gap
// (which only a damaged log can show) stops it with ErrGap. It returns when ctx ends (with
// ctx.Err()), when handle fails (with that error), or when the store stops (ErrClosed). To resume,
// subscribe again from the position after the last record handled.
func (s *Store) Subscribe(ctx context.Context, from uint64, opts SubscribeOptions, handle func(ctx context.Context, recs []Record) error) error {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	for {
		recs, err := s.ReadAll(ctx, from, opts.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrUnavailable) {
				// Wait and retry: a subscriber outlives database restarts.
				s.log.Warn("subscription read failed; retrying", "from", from, "error", err)
				if werr := s.sleep(ctx, s.cfg.PollInterval); werr != nil {
					return werr
				}
				continue
			}
			return err
		}
		for i := range recs {
			if recs[i].Position != from+uint64(i) {
				return fmt.Errorf("subscribe: %w: expected position %d, got %d", ErrGap, from+uint64(i), recs[i].Position)
			}
		}
		if len(recs) > 0 {
			if err := handle(ctx, recs); err != nil {
				return err
			}
			from = recs[len(recs)-1].Position + 1
			if len(recs) == opts.BatchSize {
				continue
			}
		}
		if err := s.notifier.wait(ctx, from, s.cfg.PollInterval, s.stop); err != nil {
			return err
		}
	}
}

func (s *Store) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return ErrClosed
	}
}

// WaitForPosition blocks until the log holds position pos (or ctx ends). It lets a reader wait
// for its own write to be visible.
func (s *Store) WaitForPosition(ctx context.Context, pos uint64) error {
	for {
		if s.notifier.known() > pos {
			return nil
		}
		next, err := s.headPosition(ctx)
		if err == nil && next > pos {
			s.notifier.advance(next)
			return nil
		}
		if err := s.notifier.wait(ctx, pos+1, s.cfg.PollInterval, s.stop); err != nil {
			return err
		}
	}
}

// notifier tracks the newest head position this process knows of and wakes waiters when it moves.
type notifier struct {
	mu      sync.Mutex
	head    uint64
	changed chan struct{}
}

func newNotifier() *notifier { return &notifier{changed: make(chan struct{})} }

func (n *notifier) known() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.head
}

// advance records that the log has at least next records (or, with next == 0, that waiters
// should look again because notifications may have been missed).
func (n *notifier) advance(next uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if next != 0 && next <= n.head {
		return
	}
	n.head = max(n.head, next)
	close(n.changed)
	n.changed = make(chan struct{})
}

// wait returns when the head may have passed from, after timeout at the latest.
func (n *notifier) wait(ctx context.Context, from uint64, timeout time.Duration, stop <-chan struct{}) error {
	n.mu.Lock()
	if n.head > from {
		n.mu.Unlock()
		return nil
	}
	ch := n.changed
	n.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return ErrClosed
	}
	return nil
}

// listenLoop holds one LISTEN connection for the whole process and feeds the notifier. It
// reconnects with backoff; after a reconnect it wakes every waiter, as notifications sent while
// it was away are lost.
func (s *Store) listenLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("event notifications interrupted; reconnecting", "error", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection is dedicated to LISTEN for its life; hijack it so the pool never reuses it.
	pc := conn.Hijack()
	defer pc.Close(context.WithoutCancel(ctx))
	if _, err := pc.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	var next int64
	if err := pc.QueryRow(ctx, `SELECT next_position FROM log_head`).Scan(&next); err != nil {
		return err
	}
	s.notifier.advance(uint64(next))
	s.notifier.advance(0)
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if v, err := strconv.ParseUint(n.Payload, 10, 64); err == nil {
			s.notifier.advance(v)
		}
	}
}

// KnownHead is the number of records this process knows the log has (from its own appends and
// notifications), without a database round trip.
func (s *Store) KnownHead() uint64 { return s.notifier.known() }

// Checkpoints returns the signed checkpoint notes of the sizes in (after, upTo], by size: one
// ends every append batch, so the relay can send each with the batch's last record.
func (s *Store) Checkpoints(ctx context.Context, after, upTo uint64) (map[uint64]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT size, note FROM checkpoints WHERE size > $1 AND size <= $2`, int64(after), int64(upTo))
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", classify(err))
	}
	defer rows.Close()
	out := map[uint64]string{}
	for rows.Next() {
		var size int64
		var note string
		if err := rows.Scan(&size, &note); err != nil {
			return nil, fmt.Errorf("checkpoints: %w", classify(err))
		}
		out[uint64(size)] = note
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", classify(err))
	}
	return out, nil
}

// BatchStart is where the append batch holding position pos began (or begins, for the head):
// the size of the last checkpoint at or before pos (0 when none).
func (s *Store) BatchStart(ctx context.Context, pos uint64) (uint64, error) {
	var size *int64
	if err := s.pool.QueryRow(ctx, `SELECT max(size) FROM checkpoints WHERE size <= $1`, int64(pos)).Scan(&size); err != nil {
		return 0, fmt.Errorf("batch start of %d: %w", pos, classify(err))
	}
	if size == nil {
		return 0, nil
	}
	return uint64(*size), nil
}

// GenesisHash is the hash of the log's first record: the trust anchor of copies of the log
// (ChainVerifier).
func (s *Store) GenesisHash(ctx context.Context) ([]byte, error) {
	var h []byte
	if err := s.pool.QueryRow(ctx, `SELECT hash FROM events WHERE global_position = 0`).Scan(&h); err != nil {
		return nil, fmt.Errorf("genesis hash: %w", classify(err))
	}
	return h, nil
}

// LatestCheckpoint returns the newest signed checkpoint (size and C2SP note), for publishing to
// witnesses.
func (s *Store) LatestCheckpoint(ctx context.Context) (uint64, string, error) {
	var size int64
	var note string
	err := s.pool.QueryRow(ctx, `SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1`).Scan(&size, &note)
	if err != nil {
		return 0, "", fmt.Errorf("latest checkpoint: %w", classify(err))
	}
	return uint64(size), note, nil
}
