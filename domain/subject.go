package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SubjectErased records a crypto-shredding: the data keys of a subject (whom personal data in the
// log is about: an actor id, a user's id) were destroyed, so the client addresses and user agents
// sealed for it no longer open anywhere, while every record still verifies. Who asked is in the
// record's metadata.
type SubjectErased struct {
	Subject string `json:"subject"`
	// KeysDestroyed is how many data keys the erasure destroyed (0: none were left).
	KeysDestroyed int64  `json:"keys_destroyed"`
	Reason        string `json:"reason,omitempty"`
}

func (SubjectErased) EventType() string { return TypeSubjectErased }

// SubjectStream is the stream of a subject's erasures. The id is a digest, since a subject (an
// external provider's user id) may hold characters a stream id may not.
func SubjectStream(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return "subject-" + hex.EncodeToString(sum[:16])
}

// MaxSubjectBytes bounds a subject's id (an actor id; an external provider's may be long: the
// keys table keys those by digest) and MaxErasureReasonBytes the reason.
const (
	MaxSubjectBytes       = 1024
	MaxErasureReasonBytes = 1024
)

// EraseSubject validates an erasure and builds its event; keysDestroyed is what the keyring did.
func EraseSubject(subject, reason string, keysDestroyed int64) (SubjectErased, error) {
	var p problems
	switch {
	case subject == "":
		p.add("subject", "is required")
	case len(subject) > MaxSubjectBytes:
		p.add("subject", "longer than %d bytes", MaxSubjectBytes)
	case !utf8.ValidString(subject) || strings.IndexFunc(subject, unicode.IsControl) >= 0:
		p.add("subject", "must be UTF-8 without control characters")
	}
	if len(reason) > MaxErasureReasonBytes || !utf8.ValidString(reason) {
		p.add("reason", "must be UTF-8 of at most %d bytes", MaxErasureReasonBytes)
	}
	if err := p.err(); err != nil {
		return SubjectErased{}, err
	}
	return SubjectErased{Subject: subject, KeysDestroyed: keysDestroyed, Reason: reason}, nil
}
