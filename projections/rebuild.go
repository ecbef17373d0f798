package projections

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ErrRebuildRunning: another rebuild of the projection is in progress.
var ErrRebuildRunning = errors.New("a rebuild of this projection is already running")

// RebuildProgress reports a running rebuild.
type RebuildProgress struct {
	Applied uint64
	Head    uint64
}

// Rebuild replays the whole log into a fresh generation of the projection's tables and swaps it
// in atomically: readers see the old generation until the swap and the new one after it, with no
// moment without data. The live runner (in this or another process) keeps going meanwhile.
func (r *Runner) Rebuild(ctx context.Context, name string, progress func(RebuildProgress)) (Status, error) {
	p, ok := r.byName[name]
	if !ok {
		return Status{}, fmt.Errorf("rebuild: %w: %q", ErrUnknownProjection, name)
	}
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	defer conn.Release()
	h := fnv.New64a()
	h.Write([]byte("tunnelplane-rebuild:" + name))
	lockKey := int64(h.Sum64())
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey).Scan(&locked); err != nil {
		return Status{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	if !locked {
		return Status{}, fmt.Errorf("rebuild %s: %w", name, ErrRebuildRunning)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey)

	if _, err := r.pool.Exec(ctx, `INSERT INTO projection_state (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, name); err != nil {
		return Status{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	var gen int
	if err := r.pool.QueryRow(ctx, `UPDATE projection_state SET rebuilding = greatest(generation, coalesce(rebuilding, 0)) + 1,
		rebuild_position = -1 WHERE name = $1 RETURNING rebuilding`, name).Scan(&gen); err != nil {
		return Status{}, fmt.Errorf("rebuild %s: %w", name, err)
	}
	r.setState(name, func(s *runState) { s.rebuilding = true })
	defer r.setState(name, func(s *runState) { s.rebuilding = false })
	if err := deleteGeneration(ctx, r, p, gen); err != nil {
		return Status{}, err
	}

	// Catch up outside the lock, batch by batch.
	next := uint64(0)
	for {
		head, err := r.cfg.Store.Head(ctx)
		if err != nil {
			return Status{}, fmt.Errorf("rebuild %s: %w", name, err)
		}
		if head-next <= uint64(r.cfg.RebuildBatchSize) {
			break
		}
		recs, err := r.cfg.Store.ReadAll(ctx, next, r.cfg.RebuildBatchSize)
		if err != nil {
			return Status{}, fmt.Errorf("rebuild %s: %w", name, err)
		}
		if err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			if err := queueAll(ctx, tx, p, b, gen, recs); err != nil {
				return err
			}
			b.Queue(`UPDATE projection_state SET rebuild_position = $2 WHERE name = $1`, name, int64(recs[len(recs)-1].Position))
			return tx.SendBatch(ctx, b).Close()
		}); err != nil {
			return Status{}, fmt.Errorf("rebuild %s: %w", name, err)
		}
		next = recs[len(recs)-1].Position + 1
		if progress != nil {
			progress(RebuildProgress{Applied: next, Head: head})
		}
	}

	// Swap: with the state row locked (the live runner waits), apply the rest and switch.
	var oldGen int
	var last int64
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT generation FROM projection_state WHERE name = $1 FOR UPDATE`, name).Scan(&oldGen); err != nil {
			return err
		}
		last = int64(next) - 1
		for {
			recs, err := r.cfg.Store.ReadAll(ctx, next, r.cfg.RebuildBatchSize)
			if err != nil {
				return err
			}
			b := &pgx.Batch{}
			if err := queueAll(ctx, tx, p, b, gen, recs); err != nil {
				return err
			}
			if b.Len() > 0 {
				if err := tx.SendBatch(ctx, b).Close(); err != nil {
					return err
				}
			}
			if len(recs) > 0 {
				last = int64(recs[len(recs)-1].Position)
			}
			if len(recs) < r.cfg.RebuildBatchSize {
				break
			}
			next = recs[len(recs)-1].Position + 1
		}
		_, err := tx.Exec(ctx, `UPDATE projection_state SET generation = $2, position = greatest(position, $3), rebuilding = NULL,
			rebuild_position = NULL, last_error = NULL, updated_at = now() WHERE name = $1`, name, gen, last)
		return err
	})
	if err != nil {
		return Status{}, fmt.Errorf("rebuild %s: swap: %w", name, err)
	}
	r.setState(name, func(s *runState) {
		s.generation = gen
		s.position = max(s.position, last)
	})
	if progress != nil {
		progress(RebuildProgress{Applied: uint64(last + 1), Head: uint64(last + 1)})
	}
	if err := deleteGeneration(ctx, r, p, oldGen); err != nil {
		r.log.Warn("rebuild: old generation not deleted; it is invisible and harmless", "projection", name, "generation", oldGen, "error", err)
	}
	sts, err := r.Statuses(ctx)
	if err != nil {
		return Status{}, err
	}
	for _, s := range sts {
		if s.Name == name {
			return s, nil
		}
	}
	return Status{}, fmt.Errorf("rebuild %s: %w", name, eventstore.ErrClosed)
}

func deleteGeneration(ctx context.Context, r *Runner, p Projection, gen int) error {
	for _, t := range p.Tables() {
		if _, err := r.pool.Exec(ctx, `DELETE FROM `+pgx.Identifier{t}.Sanitize()+` WHERE generation = $1`, gen); err != nil {
			return fmt.Errorf("rebuild %s: clear %s generation %d: %w", p.Name(), t, gen, err)
		}
	}
	return nil
}

// queueAll queues the statements of the records p handles.
func queueAll(ctx context.Context, tx pgx.Tx, p Projection, b *pgx.Batch, gen int, recs []eventstore.Record) error {
	var todo []eventstore.Record
	for _, rec := range recs {
		if folds(p, rec) {
			todo = append(todo, rec)
		}
	}
	return applyRecords(ctx, tx, p, b, gen, todo)
}

// applyRecords queues the statements of records p folds: all at once for a BatchApplier.
func applyRecords(ctx context.Context, tx pgx.Tx, p Projection, b *pgx.Batch, gen int, recs []eventstore.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if ba, ok := p.(BatchApplier); ok {
		if err := ba.ApplyBatch(ctx, tx, b, gen, recs); err != nil {
			return fmt.Errorf("positions %d..%d: %w", recs[0].Position, recs[len(recs)-1].Position, err)
		}
		return nil
	}
	for _, rec := range recs {
		if err := p.Apply(ctx, b, gen, rec); err != nil {
			return fmt.Errorf("position %d (%s): %w", rec.Position, rec.Type, err)
		}
	}
	return nil
}
