package ledger

import (
	"time"

	"github.com/google/uuid"
)

// Record is one stored event as readers see it.
type Record struct {
	Position      uint64
	StreamID      string
	StreamVersion uint64
	EventID       uuid.UUID
	Type          string
	// SchemaVersion and Payload are upcast to the type's current version.
	SchemaVersion uint32
	Payload       []byte
	Metadata      []byte
	RecordedAt    time.Time
	KeyID         string
	Signature     []byte
	// SignatureProof places the record in the batch its producer signed (see encoding.go).
	SignatureProof []byte
	PrevHash       []byte
	Hash           []byte
	// StoredSchemaVersion and StoredPayload are exactly what was hashed.
	StoredSchemaVersion uint32
	StoredPayload       []byte
	// Withheld marks a record sent without its content (withheld.go): only Position, EventID,
	// Type, RecordedAt, PrevHash, Hash and LeafHash are set.
	Withheld bool
	LeafHash []byte
	// WithheldAttestation, on the record that ends an append batch, is the log key's signature
	// over the records of that batch sent withheld (WithheldMessage).
	WithheldAttestation []byte
}
