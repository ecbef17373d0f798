package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// RelayedEvent is the JSON body of a message on "events.<type>" in TP_EVENTS:
//
//	{"position":42,"stream_id":"tunnel-…","stream_version":3,"event_id":"0190…",
//	 "type":"tunnel.created","schema_version":1,"recorded_at":"2025-01-02T03:04:05.123456Z",
//	 "key_id":"ed25519:…","payload":{…},"metadata":{…}}
//
// payload and metadata are the record's JSON as is (payload upcast to the type's current schema
// version, which schema_version names). Headers: Nats-Msg-Id = event_id.<first 8 bytes of hash, hex>, Tp-Position = position
// (decimal), Tp-Type = type, Tp-Stream-Id = stream_id. Messages are in position order with no
// gaps and no repeats; the relay keeps stream sequence = position + 1 from an empty stream on.
type RelayedEvent struct {
	Position      uint64          `json:"position"`
	StreamID      string          `json:"stream_id,omitempty"`
	StreamVersion uint64          `json:"stream_version,omitempty"`
	EventID       uuid.UUID       `json:"event_id"`
	Type          string          `json:"type"`
	SchemaVersion uint32          `json:"schema_version,omitempty"`
	RecordedAt    time.Time       `json:"recorded_at"`
	KeyID         string          `json:"key_id,omitempty"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	// The record's proof, for whoever reads the relayed log to check that the log's keys signed
	// it, in this place (Record, ledger.ChainVerifier): the exact bytes hashed and signed
	// (payload and metadata above are re-encoded JSON), the producer's batch signature, the
	// record's place in that batch, and the hash chain.
	Envelope       []byte `json:"envelope,omitempty"`
	Signature      []byte `json:"signature,omitempty"`
	SignatureProof []byte `json:"signature_proof,omitempty"`
	PrevHash       []byte `json:"prev_hash,omitempty"`
	Hash           []byte `json:"hash,omitempty"`
	// Checkpoint is the signed checkpoint note of the log's size after this record, on the last
	// record of each append batch: what lets a reader take the batch as the log's
	// (ledger.ChainVerifier).
	Checkpoint string `json:"checkpoint,omitempty"`
	// Withheld: a record nodes do not act on, sent without its content (ledger.WithheldCopy):
	// position, event id, type, time, prev_hash, hash and its Merkle leaf hash only.
	Withheld bool   `json:"withheld,omitempty"`
	LeafHash []byte `json:"leaf_hash,omitempty"`
	// WithheldAttestation, on an append batch's last record, is the log key's signature over the
	// batch's withheld records (ledger.WithheldMessage).
	WithheldAttestation []byte `json:"withheld_attestation,omitempty"`
}

// Record rebuilds the log record the event carries from its envelope (the exact bytes the log
// hashed and signed), with what ledger.ChainVerifier checks. Payload is the payload as stored
// (SchemaVersion its stored version), and every field a reader acts on comes from the envelope,
// not from the message's JSON.
func (ev RelayedEvent) Record() (ledger.Record, error) {
	if ev.Withheld {
		return ledger.Record{Position: ev.Position, EventID: ev.EventID, Type: ev.Type, RecordedAt: ev.RecordedAt, PrevHash: ev.PrevHash, Hash: ev.Hash,
			Withheld: true, LeafHash: ev.LeafHash, WithheldAttestation: ev.WithheldAttestation}, nil
	}
	if len(ev.Envelope) == 0 {
		return ledger.Record{}, fmt.Errorf("%w: position %d carries no envelope (relayed by an older control plane?)", ErrMalformed, ev.Position)
	}
	env, err := ledger.DecodeEnvelope(ev.Envelope)
	if err != nil {
		return ledger.Record{}, fmt.Errorf("%w: position %d: %w", ErrMalformed, ev.Position, err)
	}
	return ledger.Record{Position: ev.Position, StreamID: env.StreamID, StreamVersion: ev.StreamVersion, EventID: env.EventID,
		Type: env.Type, SchemaVersion: env.SchemaVersion, Payload: env.Payload, Metadata: env.Metadata, RecordedAt: ev.RecordedAt,
		KeyID: env.KeyID, Signature: ev.Signature, SignatureProof: ev.SignatureProof, PrevHash: ev.PrevHash, Hash: ev.Hash,
		StoredSchemaVersion: env.SchemaVersion, StoredPayload: env.Payload, WithheldAttestation: ev.WithheldAttestation}, nil
}

// EncodeRelayedEvent is the body the relay publishes for rec; checkpoint is the signed note of
// the log after rec when rec ends an append batch ("" otherwise). A withheld rec
// (ledger.WithheldCopy) is sent as it is.
func EncodeRelayedEvent(rec *ledger.Record, checkpoint string) ([]byte, error) {
	if rec.Withheld {
		body, err := json.Marshal(RelayedEvent{Position: rec.Position, EventID: rec.EventID, Type: rec.Type, RecordedAt: rec.RecordedAt.UTC(), PrevHash: rec.PrevHash,
			Hash: rec.Hash, Withheld: true, LeafHash: rec.LeafHash, WithheldAttestation: rec.WithheldAttestation, Checkpoint: checkpoint})
		if err != nil {
			return nil, fmt.Errorf("encode position %d: %w", rec.Position, err)
		}
		return body, nil
	}
	env := ledger.Envelope{EventID: rec.EventID, StreamID: rec.StreamID, Type: rec.Type, SchemaVersion: rec.StoredSchemaVersion,
		KeyID: rec.KeyID, Payload: rec.StoredPayload, Metadata: rec.Metadata}
	body, err := json.Marshal(RelayedEvent{
		Position: rec.Position, StreamID: rec.StreamID, StreamVersion: rec.StreamVersion, EventID: rec.EventID,
		Type: rec.Type, SchemaVersion: rec.SchemaVersion, RecordedAt: rec.RecordedAt.UTC(), KeyID: rec.KeyID,
		Payload: rec.Payload, Metadata: rec.Metadata,
		Envelope: ledger.AppendEnvelope(make([]byte, 0, ledger.EnvelopeSize(&env)), &env), Signature: rec.Signature,
		SignatureProof: rec.SignatureProof, PrevHash: rec.PrevHash, Hash: rec.Hash, Checkpoint: checkpoint,
		WithheldAttestation: rec.WithheldAttestation,
	})
	if err != nil {
		return nil, fmt.Errorf("encode position %d: %w", rec.Position, err)
	}
	return body, nil
}

// DecodeRelayedEvent parses and checks a relayed event body.
func DecodeRelayedEvent(data []byte) (RelayedEvent, error) {
	var ev RelayedEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return RelayedEvent{}, fmt.Errorf("decode relayed event: %w: %w", ErrMalformed, err)
	}
	var missing []string
	if ev.Withheld {
		if ev.Type == "" {
			missing = append(missing, "type")
		}
		if len(ev.LeafHash) == 0 {
			missing = append(missing, "leaf_hash")
		}
		if len(missing) > 0 {
			return RelayedEvent{}, fmt.Errorf("decode relayed event: %w: missing %v", ErrMalformed, missing)
		}
		return ev, nil
	}
	if ev.StreamID == "" {
		missing = append(missing, "stream_id")
	}
	if ev.EventID == uuid.Nil {
		missing = append(missing, "event_id")
	}
	if ev.Type == "" {
		missing = append(missing, "type")
	}
	if ev.StreamVersion == 0 {
		missing = append(missing, "stream_version")
	}
	if ev.SchemaVersion == 0 {
		missing = append(missing, "schema_version")
	}
	if len(ev.Payload) == 0 {
		missing = append(missing, "payload")
	}
	if len(missing) > 0 {
		return RelayedEvent{}, fmt.Errorf("decode relayed event: %w: missing %v", ErrMalformed, missing)
	}
	return ev, nil
}

// EventIDFromHeader is the event id a relayed message's Nats-Msg-Id names.
func EventIDFromHeader(h nats.Header) string {
	id, _, _ := strings.Cut(h.Get(jetstream.MsgIDHeader), ".")
	return id
}

// GenuineLookback bounds how far lastGenuine walks back over messages someone else published.
const GenuineLookback = 1024

// LookupEventsStream looks the events stream up (with its info as of now); nil without an error
// when it does not exist yet.
func LookupEventsStream(ctx context.Context, js jetstream.JetStream, names Names) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, names.EventsStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", names.EventsStream(), err)
	}
	return st, nil
}
