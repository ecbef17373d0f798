package eventstore

import (
	"context"
	"fmt"
	"math"
	"strings"
)

// ReadTypes is ReadType for several types at once, in position order: one pass over the log
// instead of one per type (the log has no index by type).
func (s *Store) ReadTypes(ctx context.Context, types []string, from, upTo uint64, limit int) ([]Record, error) {
	if limit <= 0 {
		limit = 1000
	}
	if upTo > math.MaxInt64 {
		upTo = math.MaxInt64
	}
	rows, err := s.pool.Query(ctx, selectRecord+` WHERE type = ANY($1) AND global_position >= $2 AND global_position <= $3 ORDER BY global_position LIMIT $4`,
		types, int64(from), int64(upTo), limit)
	if err != nil {
		return nil, fmt.Errorf("read %s from %d: %w", strings.Join(types, ", "), from, classify(err))
	}
	recs, err := scanRecords(rows, s.registry, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s from %d: %w", strings.Join(types, ", "), from, err)
	}
	return recs, nil
}
