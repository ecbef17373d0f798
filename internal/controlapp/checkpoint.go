package controlapp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// rememberEvery is how often a running control plane writes the newest checkpoint to its data
// dir (when the log grew). A rollback within this window before a crash goes unnoticed at start.
const rememberEvery = time.Second

// CheckpointFile is where a data dir keeps the newest checkpoint its control plane saw: the
// signed note as GET /api/v1/log serves it. It lives outside the database, so that a log rolled
// back or rewritten inside it (by a database superuser, or from an old backup) is refused at
// start instead of served.
func CheckpointFile(dataDir string) string { return filepath.Join(dataDir, "log", "checkpoint") }

// checkpointMemory keeps CheckpointFile current. It only ever moves forward.
type checkpointMemory struct {
	path string
	mu   sync.Mutex
	size uint64 // size of the checkpoint in the file; 0 for none
}

// checkRemembered refuses a log that does not extend the checkpoint the data dir remembers: one
// with fewer records, or one whose first records hash differently. Without a remembered checkpoint
// (a new data dir) there is nothing to check; another log (another origin: the data dir used
// with a new database) is not compared either, and the file then follows that log.
func checkRemembered(ctx context.Context, pool *pgxpool.Pool, path string, log *slog.Logger) (*checkpointMemory, error) {
	m := &checkpointMemory{path: path}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remembered checkpoint: %w", err)
	}
	cp, err := eventstore.ParseCheckpoint(string(raw))
	if err != nil {
		return nil, fmt.Errorf("remembered checkpoint %s: %w", path, err)
	}
	remedy := fmt.Sprintf("restore the database from a backup that holds those records; if the log was replaced on purpose, delete %s", path)
	var origin string
	if err := pool.QueryRow(ctx, `SELECT origin FROM log_head`).Scan(&origin); err != nil {
		return nil, fmt.Errorf("remembered checkpoint: read the log's origin: %w", err)
	}
	if origin != cp.Origin {
		if log == nil {
			log = slog.Default()
		}
		log.Warn("the data dir remembers a checkpoint of another log; it now follows this one", "remembered_origin", cp.Origin,
			"remembered_size", cp.Size, "origin", origin, "file", path)
		return m, nil
	}
	if _, err := eventstore.CheckConsistency(ctx, pool, cp.Size, cp.Root); err != nil {
		if errors.Is(err, eventstore.ErrInconsistent) {
			return nil, fmt.Errorf("refusing to serve a log that does not extend the checkpoint this data dir saw last (size %d, root %x, in %s): %w; %s",
				cp.Size, cp.Root, path, err, remedy)
		}
		return nil, fmt.Errorf("remembered checkpoint: %w", err)
	}
	m.size = cp.Size
	return m, nil
}

// remember writes the log's checkpoint at its head when it is newer than the remembered one.
func (m *checkpointMemory) remember(ctx context.Context, pool *pgxpool.Pool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var size int64
	var note string
	err := pool.QueryRow(ctx, `SELECT c.size, c.note FROM checkpoints c, log_head h WHERE c.size = h.next_position`).Scan(&size, &note)
	if err != nil {
		return fmt.Errorf("remember checkpoint: %w", err)
	}
	if uint64(size) <= m.size {
		return nil
	}
	if err := writeFileAtomic(m.path, []byte(note)); err != nil {
		return fmt.Errorf("remember checkpoint: %w", err)
	}
	m.size = uint64(size)
	return nil
}

// writeFileAtomic replaces path with data: a crash leaves the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".checkpoint-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing left to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
