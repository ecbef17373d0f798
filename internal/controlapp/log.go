package controlapp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/compliance/pii"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/migrations"
)

// LogKeys is where the control plane's log signing keys live under a data dir.
func LogKeys(dataDir string) eventstore.KeyDir {
	return eventstore.KeyDir(filepath.Join(dataDir, "keys", "log"))
}

// TokenKeys is where the control plane's token signing keys live under a data dir.
func TokenKeys(dataDir string) eventstore.KeyDir {
	return eventstore.KeyDir(filepath.Join(dataDir, "keys", "token"))
}

// SubjectKEK is the key-encryption key of the subjects' data keys under a data dir (compliance/pii).
func SubjectKEK(dataDir string) string { return filepath.Join(dataDir, "keys", "subjects.kek") }

// DomainRegistry is the store's type registry with every domain event type.
func DomainRegistry() (*eventstore.Registry, error) {
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	return eventstore.NewRegistry(types...)
}

// InitResult is what InitLog did.
type InitResult struct {
	SchemaVersion uint
	eventstore.InitResult
}

// InitLog migrates the database at url and makes sure the log has its genesis record, signed
// with the log key of keys (harmless to repeat).
func InitLog(ctx context.Context, url string, keys Keys) (InitResult, error) {
	if err := migrations.Up(ctx, url); err != nil {
		return InitResult{}, err
	}
	st, err := migrations.Version(ctx, url)
	if err != nil {
		return InitResult{}, err
	}
	pool, err := eventstore.Connect(ctx, url, eventstore.ConnectOptions{})
	if err != nil {
		return InitResult{}, err
	}
	defer pool.Close()
	stores, err := keys.open(ctx, pool, slog.New(slog.DiscardHandler))
	if err != nil {
		return InitResult{}, err
	}
	res, _, err := initLog(ctx, pool, stores.log)
	if err != nil {
		return InitResult{}, err
	}
	return InitResult{SchemaVersion: st.Version, InitResult: res}, nil
}

// initLogLock is the advisory lock around choosing the log key and writing the genesis record:
// replicas starting together on an empty database agree on one key.
const initLogLock = 0x74704c6f67496e69 // "tpLogIni"

// initLog makes sure the log has its genesis record and returns the key in force.
func initLog(ctx context.Context, pool *pgxpool.Pool, keys eventstore.KeyStore) (res eventstore.InitResult, key *eventstore.SigningKey, err error) {
	err = underInitLock(ctx, pool, func() error {
		if key, err = LogKeyForInit(ctx, keys, pool); err == nil {
			res, err = eventstore.Init(ctx, pool, key, time.Now())
		}
		return err
	})
	return res, key, err
}

// underInitLock runs f holding the advisory lock of the log's setup (its key, the genesis
// record, the first token key): replicas starting together agree on one of each.
func underInitLock(ctx context.Context, pool *pgxpool.Pool, f func() error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(initLogLock)); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(initLogLock))
	return f()
}

func (h *Log) underInitLock(ctx context.Context, f func() error) error {
	return underInitLock(ctx, h.Pool, f)
}

// LogKeyForInit picks the key for the log: the one in force for an existing log, the only key in
// keys for a new one, or a fresh key.
func LogKeyForInit(ctx context.Context, keys eventstore.KeyStore, pool *pgxpool.Pool) (*eventstore.SigningKey, error) {
	inForce, err := eventstore.LogKeyID(ctx, pool)
	if err != nil {
		return nil, err
	}
	if inForce != "" {
		k, err := keys.Load(ctx, inForce)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: the log's key in force is %s but %s does not hold it: give the --data-dir (or --key-encryption-key-file) this log was started with; "+
				"to start over with a new log instead, drop this one with `tunnelplane db reset` (it asks first) or use another --database-url",
				eventstore.ErrKeyMismatch, inForce, keys)
		}
		return k, err
	}
	ids, err := keys.KeyIDs(ctx)
	if err != nil {
		return nil, err
	}
	switch len(ids) {
	case 0:
		return keys.CreateKey(ctx)
	case 1:
		return keys.Load(ctx, ids[0])
	default:
		return nil, fmt.Errorf("%s holds %d keys and the log is empty: keep only the one to start the log with", keys, len(ids))
	}
}

// Log is an open, initialised event log: the database, the pool (as the app role) and a started
// store signing with the log key in force.
type Log struct {
	URL   string
	Pool  *pgxpool.Pool
	Store *eventstore.Store
	// LogKeys and TokenKeys hold the private keys (Keys says where).
	LogKeys, TokenKeys eventstore.KeyStore
	keys               keyStores
	// Personal seals personal data before the store signs it, opens it for readers and erases
	// subjects (its KEK is SubjectKEK of the data dir, or the replicas' shared one).
	Personal *pii.Keyring

	memory *checkpointMemory // the newest checkpoint the data dir saw
}

// Close stops the store and closes the pool.
func (h *Log) Close() {
	if h.Store != nil {
		h.Store.Stop()
	}
	if h.Pool != nil {
		h.Pool.Close()
	}
}

// OpenLog applies migrations to the database at url, refuses a log that does not extend the
// checkpoint the data dir remembers (CheckpointFile), makes sure the log has its genesis record
// (as InitLog does) and starts a store that signs with the log key of keys.
func OpenLog(ctx context.Context, url string, keys Keys, maxConns int, log *slog.Logger) (*Log, error) {
	if err := migrations.Up(ctx, url); err != nil {
		return nil, err
	}
	pool, err := eventstore.Connect(ctx, url, eventstore.ConnectOptions{MaxConns: int32(maxConns), ApplicationName: "tunnelplane-control"})
	if err != nil {
		return nil, err
	}
	h := &Log{URL: url, Pool: pool}
	h.memory, err = checkRemembered(ctx, pool, CheckpointFile(keys.DataDir), log)
	var subjects *pii.FileKEK
	if err == nil {
		h.keys, err = keys.open(ctx, pool, log)
	}
	if err == nil {
		h.LogKeys, h.TokenKeys = h.keys.log, h.keys.token
		subjects, err = h.keys.subjectsKEK(ctx, keys.DataDir, log)
	}
	var key *eventstore.SigningKey
	if err == nil {
		_, key, err = initLog(ctx, pool, h.LogKeys)
	}
	var reg *eventstore.Registry
	if err == nil {
		reg, err = DomainRegistry()
	}
	if err == nil {
		h.Personal, err = pii.New(pii.Config{Pool: pool, KEK: subjects})
	}
	if err == nil {
		h.Store, err = eventstore.New(eventstore.Config{Pool: pool, Key: key, KeySource: h.LogKeys.Load, Registry: reg, Logger: log, Seal: h.Personal.SealEvent})
	}
	if err == nil {
		err = h.Store.Start(ctx)
	}
	if err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// RememberCheckpoint writes the log's newest checkpoint to the data dir (CheckpointFile) when it
// is newer than the one there, so that the next OpenLog refuses a log rolled back below it.
func (h *Log) RememberCheckpoint(ctx context.Context) error { return h.memory.remember(ctx, h.Pool) }
