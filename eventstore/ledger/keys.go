package ledger

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// ErrKeyFile reports a key file that cannot be used.
var ErrKeyFile = errors.New("key file unusable")

// Ed25519VerifyOptions selects RFC 8032 cofactored verification, which batch verification also uses, so
// a signature is judged the same way alone and in a batch.
var Ed25519VerifyOptions = &voi.Options{Verify: voi.VerifyOptionsFIPS_186_5}

// SigningKey is an Ed25519 private key with its derived identity.
type SigningKey struct {
	id   string
	priv voi.PrivateKey
	pub  ed25519.PublicKey
}

// GenerateSigningKey returns a fresh random key.
func GenerateSigningKey() (*SigningKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return NewSigningKeyFromSeed(seed)
}

// NewSigningKeyFromSeed builds a key from a 32-byte RFC 8032 seed.
func NewSigningKeyFromSeed(seed []byte) (*SigningKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed has %d bytes, want %d", ErrKeyFile, len(seed), ed25519.SeedSize)
	}
	priv := voi.NewKeyFromSeed(seed)
	pub := ed25519.PublicKey(append([]byte(nil), priv[32:]...))
	return &SigningKey{id: KeyID(pub), priv: priv, pub: pub}, nil
}

// Seed is the key's RFC 8032 seed (a copy): the private key, for a key store that seals it.
func (k *SigningKey) Seed() []byte { return append([]byte(nil), k.priv.Seed()...) }

// ID is the key id stored next to every signature it makes.
func (k *SigningKey) ID() string { return k.id }

// Public returns the public half.
func (k *SigningKey) Public() ed25519.PublicKey { return k.pub }

// Fingerprint is the human-facing form of the public key ("SHA256:…", as OpenSSH prints).
func (k *SigningKey) Fingerprint() string { return Fingerprint(k.pub) }

// Sign signs msg as is.
func (k *SigningKey) Sign(msg []byte) []byte { return voi.Sign(k.priv, msg) }

// KeyID derives the stable key id of a public key: "ed25519:" and the first 8 bytes of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// Fingerprint formats a public key's SHA-256 as OpenSSH does.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// VerifyingKey is a public key prepared for fast repeated verification.
type VerifyingKey struct {
	id       string
	pub      ed25519.PublicKey
	expanded *voi.ExpandedPublicKey
}

func newVerifyingKey(pub ed25519.PublicKey) (*VerifyingKey, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	exp, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return &VerifyingKey{id: KeyID(pub), pub: pub, expanded: exp}, nil
}

func (v *VerifyingKey) Verify(msg, sig []byte) bool {
	return voi.VerifyExpandedWithOptions(v.expanded, msg, sig, Ed25519VerifyOptions)
}

// PublicKey is the key.
func (v *VerifyingKey) PublicKey() ed25519.PublicKey { return v.pub }

// Expanded is the key expanded for fast verification (many signatures by one key).
func (v *VerifyingKey) Expanded() *voi.ExpandedPublicKey {
	return v.expanded
}

// LoadOrCreateKeyFile reads an Ed25519 key from a PEM (PKCS#8) file, creating the file with a
// fresh key and mode 0600 when it does not exist. A key readable by group or others is refused.
func LoadOrCreateKeyFile(path string) (key *SigningKey, created bool, err error) {
	key, err = LoadKeyFile(path)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	key, err = GenerateSigningKey()
	if err != nil {
		return nil, false, err
	}
	if err := WriteKeyFile(path, key); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created it first; use theirs.
			key, err = LoadKeyFile(path)
			return key, false, err
		}
		return nil, false, err
	}
	return key, true, nil
}

// LoadKeyFile reads an Ed25519 private key written by WriteKeyFile.
func LoadKeyFile(path string) (*SigningKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is accessible by group or others (mode %04o); run chmod 600 %s",
			ErrKeyFile, path, st.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: %s holds no PEM \"PRIVATE KEY\" block", ErrKeyFile, path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	edKey, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s holds a %T, want an Ed25519 key", ErrKeyFile, path, parsed)
	}
	return NewSigningKeyFromSeed(edKey.Seed())
}

// WriteKeyFile writes key to a new file with mode 0600, creating parent directories with 0700.
// It fails with fs.ErrExist rather than overwrite a key.
func WriteKeyFile(path string, key *SigningKey) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ed25519.NewKeyFromSeed(key.priv.Seed()))
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write key: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	// Link (not rename) so an existing key is never replaced.
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}

// CryptoSigner exposes the key as a crypto.Signer (pure Ed25519), for JWT and SSH libraries.
func (k *SigningKey) CryptoSigner() crypto.Signer { return cryptoSigner{k} }

type cryptoSigner struct{ k *SigningKey }

func (c cryptoSigner) Public() crypto.PublicKey { return c.k.pub }

func (c cryptoSigner) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != 0 {
		return nil, fmt.Errorf("%w: only pure Ed25519 is supported", ErrKeyFile)
	}
	return c.k.Sign(msg), nil
}
