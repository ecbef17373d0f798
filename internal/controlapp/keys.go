package controlapp

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/datadir"
	"github.com/tunnelplane/tunnelplane/siem"
)

// Keys says where the control plane's private keys live: the log's and the tokens' signing
// keys and the subjects' key-encryption key. Without KEKFile they are files of the data dir,
// which only that process sees. With it they are in the database, sealed by the 32-byte key in
// KEKFile (hex), and every replica given the same file shares them: a key rotation through one
// is the others' too. A process that moves to shared keys brings its data dir's keys along.
type Keys struct {
	DataDir string
	KEKFile string
}

// Shared reports whether the keys are in the database.
func (k Keys) Shared() bool { return k.KEKFile != "" }

// Where names the place for messages.
func (k Keys) Where() string {
	if k.Shared() {
		return "the database (sealed by " + k.KEKFile + ")"
	}
	return LogKeys(k.DataDir).String()
}

// kek reads KEKFile, which must exist: a replica that made its own would share nothing.
func (k Keys) kek() (*pii.FileKEK, error) {
	if _, err := os.Stat(k.KEKFile); err != nil {
		return nil, fmt.Errorf("key-encryption key: %w (make one with `openssl rand -hex 32`, and give every replica the same)", err)
	}
	key, err := datadir.KeyFile(k.KEKFile, 32)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	return pii.NewFileKEK(key)
}

// keyStores are a control plane's key stores over its database pool.
type keyStores struct {
	log, token eventstore.KeyStore
	// shared holds the replicas' shared keys (no purpose of its own); nil: the data dir's keys.
	shared *eventstore.SealedKeys
}

// open opens the log and token key stores on pool. Shared, the data dir's log and token keys
// not yet in the database are sealed into it.
func (k Keys) open(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) (keyStores, error) {
	if !k.Shared() {
		return keyStores{log: LogKeys(k.DataDir), token: TokenKeys(k.DataDir)}, nil
	}
	kek, err := k.kek()
	if err != nil {
		return keyStores{}, err
	}
	s := keyStores{shared: &eventstore.SealedKeys{Pool: pool, KEK: kek}}
	for _, p := range []struct {
		dir     eventstore.KeyDir
		purpose string
		store   *eventstore.KeyStore
	}{{LogKeys(k.DataDir), eventstore.KeyPurposeLog, &s.log}, {TokenKeys(k.DataDir), eventstore.KeyPurposeToken, &s.token}} {
		sealed := &eventstore.SealedKeys{Pool: pool, Purpose: p.purpose, KEK: kek}
		if err := importKeys(ctx, p.dir, sealed, log); err != nil {
			return keyStores{}, err
		}
		*p.store = sealed
	}
	return s, nil
}

// subjectsKEK is the subjects' key-encryption key: the data dir's file (made when missing), or
// shared, the replicas' one.
func (s keyStores) subjectsKEK(ctx context.Context, dataDir string, log *slog.Logger) (*pii.FileKEK, error) {
	if s.shared == nil {
		return pii.LoadKEKFile(SubjectKEK(dataDir))
	}
	key, err := s.sharedKey(ctx, eventstore.KeyPurposeSubjectsKEK, SubjectKEK(dataDir), log)
	if err != nil {
		return nil, fmt.Errorf("subjects' key-encryption key: %w", err)
	}
	return pii.NewFileKEK(key)
}

// sharedKey is the replicas' 32-byte key of purpose. The first replica to ask stores it: the
// key in file (its data dir's, so that what it sealed stays readable) or a fresh one.
func (s keyStores) sharedKey(ctx context.Context, purpose, file string, log *slog.Logger) ([]byte, error) {
	return s.shared.SharedSecret(ctx, purpose, "key", func() ([]byte, error) {
		if _, err := os.Stat(file); err == nil {
			log.Info("moving a key of the data dir into the database", "purpose", purpose, "file", file)
			return datadir.KeyFile(file, 32)
		}
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
}

// siemSecrets is the key SIEM sinks' and webhook endpoints' secrets are sealed with: the file
// named, or with shared keys and none named, the replicas' shared one.
func (a *App) siemSecrets(ctx context.Context, cfg Config) (*siem.Secrets, error) {
	if cfg.SIEMKeyFile != "" {
		return siem.LoadSecrets(cfg.SIEMKeyFile)
	}
	key, err := a.Log.keys.sharedKey(ctx, eventstore.KeyPurposeSIEM, filepath.Join(cfg.DataDir, "siem.key"), a.log)
	if err != nil {
		return nil, fmt.Errorf("siem secrets key: %w", err)
	}
	return siem.NewSecrets(key)
}

// importKeys seals the keys of dir into to; those it holds already stay as they are.
func importKeys(ctx context.Context, dir eventstore.KeyDir, to *eventstore.SealedKeys, log *slog.Logger) error {
	ids, err := dir.IDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		key, err := dir.Load(ctx, id)
		if err != nil {
			return err
		}
		stored, err := to.Import(ctx, key)
		if err != nil {
			return err
		}
		if stored {
			log.Info("moved a key of the data dir into the database", "purpose", to.Purpose, "key_id", id)
		}
	}
	return nil
}
