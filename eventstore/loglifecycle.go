package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// InitResult describes the log after Init.
type InitResult struct {
	Created     bool // true when this call wrote the genesis record
	LogID       string
	Origin      string
	KeyID       string
	Fingerprint string
}

// Init writes the genesis record, carrying key's public half, if the log is empty. On a log that
// already has one it checks that key is the log key in force and changes nothing, so running it
// twice is harmless.
func Init(ctx context.Context, pool *pgxpool.Pool, key *SigningKey, now time.Time) (InitResult, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", classify(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	h, err := lockHead(ctx, tx)
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", classify(err))
	}
	if h.next > 0 {
		tx.Rollback(ctx)
		ring, genesis, err := loadKeyRing(ctx, pool, h.next)
		if err != nil {
			return InitResult{}, fmt.Errorf("init: %w", err)
		}
		res := InitResult{LogID: genesis.LogID, Origin: ring.Origin(), KeyID: ring.LogKeyID(), Fingerprint: Fingerprint(ring.LogKey().PublicKey())}
		if key.ID() != ring.LogKeyID() {
			if k := ring.Key(key.ID()); k != nil {
				return res, fmt.Errorf("init: %w: key %s was retired at position %d; the log key in force is %s",
					ErrKeyMismatch, key.ID(), k.Until()-1, ring.LogKeyID())
			}
			return res, fmt.Errorf("init: %w: this log was created with another key; its log key in force is %s (%s), the key offered is %s",
				ErrKeyMismatch, ring.LogKeyID(), res.Fingerprint, key.ID())
		}
		return res, nil
	}
	logID, err := uuid.NewV7()
	if err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	g := GenesisPayload{LogID: logID.String(), Origin: "tunnelplane/log/" + logID.String(), Algorithm: AlgorithmEd25519, KeyID: key.ID(), PublicKey: key.Public()}
	if _, err := appendLogRecord(ctx, tx, h, now, TypeGenesis, g, emptyObject, key, key, g.Origin); err != nil {
		return InitResult{}, fmt.Errorf("init: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return InitResult{}, fmt.Errorf("init: %w", classify(err))
	}
	return InitResult{Created: true, LogID: g.LogID, Origin: g.Origin, KeyID: key.ID(), Fingerprint: key.Fingerprint()}, nil
}

