package ledger

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// KeyStore keeps a purpose's private keys (the log's, the tokens'): a KeyDir in the data dir, or
// a store every control plane replica shares (eventstore.SealedKeys). Load of an id it does not
// hold fails with fs.ErrNotExist.
type KeyStore interface {
	Load(ctx context.Context, keyID string) (*SigningKey, error)
	// CreateKey makes a fresh key and stores it.
	CreateKey(ctx context.Context) (*SigningKey, error)
	// KeyIDs lists the key ids stored, sorted.
	KeyIDs(ctx context.Context) ([]string, error)
	// String names the store in messages (a path, a table).
	String() string
}

// KeyDir keeps private keys of one purpose as PEM files named after their key ids, mode 0600, in
// a directory of mode 0700 (for the log key: <data dir>/keys/log). Old keys stay after a rotation
// so that a process that missed it can still find the key in force.
type KeyDir string

func (d KeyDir) path(keyID string) string {
	return filepath.Join(string(d), strings.ReplaceAll(keyID, ":", "-")+".pem")
}

// Load reads the key with this id.
func (d KeyDir) Load(_ context.Context, keyID string) (*SigningKey, error) {
	k, err := LoadKeyFile(d.path(keyID))
	if err != nil {
		return nil, err
	}
	if k.ID() != keyID {
		return nil, fmt.Errorf("%w: %s holds key %s", ErrKeyFile, d.path(keyID), k.ID())
	}
	return k, nil
}

// Create makes a fresh key and stores it.
func (d KeyDir) Create() (*SigningKey, error) {
	k, err := GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	if err := WriteKeyFile(d.path(k.ID()), k); err != nil {
		return nil, err
	}
	return k, nil
}

// CreateKey implements KeyStore (Create).
func (d KeyDir) CreateKey(context.Context) (*SigningKey, error) { return d.Create() }

// KeyIDs implements KeyStore (IDs).
func (d KeyDir) KeyIDs(context.Context) ([]string, error) { return d.IDs() }

// String implements KeyStore: the directory.
func (d KeyDir) String() string { return string(d) }

// IDs lists the key ids stored, sorted.
func (d KeyDir) IDs() ([]string, error) {
	entries, err := os.ReadDir(string(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key dir: %w", err)
	}
	var ids []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".pem") || !strings.HasPrefix(name, "ed25519-") {
			continue
		}
		ids = append(ids, strings.Replace(strings.TrimSuffix(name, ".pem"), "-", ":", 1))
	}
	sort.Strings(ids)
	return ids, nil
}
