package eventstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// EventData is an event to append.
type EventData struct {
	// ID identifies the event for idempotency; a zero ID gets a fresh UUIDv7.
	ID uuid.UUID
	// Type must be registered; the event is written with the type's current schema version.
	Type string
	// Payload is a JSON value, stored and hashed byte for byte.
	Payload []byte
	// Metadata is a JSON object (actor, correlation id …); nil means {}.
	Metadata []byte
}

// AppendResult tells where an append landed.
type AppendResult struct {
	StreamVersion uint64 // version of the stream after the append
	FirstPosition uint64
	LastPosition  uint64
	RecordedAt    time.Time
}

var emptyObject = []byte("{}")

// validJSON checks that b can be stored both as the hashed bytes and as the jsonb query copy.
// PostgreSQL's jsonb rejects the NUL escape, so it is refused here instead of failing a batch.
func validJSON(b []byte) error {
	switch {
	case !utf8.Valid(b):
		return fmt.Errorf("not valid UTF-8")
	case !json.Valid(b):
		return fmt.Errorf("not valid JSON")
	case bytes.Contains(b, []byte(`\u0000`)):
		return fmt.Errorf(`contains \u0000, which PostgreSQL's jsonb cannot store`)
	}
	return nil
}

// checkMetadata returns the metadata to store ({} for nil), or why it cannot be stored.
func checkMetadata(meta []byte) ([]byte, error) {
	if meta == nil {
		return emptyObject, nil
	}
	if len(meta) > MaxMetadataBytes {
		return nil, fmt.Errorf("%w: metadata has %d bytes, at most %d", ErrTooLarge, len(meta), MaxMetadataBytes)
	}
	if err := validJSON(meta); err != nil {
		return nil, fmt.Errorf("%w: metadata %w", ErrInvalidEvent, err)
	}
	if trimmed := bytes.TrimSpace(meta); len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: metadata must be a JSON object", ErrInvalidEvent)
	}
	return meta, nil
}

// logMetadata is checkMetadata for the log's own records, sealed as events' metadata is.
func (s *Store) logMetadata(ctx context.Context, typ string, meta []byte) ([]byte, error) {
	if s.cfg.Seal != nil && meta != nil {
		var err error
		if _, meta, err = s.cfg.Seal(ctx, typ, nil, meta); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSeal, err)
		}
	}
	return checkMetadata(meta)
}

func (s *Store) prepareEvents(ctx context.Context, streamID string, events []EventData) ([]pendingEvent, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: no events to append", ErrInvalidEvent)
	}
	if len(events) > MaxEventsPerCall {
		return nil, fmt.Errorf("%w: %d events in one append, at most %d", ErrTooLarge, len(events), MaxEventsPerCall)
	}
	out := make([]pendingEvent, len(events))
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i, e := range events {
		t, ok := s.registry.Lookup(e.Type)
		if !ok {
			return nil, fmt.Errorf("event %d: %w: %q", i, ErrUnknownEventType, e.Type)
		}
		if s.cfg.Seal != nil {
			var err error
			if e.Payload, e.Metadata, err = s.cfg.Seal(ctx, e.Type, e.Payload, e.Metadata); err != nil {
				return nil, fmt.Errorf("event %d (%s): %w: %w", i, e.Type, ErrSeal, err)
			}
		}
		if len(e.Payload) > MaxPayloadBytes {
			return nil, fmt.Errorf("event %d (%s): %w: payload has %d bytes, at most %d", i, e.Type, ErrTooLarge, len(e.Payload), MaxPayloadBytes)
		}
		if err := validJSON(e.Payload); err != nil {
			return nil, fmt.Errorf("event %d (%s): %w: payload %w", i, e.Type, ErrInvalidEvent, err)
		}
		meta, err := checkMetadata(e.Metadata)
		if err != nil {
			return nil, fmt.Errorf("event %d (%s): %w", i, e.Type, err)
		}
		id := e.ID
		if id == uuid.Nil {
			var err error
			if id, err = uuid.NewV7(); err != nil {
				return nil, fmt.Errorf("event id: %w", err)
			}
		}
		if _, dup := seen[id]; dup {
			return nil, fmt.Errorf("event %d: %w: %s appears twice in one append", i, ErrDuplicateEventID, id)
		}
		seen[id] = struct{}{}
		out[i] = pendingEvent{env: Envelope{
			EventID: id, StreamID: streamID, Type: e.Type, SchemaVersion: t.SchemaVersion,
			Payload: e.Payload, Metadata: meta,
		}}
	}
	return out, nil
}
