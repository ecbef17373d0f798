package eventstore

import (
	"context"
	"errors"
	"slices"
	"sort"
	"time"
)

// ReadTypesBelow returns every record of the given types at positions below upTo, in log order: what
// a process manager folds at start before it follows the log (FollowTypes from upTo).
func (s *Store) ReadTypesBelow(ctx context.Context, types []string, upTo uint64) ([]Record, error) {
	if upTo == 0 {
		return nil, nil
	}
	const page = 1000
	var recs []Record
	for _, typ := range types {
		for from := uint64(0); ; {
			batch, err := s.ReadType(ctx, typ, from, upTo-1, page)
			if err != nil {
				return nil, err
			}
			recs = append(recs, batch...)
			if len(batch) < page {
				break
			}
			from = batch[len(batch)-1].Position + 1
		}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Position < recs[j].Position })
	return recs, nil
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
