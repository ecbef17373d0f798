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
// with the log key of dataDir (harmless to repeat).
func InitLog(ctx context.Context, url, dataDir string) (InitResult, error) {
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
	key, err := LogKeyForInit(ctx, LogKeys(dataDir), pool)
	if err != nil {
		return InitResult{}, err
	}
	res, err := eventstore.Init(ctx, pool, key, time.Now())
	if err != nil {
		return InitResult{}, err
	}
	return InitResult{SchemaVersion: st.Version, InitResult: res}, nil
}

// LogKeyForInit picks the key for the log: the one in force for an existing log, the only key in
// keys for a new one, or a fresh key.
func LogKeyForInit(ctx context.Context, keys eventstore.KeyDir, pool *pgxpool.Pool) (*eventstore.SigningKey, error) {
	inForce, err := eventstore.LogKeyID(ctx, pool)
	if err != nil {
		return nil, err
	}
	if inForce != "" {
		k, err := keys.Load(ctx, inForce)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: the log's key in force is %s but %s does not hold it: give the --data-dir this log was started with; "+
				"to start over with a new log instead, drop this one with `tunnelplane db reset` (it asks first) or use another --database-url",
				eventstore.ErrKeyMismatch, inForce, keys)
		}
		return k, err
	}
	ids, err := keys.IDs()
	if err != nil {
		return nil, err
	}
	switch len(ids) {
	case 0:
		return keys.Create()
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
	// Personal seals personal data before the store signs it, opens it for readers and erases
	// subjects (its KEK is SubjectKEK of the data dir).
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
// checkpoint dataDir remembers (CheckpointFile), makes sure the log has its genesis record (as
// InitLog does) and starts a store that signs with the log key of dataDir.
func OpenLog(ctx context.Context, url, dataDir string, maxConns int, log *slog.Logger) (*Log, error) {
	if err := migrations.Up(ctx, url); err != nil {
		return nil, err
	}
	pool, err := eventstore.Connect(ctx, url, eventstore.ConnectOptions{MaxConns: int32(maxConns), ApplicationName: "tunnelplane-control"})
	if err != nil {
		return nil, err
	}
	h := &Log{URL: url, Pool: pool}
	keys := LogKeys(dataDir)
	h.memory, err = checkRemembered(ctx, pool, CheckpointFile(dataDir), log)
	var key *eventstore.SigningKey
	if err == nil {
		key, err = LogKeyForInit(ctx, keys, pool)
	}
	if err == nil {
		_, err = eventstore.Init(ctx, pool, key, time.Now())
	}
	var reg *eventstore.Registry
	if err == nil {
		reg, err = DomainRegistry()
	}
	if err == nil {
		h.Personal, err = OpenKeyring(dataDir, pool)
	}
	if err == nil {
		h.Store, err = eventstore.New(eventstore.Config{Pool: pool, Key: key, KeySource: keys.Load, Registry: reg, Logger: log, Seal: h.Personal.SealEvent})
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

// OpenKeyring is the subjects' keyring of a data dir's KEK (made when missing) over pool.
func OpenKeyring(dataDir string, pool *pgxpool.Pool) (*pii.Keyring, error) {
	kek, err := pii.LoadKEKFile(SubjectKEK(dataDir))
	if err != nil {
		return nil, err
	}
	return pii.New(pii.Config{Pool: pool, KEK: kek})
}

// RememberCheckpoint writes the log's newest checkpoint to the data dir (CheckpointFile) when it
// is newer than the one there, so that the next OpenLog refuses a log rolled back below it.
func (h *Log) RememberCheckpoint(ctx context.Context) error { return h.memory.remember(ctx, h.Pool) }
