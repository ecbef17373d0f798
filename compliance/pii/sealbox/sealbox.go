// Package sealbox seals a personal value to a subject's X25519 public key, so that a party
// without the control plane's database or data keys (a node) can seal what it signs, and only the
// holder of the private key (the control plane's keyring) can open it. A sealed value is
//
//	enc:x1:<base64url(subject)>:<generation>:<base64url(ephemeral public key ‖ nonce ‖ ciphertext)>
//
// the ciphertext AES-256-GCM under HKDF-SHA256 of the ephemeral X25519 shared secret, with
// associated data binding the subject, the field and the key generation, so a value moved to
// another subject, field or generation does not open.
//
// The package holds no keys and imports no database: nodes and the control plane both use it.
package sealbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Prefix starts every value sealed to a public key.
const Prefix = "enc:x1:"

// KeySize is the size of an X25519 key (public or private).
const KeySize = 32

// ErrUnreadable: a sealed value does not open with the key (changed, moved, or sealed to another key).
var ErrUnreadable = errors.New("sealbox: the sealed value does not open")

const nonceSize = 12

// GenerateKey returns a new X25519 key pair (private, public).
func GenerateKey() (priv, pub []byte, err error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("sealbox: %w", err)
	}
	return k.Bytes(), k.PublicKey().Bytes(), nil
}

// PublicKey returns the public half of a private key.
func PublicKey(priv []byte) ([]byte, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	return k.PublicKey().Bytes(), nil
}

// Seal seals plain, the value of field about subject, to pub (generation gen of the subject's
// sealing key). An empty plain stays empty.
func Seal(pub []byte, subject string, gen int, field, plain string) (string, error) {
	if plain == "" {
		return "", nil
	}
	if subject == "" || gen < 1 {
		return "", errors.New("sealbox: a subject and a generation are required")
	}
	recipient, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("sealbox: public key: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("sealbox: %w", err)
	}
	shared, err := eph.ECDH(recipient)
	if err != nil {
		return "", fmt.Errorf("sealbox: %w", err)
	}
	ephPub := eph.PublicKey().Bytes()
	aead, err := boxAEAD(shared, ephPub, pub)
	if err != nil {
		return "", err
	}
	out := make([]byte, KeySize+nonceSize, KeySize+nonceSize+len(plain)+aead.Overhead())
	copy(out, ephPub)
	if _, err := rand.Read(out[KeySize:]); err != nil {
		return "", fmt.Errorf("sealbox: %w", err)
	}
	out = aead.Seal(out, out[KeySize:], []byte(plain), AAD(subject, field, gen))
	return Join(Prefix, subject, gen, out), nil
}

// Join is the inverse of Split.
func Join(prefix, subject string, gen int, body []byte) string {
	return prefix + base64.RawURLEncoding.EncodeToString([]byte(subject)) + ":" + strconv.Itoa(gen) + ":" +
		base64.RawURLEncoding.EncodeToString(body)
}

// Sealed is a parsed sealed value.
type Sealed struct {
	Subject    string
	Generation int
	box        []byte
}

// Parse parses a sealed value; ok is false for anything else.
func Parse(value string) (s Sealed, ok bool) {
	sub, gen, box, ok := Split(value, Prefix)
	if !ok || len(box) < KeySize+nonceSize+16 {
		return Sealed{}, false
	}
	return Sealed{Subject: sub, Generation: gen, box: box}, true
}

// Split takes apart prefix<base64url subject>:<generation>:<base64url body>, the shape of every
// sealed value (this package's and compliance/pii's data-key values); ok is false for anything else.
func Split(value, prefix string) (subject string, gen int, body []byte, ok bool) {
	rest, found := strings.CutPrefix(value, prefix)
	if !found {
		return "", 0, nil, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return "", 0, nil, false
	}
	sub, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	gen, err2 := strconv.Atoi(parts[1])
	body, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || gen < 1 || len(sub) == 0 {
		return "", 0, nil, false
	}
	return string(sub), gen, body, true
}

// Open opens s, the value of field, with the private key of its subject and generation.
func Open(priv []byte, s Sealed, field string) (string, error) {
	if len(s.box) < KeySize+nonceSize {
		return "", ErrUnreadable // not from Parse
	}
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("sealbox: private key: %w", err)
	}
	ephPub := s.box[:KeySize]
	eph, err := ecdh.X25519().NewPublicKey(ephPub)
	if err != nil {
		return "", ErrUnreadable
	}
	shared, err := k.ECDH(eph)
	if err != nil {
		return "", ErrUnreadable
	}
	aead, err := boxAEAD(shared, ephPub, k.PublicKey().Bytes())
	if err != nil {
		return "", err
	}
	nonce := s.box[KeySize : KeySize+nonceSize]
	plain, err := aead.Open(nil, nonce, s.box[KeySize+nonceSize:], AAD(s.Subject, field, s.Generation))
	if err != nil {
		return "", ErrUnreadable
	}
	return string(plain), nil
}

// AAD is the associated data of a value: the subject, the field and the generation.
func AAD(subject, field string, gen int) []byte {
	return []byte("tunnelplane pii x1\x00" + subject + "\x00" + field + "\x00" + strconv.Itoa(gen))
}

// boxAEAD derives the AES-256-GCM key of one sealed value from the X25519 shared secret, bound to
// both public keys.
func boxAEAD(shared, ephPub, pub []byte) (cipher.AEAD, error) {
	salt := append(append(make([]byte, 0, 2*KeySize), ephPub...), pub...)
	key, err := hkdf.Key(sha256.New, shared, salt, "tunnelplane sealbox v1", 32)
	if err != nil {
		return nil, fmt.Errorf("sealbox: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
