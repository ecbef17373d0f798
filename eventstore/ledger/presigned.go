package ledger

import (
	"errors"
)

// ErrBadSignature: a presigned event's signature does not verify, or its key is unknown or not
// in force. Nothing of that append is written.
var ErrBadSignature = errors.New("bad producer signature")

// PresignedEvent is an event its producer (a data-plane node) encoded and signed itself: the
// canonical envelope, the producer's batch signature and the event's inclusion proof.
type PresignedEvent struct {
	Envelope  []byte
	Signature []byte
	Proof     []byte
}
