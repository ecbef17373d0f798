package pii

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/tunnelplane/tunnelplane/internal/datadir"
)

// KEK wraps and unwraps data keys. The file KEK is the one built; an HSM's would implement the
// same three methods, so the keyring does not change when the KEK moves.
type KEK interface {
	// ID names the KEK (stored beside each wrapped key, so a key wrapped by another KEK is
	// recognised as such instead of failing to open).
	ID() string
	// Wrap seals a data key, bound to aad (the subject and generation it is for).
	Wrap(dataKey, aad []byte) ([]byte, error)
	// Unwrap opens what Wrap sealed with the same aad.
	Unwrap(wrapped, aad []byte) ([]byte, error)
}

// ErrKEK: a data key cannot be unwrapped (another KEK wrapped it, or its bytes were changed).
var ErrKEK = errors.New("pii: the data key cannot be unwrapped with this key-encryption key")

// FileKEK is a KEK of 32 random bytes kept in a file of the data dir (64 hex digits), as the
// other keys there are.
type FileKEK struct {
	id   string
	aead cipher.AEAD
}

// LoadKEKFile reads the KEK at path (64 hex digits), making one when there is none. Every
// control plane of a log must use the same file.
func LoadKEKFile(path string) (*FileKEK, error) {
	key, err := datadir.KeyFile(path, 32)
	if err != nil {
		return nil, fmt.Errorf("pii kek: %w", err)
	}
	return NewFileKEK(key)
}

// NewFileKEK wraps with a 32-byte key. Its ID is the first 8 bytes of the key's SHA-256 (hex).
func NewFileKEK(key []byte) (*FileKEK, error) {
	if len(key) != 32 {
		return nil, errors.New("pii kek: the key must be 32 bytes")
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("tunnelplane pii kek id\x00"), key...))
	return &FileKEK{id: "file:" + hex.EncodeToString(sum[:8]), aead: aead}, nil
}

// ID implements KEK.
func (k *FileKEK) ID() string { return k.id }

// Wrap implements KEK.
func (k *FileKEK) Wrap(dataKey, aad []byte) ([]byte, error) { return seal(k.aead, dataKey, aad) }

// Unwrap implements KEK.
func (k *FileKEK) Unwrap(wrapped, aad []byte) ([]byte, error) {
	out, err := open(k.aead, wrapped, aad)
	if err != nil {
		return nil, ErrKEK
	}
	return out, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal returns nonce ‖ ciphertext.
func seal(aead cipher.AEAD, plain, aad []byte) ([]byte, error) {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, aad), nil
}

func open(aead cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(sealed) < n+aead.Overhead() {
		return nil, errors.New("too short")
	}
	return aead.Open(nil, sealed[:n], sealed[n:], aad)
}
