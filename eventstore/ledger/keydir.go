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
