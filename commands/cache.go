package commands

import (
	"context"
	"errors"
	"sync"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// streamCache keeps the events of recently used aggregates, so a command on a hot aggregate
// decides without reading its stream again. It is optimistic: every append names the version it
// decided on, so a stale entry (another process wrote since) makes the append fail with a
// conflict, which forgets the entry; unpinned commands then retry with a fresh read. Streams
// without events are never cached (existence checks always read).
type streamCache struct {
	mu  sync.Mutex
	m   map[string][]domain.Recorded
	max int
}

func newStreamCache(max int) *streamCache {
	return &streamCache{m: map[string][]domain.Recorded{}, max: max}
}

func (c *streamCache) get(stream string) ([]domain.Recorded, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	recs, ok := c.m[stream]
	return recs, ok
}

func (c *streamCache) put(stream string, recs []domain.Recorded) {
	if len(recs) == 0 || c.max < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m) // crude but bounded; the cache only saves reads
	}
	c.m[stream] = recs
}

func (c *streamCache) forget(stream string) {
	c.mu.Lock()
	delete(c.m, stream)
	c.mu.Unlock()
}

// appended extends a cached stream with events just written at versions up to version; if the
// cache does not hold exactly the version before them, the entry is dropped instead.
func (c *streamCache) appended(stream string, version uint64, evs []eventstore.EventData, res eventstore.AppendResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	recs, ok := c.m[stream]
	if !ok {
		if version != uint64(len(evs)) || c.max < 0 {
			return
		}
		// A new stream: these events are all of it.
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	if uint64(len(recs)) != version-uint64(len(evs)) || (len(recs) > 0 && recs[len(recs)-1].StreamVersion != version-uint64(len(evs))) {
		delete(c.m, stream)
		return
	}
	next := make([]domain.Recorded, len(recs), len(recs)+len(evs))
	copy(next, recs)
	for i, e := range evs {
		next = append(next, domain.Recorded{Type: e.Type, Payload: e.Payload, StreamVersion: version - uint64(len(evs)) + uint64(i) + 1, RecordedAt: res.RecordedAt})
	}
	c.m[stream] = next
}

// appendMulti appends through the store and keeps the cache in step: written streams are
// extended, a stream that turned out to be stale is forgotten.
func (s *Service) appendMulti(ctx context.Context, then func([]eventstore.AppendResult) eventstore.Statement, appends ...eventstore.StreamAppend) ([]eventstore.AppendResult, error) {
	res, err := s.store.AppendMultiThen(ctx, then, appends...)
	if err != nil {
		s.forgetStale(err)
		for _, a := range appends {
			s.cache.forget(a.StreamID) // outcome unknown or refused: read afresh next time
		}
		return nil, err
	}
	for i, a := range appends {
		s.cache.appended(a.StreamID, res[i].StreamVersion, a.Events, res[i])
	}
	return res, nil
}

func (s *Service) forgetStale(err error) {
	var wrong *eventstore.WrongExpectedVersionError
	if errors.As(err, &wrong) {
		s.cache.forget(wrong.StreamID)
	}
}
