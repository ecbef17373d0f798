package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// eventType is the one event type the bench appends.
const eventType = "bench.token_streamed"

// measure runs op from w goroutines for d and returns events per second.
func measure(ctx context.Context, w int, d time.Duration, op func(ctx context.Context, writer, i int) (int, error)) (float64, error) {
	var total atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for writer := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				n, err := op(ctx, writer, i)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				total.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	return float64(total.Load()) / time.Since(start).Seconds(), nil
}

var rawColumns = []string{
	"global_position", "stream_id", "stream_version", "event_id", "type", "schema_version",
	"recorded_at", "payload", "metadata", "payload_json", "metadata_json",
	"prev_hash", "hash", "key_id", "signature", "signature_proof",
}

// rawInsert is the baseline: batch rows shaped like the log's, copied in one transaction.
func rawInsert(ctx context.Context, pool *pgxpool.Pool, pos *atomic.Int64, writer, batch int) error {
	rows := make([][]any, batch)
	first := pos.Add(int64(batch)) - int64(batch)
	now := time.Now().UTC()
	meta := metadata()
	// The proof of a record in a batch of this size: index, count, log2(batch) hashes.
	proof := randomBytes(12 + 32*bits.Len(uint(batch-1)))
	for i := range rows {
		p := first + int64(i)
		rows[i] = []any{p, fmt.Sprintf("raw-%d-%d", writer, p), int64(1), uuid.New(), eventType, int32(1),
			now, payload(int(p)), meta, payload(int(p)), meta, randomBytes(32), randomBytes(32), "ed25519:0123456789abcdef", randomBytes(64), proof}
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"bench_raw"}, rawColumns, pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// payload looks like a streamed-usage event: ~160 bytes of JSON.
func payload(i int) []byte {
	return fmt.Appendf(nil, `{"tunnel_id":"0193f2a4-7c1e-7d3a-9b2e-%012d","window_start":"2026-11-27T01:00:00Z","requests":%d,"bytes_in":%d,"bytes_out":%d}`,
		i, i%1000, i*17, i*131)
}

func metadata() []byte {
	return []byte(`{"actor":"node:n1","correlation_id":"0193f2a4-7c1e-7d3a-9b2e-8f0e6c1d2a3b","request_id":"req-42"}`)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
