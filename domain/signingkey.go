package domain

import "fmt"

// KeyPurpose names what a control-plane key signs; one purpose per key.
type KeyPurpose string

const (
	// KeyPurposeLog signs records and checkpoints of the event log.
	KeyPurposeLog KeyPurpose = "log"
	// KeyPurposeToken signs user and agent tokens.
	KeyPurposeToken KeyPurpose = "token"
)

// SigningKeyState is where a control-plane key is in its life: active keys sign; a rotated key
// no longer signs but still verifies what it signed (tokens until they expire); retired keys are
// gone.
type SigningKeyState string

const (
	KeyActive  SigningKeyState = "active"
	KeyRotated SigningKeyState = "rotated"
	KeyRetired SigningKeyState = "retired"
)

// ParseKeyPurpose validates a purpose given by an operator.
func ParseKeyPurpose(s string) (KeyPurpose, error) {
	switch KeyPurpose(s) {
	case KeyPurposeLog, KeyPurposeToken:
		return KeyPurpose(s), nil
	}
	var p problems
	p.add("purpose", "must be \"log\" or \"token\"")
	return "", p.err()
}

// CheckRotation decides whether the key in force for purpose may be rotated to nextKeyID.
func CheckRotation(purpose KeyPurpose, currentKeyID, nextKeyID string) error {
	if currentKeyID == "" {
		return fmt.Errorf("rotate %s key: %w: there is no %s key yet", purpose, ErrInvalidState, purpose)
	}
	if currentKeyID == nextKeyID {
		return fmt.Errorf("rotate %s key: %w: the new key is the current key", purpose, ErrConflict)
	}
	return nil
}
