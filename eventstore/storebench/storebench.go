// Package storebench measures the event store against its baseline in one run: a raw batched
// insert of rows of the same shape into a table with the same indexes but no signing, hashing or
// ordering, and signed appends through eventstore.Store, at several batch sizes and writer
// counts; then read and verify throughput over the log it wrote. It owns a scratch database for
// the run and drops it afterwards.
package storebench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/migrations"
)

// Options configures a run.
type Options struct {
	// AdminURL points at the server's maintenance database; the scratch database is made there.
	AdminURL string
	// Duration of each measurement. Default 2s.
	Duration time.Duration
	// Rounds repeats every measurement; medians are reported. Default 3.
	Rounds int
	// BatchSizes and Writers span the configurations. Defaults {1,16,256} and {1,16}.
	BatchSizes []int
	Writers    []int
	// Progress receives one line per finished measurement (nil: silent).
	Progress io.Writer
	Logger   *slog.Logger
}

func (o *Options) defaults() {
	if o.Duration <= 0 {
		o.Duration = 2 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if len(o.BatchSizes) == 0 {
		o.BatchSizes = []int{1, 16, 256}
	}
	if len(o.Writers) == 0 {
		o.Writers = []int{1, 16}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Config is one measured configuration.
type Config struct {
	Batch     int     `json:"batch"`
	Writers   int     `json:"writers"`
	RawEPS    float64 `json:"raw_insert_eps"`
	AppendEPS float64 `json:"append_eps"`
	Ratio     float64 `json:"ratio"`
}

// Result is the outcome of a run. Rates are medians over rounds, in events per second.
type Result struct {
	Configs []Config `json:"configs"`
	// The best append configuration, its baseline at the same batch size and writers, and the ratio.
	BestBatch    int     `json:"best_batch"`
	BestWriters  int     `json:"best_writers"`
	RawInsertEPS float64 `json:"raw_insert_eps"`
	AppendEPS    float64 `json:"append_eps"`
	Ratio        float64 `json:"ratio"`
	MinRatio     float64 `json:"min_ratio"`
	ReadEPS      float64 `json:"read_eps"`
	VerifyEPS    float64 `json:"verify_eps"`
	LogEvents    uint64  `json:"log_events"`
	Checkpoints  int     `json:"checkpoints"`
	Baseline     string  `json:"baseline"`
	DurationS    float64 `json:"duration_s"`
	Rounds       int     `json:"rounds"`
}

// Run performs the whole benchmark.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts.defaults()
	started := time.Now()
	dbURL, drop, err := ScratchDatabase(ctx, opts.AdminURL, "tunnelplane_bench")
	if err != nil {
		return nil, err
	}
	defer drop()
	if err := migrations.Up(ctx, dbURL); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	pool, err := eventstore.Connect(ctx, dbURL, eventstore.ConnectOptions{Role: "-", MaxConns: 20, ApplicationName: "tunnelplane-bench"})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer pool.Close()
	// Same columns and indexes as the log, without its triggers.
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_raw (LIKE events INCLUDING ALL)`); err != nil {
		return nil, fmt.Errorf("bench: create baseline table: %w", err)
	}
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	reg := eventstore.MustRegistry(eventstore.EventType{Name: "bench.token_streamed", SchemaVersion: 1})
	store, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, Registry: reg, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	if err := store.Start(ctx); err != nil {
		return nil, err
	}
	defer store.Stop()

	res := &Result{Rounds: opts.Rounds, Baseline: "COPY of the same rows into a table with the same indexes, one transaction per batch, no signing, hashing or position ordering"}
	var pos atomic.Int64
	pos.Store(1 << 40) // the baseline table's own position space
	for _, b := range opts.BatchSizes {
		for _, w := range opts.Writers {
			var raws, apps []float64
			for r := range opts.Rounds {
				raw, err := measure(ctx, w, opts.Duration, func(ctx context.Context, writer, i int) (int, error) {
					return b, rawInsert(ctx, pool, &pos, writer, b)
				})
				if err != nil {
					return nil, fmt.Errorf("bench: raw insert batch %d writers %d: %w", b, w, err)
				}
				versions := make([]uint64, w)
				app, err := measure(ctx, w, opts.Duration, func(ctx context.Context, writer, i int) (int, error) {
					events := make([]eventstore.EventData, b)
					for j := range events {
						events[j] = eventstore.EventData{Type: "bench.token_streamed", Payload: payload(i*b + j), Metadata: metadata()}
					}
					stream := fmt.Sprintf("bench-b%d-w%d-%d-%d", b, w, r, writer)
					res, err := store.Append(ctx, stream, eventstore.Exact(versions[writer]), events...)
					if err != nil {
						return 0, err
					}
					versions[writer] = res.StreamVersion
					return b, nil
				})
				if err != nil {
					return nil, fmt.Errorf("bench: append batch %d writers %d: %w", b, w, err)
				}
				raws, apps = append(raws, raw), append(apps, app)
				fmt.Fprintf(opts.Progress, "batch %3d writers %2d round %d: raw %9.0f ev/s  append %9.0f ev/s  ratio %.2f\n", b, w, r+1, raw, app, app/raw)
			}
			c := Config{Batch: b, Writers: w, RawEPS: median(raws), AppendEPS: median(apps)}
			c.Ratio = round2(c.AppendEPS / c.RawEPS)
			res.Configs = append(res.Configs, c)
		}
	}
	res.MinRatio = 1e9
	for _, c := range res.Configs {
		if c.AppendEPS > res.AppendEPS {
			res.AppendEPS, res.RawInsertEPS, res.Ratio, res.BestBatch, res.BestWriters = c.AppendEPS, c.RawEPS, c.Ratio, c.Batch, c.Writers
		}
		res.MinRatio = min(res.MinRatio, c.Ratio)
	}

	// Read: the whole log in pages, as a catching-up subscriber does.
	head, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	readStart := time.Now()
	var n uint64
	for n < head {
		recs, err := store.ReadAll(ctx, n, 5000)
		if err != nil {
			return nil, fmt.Errorf("bench: read: %w", err)
		}
		n += uint64(len(recs))
	}
	res.ReadEPS = float64(n) / time.Since(readStart).Seconds()
	fmt.Fprintf(opts.Progress, "read %d events: %.0f ev/s\n", n, res.ReadEPS)

	rep, err := eventstore.Verify(ctx, pool, eventstore.VerifyOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench: verify: %w", err)
	}
	if !rep.OK() {
		return nil, fmt.Errorf("bench: the log it wrote does not verify: %v", rep.Failure)
	}
	res.VerifyEPS, res.LogEvents, res.Checkpoints = rep.PerSecond, rep.Count, rep.Checkpoints
	fmt.Fprintf(opts.Progress, "verify %d events, %d checkpoints: %.0f ev/s\n", rep.Count, rep.Checkpoints, rep.PerSecond)
	res.DurationS = round2(time.Since(started).Seconds())
	res.ReadEPS, res.AppendEPS, res.RawInsertEPS = float64(int64(res.ReadEPS)), float64(int64(res.AppendEPS)), float64(int64(res.RawInsertEPS))
	return res, nil
}

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

func rawInsert(ctx context.Context, pool *pgxpool.Pool, pos *atomic.Int64, writer, batch int) error {
	rows := make([][]any, batch)
	first := pos.Add(int64(batch)) - int64(batch)
	now := time.Now().UTC()
	meta := metadata()
	// The proof of a record in a batch of this size: index, count, log2(batch) hashes.
	proof := randomBytes(12 + 32*bits.Len(uint(batch-1)))
	for i := range rows {
		p := first + int64(i)
		rows[i] = []any{p, fmt.Sprintf("raw-%d-%d", writer, p), int64(1), uuid.New(), "bench.token_streamed", int32(1),
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

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }

// ScratchDatabase creates a database named <prefix>_<random> on the server of adminURL and returns
// its URL and a function that drops it.
func ScratchDatabase(ctx context.Context, adminURL, prefix string) (string, func(), error) {
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := prefix + "_" + hex.EncodeToString(suffix)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("bench: connect: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		admin.Close(ctx)
		return "", nil, fmt.Errorf("bench: create scratch database: %w", err)
	}
	admin.Close(ctx)
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return
		}
		defer admin.Close(ctx)
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	return u.String(), drop, nil
}
