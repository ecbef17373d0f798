package controlapp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
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

// stores opens the log and token key stores on pool, and the subjects' KEK. Shared, the data
// dir's log and token keys not yet in the database are sealed into it.
func (k Keys) stores(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) (logKeys, tokenKeys eventstore.KeyStore, subjects *pii.FileKEK, err error) {
	if !k.Shared() {
		subjects, err = pii.LoadKEKFile(SubjectKEK(k.DataDir))
		return LogKeys(k.DataDir), TokenKeys(k.DataDir), subjects, err
	}
	kek, err := k.kek()
	if err != nil {
		return nil, nil, nil, err
	}
	sealed := func(purpose string) *eventstore.SealedKeys {
		return &eventstore.SealedKeys{Pool: pool, Purpose: purpose, KEK: kek}
	}
	lk, tk := sealed(eventstore.KeyPurposeLog), sealed(eventstore.KeyPurposeToken)
	for _, p := range []struct {
		dir    eventstore.KeyDir
		sealed *eventstore.SealedKeys
	}{{LogKeys(k.DataDir), lk}, {TokenKeys(k.DataDir), tk}} {
		if err := importKeys(ctx, p.dir, p.sealed, log); err != nil {
			return nil, nil, nil, err
		}
	}
	secret, err := lk.SharedSecret(ctx, eventstore.KeyPurposeSubjectsKEK, "kek", func() ([]byte, error) {
		// The data dir's, when it has one: what it sealed stays readable.
		if _, err := os.Stat(SubjectKEK(k.DataDir)); err == nil {
			log.Info("moving the data dir's subjects key-encryption key into the database", "file", SubjectKEK(k.DataDir))
			return datadir.KeyFile(SubjectKEK(k.DataDir), 32)
		}
		return randomKey()
	})
	if err == nil {
		subjects, err = pii.NewFileKEK(secret)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("subjects' key-encryption key: %w", err)
	}
	return lk, tk, subjects, nil
}

// siemSecrets is the key SIEM sinks' and webhook endpoints' secrets are sealed with: the file
// named, or with shared keys and none named, the replicas' shared one (the data dir's
// siem.key brought along when there is one).
func (a *App) siemSecrets(ctx context.Context, cfg Config) (*siem.Secrets, error) {
	if cfg.SIEMKeyFile != "" {
		return siem.LoadSecrets(cfg.SIEMKeyFile)
	}
	kek, err := cfg.Keys().kek()
	if err != nil {
		return nil, err
	}
	own := filepath.Join(cfg.DataDir, "siem.key")
	shared := &eventstore.SealedKeys{Pool: a.Log.Pool, KEK: kek}
	key, err := shared.SharedSecret(ctx, eventstore.KeyPurposeSIEM, "key", func() ([]byte, error) {
		if _, err := os.Stat(own); err == nil {
			a.log.Info("moving the data dir's SIEM secrets key into the database", "file", own)
			return datadir.KeyFile(own, 32)
		}
		return randomKey()
	})
	if err != nil {
		return nil, fmt.Errorf("siem secrets key: %w", err)
	}
	return siem.NewSecrets(key)
}

func randomKey() ([]byte, error) {
	b := make([]byte, 32)
	_, err := rand.Read(b)
	return b, err
}

// importKeys seals the keys of dir that to lacks into it.
func importKeys(ctx context.Context, dir eventstore.KeyDir, to *eventstore.SealedKeys, log *slog.Logger) error {
	ids, err := dir.IDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := to.Load(ctx, id); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		key, err := dir.Load(ctx, id)
		if err != nil {
			return err
		}
		if err := to.Import(ctx, key); err != nil {
			return err
		}
		log.Info("moved a key of the data dir into the database", "purpose", to.Purpose, "key_id", id)
	}
	return nil
}
