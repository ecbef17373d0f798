package eventstore

import (
	"context"
	"errors"
	"slices"
	"time"
)

// ReadTypesBelow returns every record of the given types at positions below upTo, in log order: what
// a process manager folds at start before it follows the log (FollowTypes from upTo). One pass over
// the log, a page at a time (ReadTypes).
func (s *Store) ReadTypesBelow(ctx context.Context, types []string, upTo uint64) ([]Record, error) {
	if upTo == 0 || len(types) == 0 {
		return nil, nil
	}
	const page = 1000
	var recs []Record
	for from := uint64(0); ; {
		batch, err := s.ReadTypes(ctx, types, from, upTo-1, page)
		if err != nil {
			return nil, err
		}
		recs = append(recs, batch...)
		if len(batch) < page {
			return recs, nil
		}
		from = batch[len(batch)-1].Position + 1
	}
}

// ReadAndFollow is a process manager's start: it folds every record of the given types the log
// holds now, then returns the loop that folds those committed later (FollowTypes), for the caller
// to run on a goroutine of its own lifecycle.
func (s *Store) ReadAndFollow(ctx context.Context, types []string, retry time.Duration, onRetry func(err error, from uint64),
	fold func([]Record) error) (follow func(context.Context), err error) {
	head, err := s.Head(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := s.ReadTypesBelow(ctx, types, head)
	if err != nil {
		return nil, err
	}
	if err := fold(recs); err != nil {
		return nil, err
	}
	return func(ctx context.Context) { s.FollowTypes(ctx, head, types, retry, onRetry, fold) }, nil
}

// FollowTypes hands fold the records of the given types from position from on, in log order, a
// batch at a time (possibly empty), as they commit. It returns when ctx ends or the store stops;
// any other failure (of the subscription, or of fold, whose batch is then passed over) is
// reported to onRetry and the log is followed again after retry.
func (s *Store) FollowTypes(ctx context.Context, from uint64, types []string, retry time.Duration, onRetry func(err error, from uint64),
	fold func([]Record) error) {
	for ctx.Err() == nil {
		err := s.Subscribe(ctx, from, SubscribeOptions{}, func(_ context.Context, recs []Record) error {
			var mine []Record
			for _, r := range recs {
				if slices.Contains(types, r.Type) {
					mine = append(mine, r)
				}
			}
			from = recs[len(recs)-1].Position + 1
			return fold(mine)
		})
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return
		}
		onRetry(err, from)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