// appendLogRecord writes one "$log" record signed by recordKey, with the batch checkpoint signed
// by checkpointKey (the log key in force after the record), followed in the same batch by the
// extra stream appends (already validated, signed by recordKey here), whose expected versions are
// checked against the database under the head lock.
func appendLogRecord(ctx context.Context, tx pgx.Tx, h head, now time.Time, typ string, payload any, meta []byte, recordKey, checkpointKey *SigningKey, origin string, extra ...preparedAppend) (AppendResult, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return AppendResult{}, fmt.Errorf("%s payload: %w", typ, err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return AppendResult{}, err
	}
	var version int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, LogStream).Scan(&version); err != nil {
		return AppendResult{}, classify(err)
	}
	ev := []pendingEvent{{env: Envelope{EventID: id, StreamID: LogStream, Type: typ, SchemaVersion: 1, Payload: body, Metadata: meta}}}
	signAll(recordKey, ev)
	now = now.UTC().Truncate(time.Microsecond)
	b := newBatchBuilder(h, now)
	b.add(&ev[0], uint64(version)+1)
	for _, x := range extra {
		var cur int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1`, x.stream).Scan(&cur); err != nil {
			return AppendResult{}, classify(err)
		}
		if !x.expected.Matches(uint64(cur)) {
			return AppendResult{}, &WrongExpectedVersionError{StreamID: x.stream, Expected: x.expected, Actual: uint64(cur)}
		}
		signAll(recordKey, x.events)
		for i := range x.events {
			cur++
			b.add(&x.events[i], uint64(cur))
		}
	}
	if err := b.write(ctx, tx, checkpointKey, origin); err != nil {
		return AppendResult{}, err
	}
	return AppendResult{StreamVersion: uint64(version) + 1, FirstPosition: h.next, LastPosition: b.next - 1, RecordedAt: now}, nil
}

// preparedAppend is a validated StreamAppend waiting to be signed and written.
type preparedAppend struct {
	stream   string
	expected ExpectedVersion
	events   []pendingEvent
}

func (s *Store) prepareAppends(ctx context.Context, also []StreamAppend) ([]preparedAppend, error) {
	out := make([]preparedAppend, 0, len(also))
	for _, a := range also {
		if err := ValidateStreamID(a.StreamID); err != nil {
			return nil, err
		}
		pending, err := s.prepareEvents(ctx, a.StreamID, a.Events)
		if err != nil {
			return nil, fmt.Errorf("append to %s: %w", a.StreamID, err)
		}
		out = append(out, preparedAppend{stream: a.StreamID, expected: a.Expected, events: pending})
	}
	return out, nil
}

// logTx runs fn with the head locked and the key ring current, then commits and advances
// subscribers. It is the write path of the "$log" stream.
func (s *Store) logTx(ctx context.Context, fn func(tx pgx.Tx, h head, ring *KeyRing, key *SigningKey) (AppendResult, error)) (AppendResult, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return AppendResult{}, classify(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	h, err := lockHead(ctx, tx)
	if err != nil {
		return AppendResult{}, classify(err)
	}
	if h.origin == "" {
		return AppendResult{}, ErrNotInitialized
	}
	key, err := s.keyFor(ctx, h.keyID)
	if err != nil {
		return AppendResult{}, err
	}
	ring, _, err := loadKeyRingTx(ctx, tx, h.next)
	if err != nil {
		return AppendResult{}, err
	}
	res, err := fn(tx, h, ring, key)
	if err != nil {
		return AppendResult{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return AppendResult{}, classify(err)
	}
	s.notifier.advance(res.LastPosition + 1)
	return res, nil
}

// RotateLogKey replaces the log key by next. The rotation record is signed by the current key and
// cross-signed by both; records after it, and its own checkpoint, are signed by next. meta is the
// record's metadata (who rotated, the correlation and request ids: a JSON object; nil means {}),
// as for the key records below.
func (s *Store) RotateLogKey(ctx context.Context, meta []byte, next *SigningKey) (AppendResult, error) {
	if s.currentKey() == nil {
		return AppendResult{}, fmt.Errorf("rotate log key: %w", ErrReadOnly)
	}
	meta, err := s.logMetadata(ctx, TypeKeyRotated, meta)
	if err != nil {
		return AppendResult{}, fmt.Errorf("rotate log key: %w", err)
	}
	// Known before commit, so a concurrent batch that sees the new head key can sign with it.
	s.keyMu.Lock()
	s.keys[next.ID()] = next
	s.keyMu.Unlock()
	res, err := s.logTx(ctx, func(tx pgx.Tx, h head, ring *KeyRing, key *SigningKey) (AppendResult, error) {
		if ring.Key(next.ID()) != nil {
			return AppendResult{}, fmt.Errorf("%w: key %s is already in the log's history", ErrKeyMismatch, next.ID())
		}
		p := NewKeyRotation(h.origin, PurposeLog, "", key, next)
		return appendLogRecord(ctx, tx, h, s.cfg.Now(), TypeKeyRotated, p, meta, key, next, h.origin)
	})
	if err != nil {
		return AppendResult{}, fmt.Errorf("rotate log key: %w", err)
	}
	s.setKey(next)
	return res, nil
}

// AddKey registers a key of another purpose (a node's event key, a token key) in the log.
func (s *Store) AddKey(ctx context.Context, meta []byte, purpose KeyPurpose, owner string, key *SigningKey) (AppendResult, error) {
	if !purpose.Valid() || purpose == PurposeLog {
		return AppendResult{}, fmt.Errorf("add key: %w: purpose %q (log keys change only by rotation)", ErrInvalidEvent, purpose)
	}
	return s.addPublicKey(ctx, meta, TypeKeyAdded, func(origin string) any { return NewKeyAdded(origin, purpose, owner, key) })
}

// Origin is the log's origin (the checkpoint note name), fixed by the genesis record.
func (s *Store) Origin(ctx context.Context) (string, error) {
	var origin string
	if err := s.pool.QueryRow(ctx, `SELECT origin FROM log_head`).Scan(&origin); err != nil {
		return "", fmt.Errorf("origin: %w", classify(err))
	}
	if origin == "" {
		return "", ErrNotInitialized
	}
	return origin, nil
}

// AddPublicKey registers a key whose holder built the payload (a remote node proving possession
// of its event key with NewKeyAdded), atomically with the given appends (its enrollment).
func (s *Store) AddPublicKey(ctx context.Context, meta []byte, p KeyAddedPayload, also ...StreamAppend) (AppendResult, error) {
	if !p.Purpose.Valid() || p.Purpose == PurposeLog {
		return AppendResult{}, fmt.Errorf("add key: %w: purpose %q (log keys change only by rotation)", ErrInvalidEvent, p.Purpose)
	}
	return s.addPublicKey(ctx, meta, TypeKeyAdded, func(string) any { return p }, also...)
}

// RevokeKeyWith revokes a non-log key atomically with the given appends (a node's removal).
func (s *Store) RevokeKeyWith(ctx context.Context, meta []byte, keyID, reason string, also ...StreamAppend) (AppendResult, error) {
	return s.addPublicKey(ctx, meta, TypeKeyRevoked, func(string) any { return KeyRevokedPayload{KeyID: keyID, Reason: reason} }, also...)
}

// RotateKey replaces a non-log key by next, cross-signed by both.
func (s *Store) RotateKey(ctx context.Context, meta []byte, purpose KeyPurpose, owner string, old, next *SigningKey) (AppendResult, error) {
	if !purpose.Valid() || purpose == PurposeLog {
		return AppendResult{}, fmt.Errorf("rotate key: %w: purpose %q (use RotateLogKey)", ErrInvalidEvent, purpose)
	}
	return s.addPublicKey(ctx, meta, TypeKeyRotated, func(origin string) any { return NewKeyRotation(origin, purpose, owner, old, next) })
}

// RevokeKey ends a non-log key's validity.
func (s *Store) RevokeKey(ctx context.Context, meta []byte, keyID, reason string) (AppendResult, error) {
	return s.addPublicKey(ctx, meta, TypeKeyRevoked, func(string) any { return KeyRevokedPayload{KeyID: keyID, Reason: reason} })
}

func (s *Store) addPublicKey(ctx context.Context, meta []byte, typ string, build func(origin string) any, also ...StreamAppend) (AppendResult, error) {
	if s.currentKey() == nil {
		return AppendResult{}, fmt.Errorf("%s: %w", typ, ErrReadOnly)
	}
	meta, err := s.logMetadata(ctx, typ, meta)
	if err != nil {
		return AppendResult{}, fmt.Errorf("%s: %w", typ, err)
	}
	extra, err := s.prepareAppends(ctx, also)
	if err != nil {
		return AppendResult{}, fmt.Errorf("%s: %w", typ, err)
	}
	res, err := s.logTx(ctx, func(tx pgx.Tx, h head, ring *KeyRing, key *SigningKey) (AppendResult, error) {
		payload := build(h.origin)
		body, err := json.Marshal(payload)
		if err != nil {
			return AppendResult{}, err
		}
		// Refuse what a verifier would reject, before it is signed into the log.
		if _, err := ring.Apply(h.next, typ, body); err != nil {
			return AppendResult{}, fmt.Errorf("%w: %w", ErrInvalidEvent, err)
		}
		return appendLogRecord(ctx, tx, h, s.cfg.Now(), typ, payload, meta, key, key, h.origin, extra...)
	})
	if err != nil {
		return AppendResult{}, fmt.Errorf("%s: %w", typ, err)
	}
	return res, nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func loadKeyRing(ctx context.Context, pool *pgxpool.Pool, before uint64) (*KeyRing, GenesisPayload, error) {
	return loadKeyRingTx(ctx, pool, before)
}

// loadKeyRingTx folds the "$log" records below position before into a key ring. It trusts the
// stored records; Verify checks them.
func loadKeyRingTx(ctx context.Context, q querier, before uint64) (*KeyRing, GenesisPayload, error) {
	rows, err := q.Query(ctx, `SELECT global_position, type, payload FROM events
		WHERE stream_id = $1 AND global_position < $2 ORDER BY global_position`, LogStream, int64(before))
	if err != nil {
		return nil, GenesisPayload{}, fmt.Errorf("key history: %w", classify(err))
	}
	defer rows.Close()
	ring := NewKeyRing()
	var genesis GenesisPayload
	for rows.Next() {
		var pos int64
		var typ string
		var payload []byte
		if err := rows.Scan(&pos, &typ, &payload); err != nil {
			return nil, GenesisPayload{}, fmt.Errorf("key history: %w", classify(err))
		}
		next, err := ring.Apply(uint64(pos), typ, payload)
		if err != nil {
			return nil, GenesisPayload{}, fmt.Errorf("key history at position %d: %w", pos, err)
		}
		if typ == TypeGenesis {
			_ = json.Unmarshal(payload, &genesis)
		}
		ring = next
	}
	if err := rows.Err(); err != nil {
		return nil, GenesisPayload{}, fmt.Errorf("key history: %w", classify(err))
	}
	if ring.Origin() == "" {
		return nil, GenesisPayload{}, errors.Join(ErrNotInitialized, errors.New("no genesis record"))
	}
	return ring, genesis, nil
}

// Keys returns the log's key history as recorded in the log.
func (s *Store) Keys(ctx context.Context) ([]KeyInfo, error) {
	next, err := s.headPosition(ctx)
	if err != nil {
		return nil, err
	}
	ring, _, err := loadKeyRing(ctx, s.pool, next)
	if err != nil {
		return nil, err
	}
	return ring.Infos(), nil
}

// LogKeyID returns the id of the log key in force, or "" for a log without a genesis record.
func LogKeyID(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	var id string
	if err := pool.QueryRow(ctx, `SELECT key_id FROM log_head`).Scan(&id); err != nil {
		return "", fmt.Errorf("log key: %w", classify(err))
	}
	return id, nil
}
