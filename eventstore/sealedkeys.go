package eventstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// Wrapper seals key material under a key-encryption key (compliance/pii's FileKEK is one).
type Wrapper interface {
	// ID names the key-encryption key, stored beside what it sealed.
	ID() string
	Wrap(secret, aad []byte) ([]byte, error)
	Unwrap(sealed, aad []byte) ([]byte, error)
}

// Purposes of the keys in table control_keys.
const (
	KeyPurposeLog         = "log"
	KeyPurposeToken       = "token"
	KeyPurposeSubjectsKEK = "subjects-kek"
	KeyPurposeSIEM        = "siem" // the key SIEM sinks' and webhooks' secrets are sealed with
)

// SealedKeys is a KeyStore in PostgreSQL (table control_keys) that every control plane replica
// on the database shares: each key's seed sealed by KEK, bound to its purpose and id, so that a
// row moved to another purpose or id does not open. A rotation through one replica is then the
// other's too (its store loads the new log key by id; token keys are loaded when used).
type SealedKeys struct {
	Pool    *pgxpool.Pool
	Purpose string // KeyPurposeLog or KeyPurposeToken (empty for SharedSecret alone)
	KEK     Wrapper
}

var _ ledger.KeyStore = (*SealedKeys)(nil)

func sealedAAD(purpose, keyID string) []byte {
	return []byte("tunnelplane control key\x00" + purpose + "\x00" + keyID)
}

// Load implements KeyStore.
func (k *SealedKeys) Load(ctx context.Context, keyID string) (*SigningKey, error) {
	seed, err := k.open(ctx, k.Purpose, keyID)
	if err != nil {
		return nil, err
	}
	key, err := ledger.NewSigningKeyFromSeed(seed)
	if err != nil {
		return nil, err
	}
	if key.ID() != keyID {
		return nil, fmt.Errorf("%w: %s holds key %s under id %s", ledger.ErrKeyFile, k, key.ID(), keyID)
	}
	return key, nil
}

// CreateKey implements KeyStore.
func (k *SealedKeys) CreateKey(ctx context.Context) (*SigningKey, error) {
	key, err := ledger.GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	if _, err := k.Import(ctx, key); err != nil {
		return nil, err
	}
	return key, nil
}

// Import stores key (one from a data dir, for a control plane that moves to shared keys) and
// reports whether it was not there yet; a key already there stays as it is.
func (k *SealedKeys) Import(ctx context.Context, key *SigningKey) (bool, error) {
	return k.put(ctx, k.Purpose, key.ID(), key.Seed())
}

// KeyIDs implements KeyStore.
func (k *SealedKeys) KeyIDs(ctx context.Context) ([]string, error) {
	rows, err := k.Pool.Query(ctx, `SELECT key_id FROM control_keys WHERE purpose = $1 ORDER BY key_id`, k.Purpose)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	return ids, nil
}

// String implements KeyStore.
func (k *SealedKeys) String() string { return "the database's " + k.Purpose + " keys (control_keys)" }

// SharedSecret returns the secret stored under purpose and id, storing generate's first when
// there is none: of replicas racing to store one, all get the one stored first.
func (k *SealedKeys) SharedSecret(ctx context.Context, purpose, id string, generate func() ([]byte, error)) ([]byte, error) {
	secret, err := k.open(ctx, purpose, id)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	secret, err = generate()
	if err != nil {
		return nil, err
	}
	stored, err := k.put(ctx, purpose, id, secret)
	if err != nil || stored {
		return secret, err
	}
	return k.open(ctx, purpose, id) // another replica's came first
}

// put seals and inserts secret; false when the row was there already (it is left as it is).
func (k *SealedKeys) put(ctx context.Context, purpose, id string, secret []byte) (bool, error) {
	sealed, err := k.KEK.Wrap(secret, sealedAAD(purpose, id))
	if err != nil {
		return false, fmt.Errorf("seal %s key %s: %w", purpose, id, err)
	}
	tag, err := k.Pool.Exec(ctx, `INSERT INTO control_keys (purpose, key_id, kek_id, sealed) VALUES ($1, $2, $3, $4)
		ON CONFLICT (purpose, key_id) DO NOTHING`, purpose, id, k.KEK.ID(), sealed)
	if err != nil {
		return false, fmt.Errorf("store %s key %s: %w", purpose, id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// open reads and unseals a row; fs.ErrNotExist when there is none.
func (k *SealedKeys) open(ctx context.Context, purpose, id string) ([]byte, error) {
	var kekID string
	var sealed []byte
	err := k.Pool.QueryRow(ctx, `SELECT kek_id, sealed FROM control_keys WHERE purpose = $1 AND key_id = $2`, purpose, id).Scan(&kekID, &sealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s key %s: %w", purpose, id, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s key %s: %w", purpose, id, err)
	}
	if kekID != k.KEK.ID() {
		return nil, fmt.Errorf("%w: %s key %s is sealed by key-encryption key %s, this process has %s (give every replica the same --key-encryption-key-file)",
			ledger.ErrKeyFile, purpose, id, kekID, k.KEK.ID())
	}
	secret, err := k.KEK.Unwrap(sealed, sealedAAD(purpose, id))
	if err != nil {
		return nil, fmt.Errorf("%w: %s key %s does not open: %w", ledger.ErrKeyFile, purpose, id, err)
	}
	return secret, nil
}
