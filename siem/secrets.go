package siem

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/datadir"
)

// Secrets seals the secrets of SIEM sinks (HEC tokens, client keys, redaction keys) before they
// enter the log, and opens them, or reads what a reference names, when a sink starts. The log
// holds only sealed values (AES-256-GCM under a key kept outside the database, in the control
// plane's data directory) and references to the control plane's environment or files.
type Secrets struct {
	aead cipher.AEAD
}

// ErrSecret: a sink's secret cannot be had (the key that sealed it is not this one, the
// variable or file it names is missing). The message never holds the secret.
var ErrSecret = errors.New("siem: the sink's secret cannot be read")

// LoadSecrets reads the sealing key from path (64 hex digits), making one when there is none.
// Every control plane instance of a cluster must use the same key.
func LoadSecrets(path string) (*Secrets, error) {
	key, err := datadir.KeyFile(path, 32)
	if err != nil {
		return nil, fmt.Errorf("siem secrets key: %w", err)
	}
	return NewSecrets(key)
}

// NewSecrets seals with a 32-byte key.
func NewSecrets(key []byte) (*Secrets, error) {
	if len(key) != 32 {
		return nil, errors.New("siem secrets: the key must be 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Secrets{aead: aead}, nil
}

// Seal returns plain sealed for the log (domain.SealedPrefix…), bound to the field it is for.
func (s *Secrets) Seal(field string, plain []byte) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := s.aead.Seal(nonce, nonce, plain, []byte("tunnelplane siem "+field))
	return domain.SealedPrefix + base64.RawURLEncoding.EncodeToString(out), nil
}

// NewRedactKey makes a random key for hashing client addresses, sealed.
func (s *Secrets) NewRedactKey() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return s.Seal("redact_key", key)
}

// Open returns the secret a sealed value or a reference (env:NAME, file:PATH) stands for.
func (s *Secrets) Open(field, value string) ([]byte, error) {
	switch {
	case strings.HasPrefix(value, domain.SealedPrefix):
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(value, domain.SealedPrefix))
		if err != nil || len(raw) < s.aead.NonceSize() {
			return nil, fmt.Errorf("%w: %s: not a sealed value", ErrSecret, field)
		}
		n := s.aead.NonceSize()
		plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte("tunnelplane siem "+field))
		if err != nil {
			return nil, fmt.Errorf("%w: %s was sealed under another key (every control plane instance needs the same --siem-key-file)", ErrSecret, field)
		}
		return plain, nil
	case strings.HasPrefix(value, domain.RefEnvPrefix):
		name := strings.TrimPrefix(value, domain.RefEnvPrefix)
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			return nil, fmt.Errorf("%w: %s names the environment variable %s, which is not set", ErrSecret, field, name)
		}
		return []byte(v), nil
	case strings.HasPrefix(value, domain.RefFilePrefix):
		path := strings.TrimPrefix(value, domain.RefFilePrefix)
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %s names the file %s: %v", ErrSecret, field, path, errors.Unwrap(err))
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, 64<<10))
		if err != nil {
			return nil, fmt.Errorf("%w: %s names the file %s: %v", ErrSecret, field, path, err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	return nil, fmt.Errorf("%w: %s is neither sealed nor a reference", ErrSecret, field)
}
