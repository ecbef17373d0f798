package eventstore

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AppendPresigned appends events signed by their producer. Each envelope names its stream and is
// appended at whatever version the stream has (producer facts are not subject to optimistic
// concurrency). Every signature must verify with a key that may sign records and is in force at
// the position the record gets; otherwise nothing is written and the error wraps
// ErrBadSignature. Events whose id is already in the log make the whole append fail with
// ErrDuplicateEventID, which an ingester treats as "already stored" (a batch is atomic, so a
// redelivered batch is either wholly stored or not at all).
func (s *Store) AppendPresigned(ctx context.Context, events []PresignedEvent) (AppendResult, error) {
	if !s.started.Load() {
		return AppendResult{}, fmt.Errorf("append presigned: %w (the store was not started)", ErrClosed)
	}
	if len(events) == 0 || len(events) > MaxEventsPerCall {
		return AppendResult{}, fmt.Errorf("append presigned: %w: %d events", ErrInvalidEvent, len(events))
	}
	pending := make([]pendingEvent, len(events))
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i, ev := range events {
		env, err := DecodeEnvelope(ev.Envelope)
		if err != nil {
			return AppendResult{}, fmt.Errorf("append presigned: event %d: %w: %w", i, ErrInvalidEvent, err)
		}
		if err := s.validatePresigned(&env); err != nil {
			return AppendResult{}, fmt.Errorf("append presigned: event %d: %w", i, err)
		}
		if _, dup := seen[env.EventID]; dup {
			return AppendResult{}, fmt.Errorf("append presigned: %w: %s twice", ErrDuplicateEventID, env.EventID)
		}
		seen[env.EventID] = struct{}{}
		pending[i] = pendingEvent{env: env, envelope: ev.Envelope, sig: ev.Signature, proof: ev.Proof}
	}
	// Check the signatures now, outside the appender; whether each key is in force at the
	// record's position is checked again under the head lock.
	ring, err := s.ringAt(ctx, s.pool, 0, 0)
	if err != nil {
		return AppendResult{}, fmt.Errorf("append presigned: %w", err)
	}
	if err := verifyPresigned(ring, pending); err != nil {
		if ring, err = s.reloadRing(ctx); err != nil {
			return AppendResult{}, fmt.Errorf("append presigned: %w", err)
		}
		if err := verifyPresigned(ring, pending); err != nil {
			return AppendResult{}, fmt.Errorf("append presigned: %w", err)
		}
	}
	req := &appendRequest{ctx: ctx, events: pending, presigned: true, done: make(chan appendOutcome, 1)}
	res, err := s.submit(ctx, req, "presigned events")
	if err != nil {
		return AppendResult{}, err
	}
	return res[0], nil
}

func (s *Store) validatePresigned(env *Envelope) error {
	if err := ValidateStreamID(env.StreamID); err != nil {
		return err
	}
	if env.EventID == uuid.Nil {
		return fmt.Errorf("%w: zero event id", ErrInvalidEvent)
	}
	t, ok := s.registry.Lookup(env.Type)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownEventType, env.Type)
	}
	if env.SchemaVersion == 0 || env.SchemaVersion > t.SchemaVersion {
		return fmt.Errorf("%w: %s schema version %d (this build knows up to %d)", ErrInvalidEvent, env.Type, env.SchemaVersion, t.SchemaVersion)
	}
	if len(env.Payload) > MaxPayloadBytes || len(env.Metadata) > MaxMetadataBytes {
		return fmt.Errorf("%w: payload %d bytes, metadata %d bytes", ErrTooLarge, len(env.Payload), len(env.Metadata))
	}
	if err := validJSON(env.Payload); err != nil {
		return fmt.Errorf("%w: payload %w", ErrInvalidEvent, err)
	}
	if err := validJSON(env.Metadata); err != nil {
		return fmt.Errorf("%w: metadata %w", ErrInvalidEvent, err)
	}
	return nil
}

// verifyPresigned checks every signature against the ring's keys (not yet their validity window).
func verifyPresigned(ring *KeyRing, events []pendingEvent) error {
	for i := range events {
		e := &events[i]
		k := ring.Key(e.env.KeyID)
		if k == nil || !k.Purpose().SignsRecords() {
			return fmt.Errorf("%w: event %d: key %q is not a registered producer key", ErrBadSignature, i, e.env.KeyID)
		}
		root, count, err := BatchRoot(e.envelope, e.proof)
		if err != nil {
			return fmt.Errorf("%w: event %d: %w", ErrBadSignature, i, err)
		}
		if !k.Verify(SignedMessage(count, root), e.sig) {
			return fmt.Errorf("%w: event %d: signature does not verify with key %s", ErrBadSignature, i, e.env.KeyID)
		}
	}
	return nil
}

// checkPresignedKeys checks, under the head lock, that every key is in force at the position its
// record will get.
func checkPresignedKeys(ring *KeyRing, events []pendingEvent, firstPos uint64) error {
	for i := range events {
		if _, kind, detail := ring.SignerAt(events[i].env.KeyID, firstPos+uint64(i)); kind != "" {
			return fmt.Errorf("%w: event %d: %s", ErrBadSignature, i, detail)
		}
	}
	return verifyPresigned(ring, events)
}

// cachedRing is the key history as of a "$log" stream version.
type cachedRing struct {
	ring       *KeyRing
	logVersion uint64
}

// ringAt returns the key ring; when logVersion is non-zero and differs from the cached one (a key
// changed since), it reloads through q (inside the appender's transaction).
func (s *Store) ringAt(ctx context.Context, q querier, next, logVersion uint64) (*KeyRing, error) {
	s.ringMu.Lock()
	c := s.ring
	s.ringMu.Unlock()
	if c != nil && (logVersion == 0 || c.logVersion == logVersion) {
		return c.ring, nil
	}
	if next == 0 {
		return s.reloadRing(ctx)
	}
	ring, version, err := loadRingWithVersion(ctx, q, next)
	if err != nil {
		return nil, err
	}
	s.ringMu.Lock()
	s.ring = &cachedRing{ring: ring, logVersion: version}
	s.ringMu.Unlock()
	return ring, nil
}

func (s *Store) reloadRing(ctx context.Context) (*KeyRing, error) {
	next, err := s.headPosition(ctx)
	if err != nil {
		return nil, err
	}
	ring, version, err := loadRingWithVersion(ctx, s.pool, next)
	if err != nil {
		return nil, err
	}
	s.ringMu.Lock()
	s.ring = &cachedRing{ring: ring, logVersion: version}
	s.ringMu.Unlock()
	return ring, nil
}

func loadRingWithVersion(ctx context.Context, q querier, next uint64) (*KeyRing, uint64, error) {
	ring, _, err := loadKeyRingTx(ctx, q, next)
	if err != nil {
		return nil, 0, err
	}
	var n uint64
	// The number of "$log" records below next is the stream's version.
	rows, err := q.Query(ctx, `SELECT count(*) FROM events WHERE stream_id = $1 AND global_position < $2`, LogStream, int64(next))
	if err != nil {
		return nil, 0, classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var c int64
		if err := rows.Scan(&c); err != nil {
			return nil, 0, classify(err)
		}
		n = uint64(c)
	}
	return ring, n, classify(rows.Err())
}

var _ querier = (*pgxpool.Pool)(nil)
