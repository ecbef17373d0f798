package commands

import (
	"context"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// decision is what a handler decided on one attempt: the events to append, per stream, each at
// the stream version the decision was made on.
type decision struct {
	// id is the aggregate the command created or changed (Result.ID).
	id string
	// appends go to the store in one atomic append. The first is the aggregate's own stream: its
	// version after the append is Result.Version. None: the state already is as asked.
	appends []streamEvents
	// version is the aggregate's current version, reported when there is nothing to append.
	version uint64
	// withKeyEvent, when set, writes the appends in one transaction with a key event of the log
	// (a node's event key added or revoked) instead of an ordinary append.
	withKeyEvent func(ctx context.Context, appends ...eventstore.StreamAppend) (eventstore.AppendResult, error)
}

// streamEvents are events for one stream, decided at its version (0: a new stream).
type streamEvents struct {
	stream  string
	version uint64
	events  []domain.Event
}

// changed decides evs on stream, read at version, for the aggregate id.
func changed(id, stream string, version uint64, evs ...domain.Event) decision {
	return decision{id: id, appends: []streamEvents{{stream: stream, version: version, events: evs}}}
}

// unchanged decides that nothing is to be done: the aggregate id already is as asked.
func unchanged(id string, version uint64) decision {
	return decision{id: id, version: version}
}

// and adds events for another stream, appended atomically with the others.
func (d decision) and(stream string, version uint64, evs ...domain.Event) decision {
	d.appends = append(d.appends, streamEvents{stream: stream, version: version, events: evs})
	return d
}

// conflictPolicy is what a command does when a concurrent change beat its append.
type conflictPolicy int

const (
	// failOnConflict reports domain.ErrConflict: the caller pinned a version, or the command
	// creates streams that must not exist yet.
	failOnConflict conflictPolicy = iota
	// retryOnConflict decides again on a fresh read, at most Config.MaxConflictRetries times.
	retryOnConflict
)

// retryUnlessPinned: a caller who pinned a version (If-Match) wants a conflict, not a retry.
func retryUnlessPinned(expected *uint64) conflictPolicy {
	if expected != nil {
		return failOnConflict
	}
	return retryOnConflict
}

// decideAndAppend is the skeleton every handler shares. decide loads what the command needs
// (s.load: from the cache when it holds the stream), rehydrates and lets the domain decide; a
// refusal (its error) appends nothing and is returned as it is. The decided events become event
// data with ids from g and the command's metadata, and are appended to all their streams at once,
// each expecting the version it was decided on. A concurrent change forgets the stale stream and,
// under retryOnConflict, runs decide again; otherwise it is a domain.ErrConflict.
func (s *Service) decideAndAppend(ctx context.Context, g *idGen, meta []byte, policy conflictPolicy, decide func() (decision, error)) (Result, error) {
	return s.retryConflicts(ctx, policy != retryOnConflict, func() (Result, error) {
		d, err := decide()
		if err != nil {
			return Result{}, err
		}
		if len(d.appends) == 0 {
			return Result{ID: d.id, Version: d.version, Noop: true}, nil
		}
		// Ids are drawn stream by stream, in order: with an idempotency key they are derived from
		// it, and a repeated request makes the same ids (which the log recognises) only in the
		// same order.
		appends := make([]eventstore.StreamAppend, len(d.appends))
		for i, a := range d.appends {
			evs, err := events(g, meta, a.events...)
			if err != nil {
				return Result{}, err
			}
			appends[i] = eventstore.StreamAppend{StreamID: a.stream, Expected: eventstore.Exact(a.version), Events: evs}
		}
		if d.withKeyEvent != nil {
			// The store's key calls bypass appendMulti, so the cache does not see the write.
			defer func() {
				for _, a := range appends {
					s.cache.forget(a.StreamID)
				}
			}()
			res, err := d.withKeyEvent(ctx, appends...)
			if err != nil {
				return Result{}, err
			}
			own := d.appends[0]
			return Result{ID: d.id, Position: res.LastPosition, Version: own.version + uint64(len(own.events))}, nil
		}
		result := func(res []eventstore.AppendResult) Result {
			return Result{ID: d.id, Position: res[len(res)-1].LastPosition, Version: res[0].StreamVersion}
		}
		// With an idempotency claim, its result is recorded in the events' transaction.
		res, err := s.appendMulti(ctx, recordWith(ctx, result), appends...)
		if err != nil {
			return Result{}, err
		}
		return result(res), nil
	})
}

// appendAtEnd appends ev to the end of stream, whatever it holds (a history of settings, of
// erasures): decided at the stream's version, retried when another append came first.
func (s *Service) appendAtEnd(ctx context.Context, g *idGen, meta []byte, id, stream string, ev domain.Event) (Result, error) {
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		recs, err := s.load(ctx, stream)
		if err != nil {
			return decision{}, err
		}
		var version uint64
		if n := len(recs); n > 0 {
			version = recs[n-1].StreamVersion
		}
		return changed(id, stream, version, ev), nil
	})
}
