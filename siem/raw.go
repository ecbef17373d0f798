package siem

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// rawRecord is a record exactly as hashed and signed, for receivers that verify it themselves
// (docs/event-format.md has the leaf encoding and the chain): byte strings are base64 (hashes
// hex), so nothing is re-encoded on the way.
type rawRecord struct {
	Position            uint64 `json:"position"`
	SinkSeq             uint64 `json:"sink_seq"`
	StreamID            string `json:"stream_id"`
	StreamVersion       uint64 `json:"stream_version"`
	EventID             string `json:"event_id"`
	Type                string `json:"type"`
	StoredSchemaVersion uint32 `json:"stored_schema_version"`
	StoredPayload       string `json:"stored_payload"`
	Metadata            string `json:"metadata"`
	RecordedAt          string `json:"recorded_at"`
	KeyID               string `json:"key_id"`
	Signature           string `json:"signature"`
	SignatureProof      string `json:"signature_proof,omitempty"`
	PrevHash            string `json:"prev_hash"`
	Hash                string `json:"hash"`
}

// ErrRawNotRedactable: the raw format carries signed bytes, which redaction would break.
var ErrRawNotRedactable = errors.New("siem: the raw format cannot be redacted (its bytes are signed); use OCSF or CEF")

// Raw is the entry's canonical record as JSON.
func Raw(e Entry) ([]byte, error) {
	r := e.Record
	if r == nil {
		return nil, errors.New("siem: entry without a record")
	}
	if e.Redact != nil {
		return nil, ErrRawNotRedactable
	}
	b64 := base64.StdEncoding.EncodeToString
	return json.Marshal(rawRecord{
		Position: r.Position, SinkSeq: e.Seq, StreamID: r.StreamID, StreamVersion: r.StreamVersion, EventID: r.EventID.String(),
		Type: r.Type, StoredSchemaVersion: r.StoredSchemaVersion, StoredPayload: b64(r.StoredPayload), Metadata: b64(r.Metadata),
		RecordedAt: r.RecordedAt.UTC().Format(time.RFC3339Nano), KeyID: r.KeyID, Signature: b64(r.Signature),
		SignatureProof: b64(r.SignatureProof), PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash),
	})
}
