package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/bench/stats"
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

const baseline = "COPY of the same rows into a table with the same indexes, one transaction per batch, no signing, hashing or position ordering"

// Run performs the whole benchmark.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts.defaults()
	started := time.Now()
	dbURL, drop, err := ScratchDatabase(ctx, opts.AdminURL, "tunnelplane_bench")
	if err != nil {
		return nil, err
	}
	defer drop()
	b, err := open(ctx, dbURL, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer b.close()

	res := &Result{Rounds: opts.Rounds, Baseline: baseline}
	for _, batch := range opts.BatchSizes {
		for _, w := range opts.Writers {
			c, err := b.measureConfig(ctx, opts, batch, w)
			if err != nil {
				return nil, err
			}
			res.Configs = append(res.Configs, c)
		}
	}
	res.pickBest()
	if res.ReadEPS, err = b.measureRead(ctx, opts.Progress); err != nil {
		return nil, err
	}
	if err := b.measureVerify(ctx, opts.Progress, res); err != nil {
		return nil, err
	}
	res.DurationS = round2(time.Since(started).Seconds())
	res.ReadEPS, res.AppendEPS, res.RawInsertEPS = float64(int64(res.ReadEPS)), float64(int64(res.AppendEPS)), float64(int64(res.RawInsertEPS))
	return res, nil
}

// bench is the scratch database, the baseline table and the store under measurement.
type bench struct {
	pool  *pgxpool.Pool
	store *eventstore.Store
	// pos is the baseline table's own position space.
	pos atomic.Int64
}

// open migrates the scratch database, creates the baseline table next to the log and starts a
// store on it with a fresh key.
func open(ctx context.Context, dbURL string, logger *slog.Logger) (_ *bench, err error) {
	if err := migrations.Up(ctx, dbURL); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	pool, err := eventstore.Connect(ctx, dbURL, eventstore.ConnectOptions{Role: "-", MaxConns: 20, ApplicationName: "tunnelplane-bench"})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer func() {
		if err != nil {
			pool.Close()
		}
	}()
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
	reg := eventstore.MustRegistry(eventstore.EventType{Name: eventType, SchemaVersion: 1})
	store, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, Registry: reg, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := store.Start(ctx); err != nil {
		return nil, err
	}
	b := &bench{pool: pool, store: store}
	b.pos.Store(1 << 40)
	return b, nil
}

func (b *bench) close() {
	b.store.Stop()
	b.pool.Close()
}

// measureConfig measures one batch size and writer count, baseline then appends, every round,
// and reports the medians.
func (b *bench) measureConfig(ctx context.Context, opts Options, batch, writers int) (Config, error) {
	var raws, apps []float64
	for r := range opts.Rounds {
		raw, err := measure(ctx, writers, opts.Duration, func(ctx context.Context, writer, _ int) (int, error) {
			return batch, rawInsert(ctx, b.pool, &b.pos, writer, batch)
		})
		if err != nil {
			return Config{}, fmt.Errorf("bench: raw insert batch %d writers %d: %w", batch, writers, err)
		}
		app, err := measure(ctx, writers, opts.Duration, b.appender(batch, writers, r))
		if err != nil {
			return Config{}, fmt.Errorf("bench: append batch %d writers %d: %w", batch, writers, err)
		}
		raws, apps = append(raws, raw), append(apps, app)
		fmt.Fprintf(opts.Progress, "batch %3d writers %2d round %d: raw %9.0f ev/s  append %9.0f ev/s  ratio %.2f\n", batch, writers, r+1, raw, app, app/raw)
	}
	c := Config{Batch: batch, Writers: writers, RawEPS: stats.Median(raws), AppendEPS: stats.Median(apps)}
	c.Ratio = round2(c.AppendEPS / c.RawEPS)
	return c, nil
}

// appender is the measured operation: each writer appends batch events to a stream of its own
// for this configuration and round.
func (b *bench) appender(batch, writers, round int) func(ctx context.Context, writer, i int) (int, error) {
	versions := make([]uint64, writers)
	return func(ctx context.Context, writer, i int) (int, error) {
		events := make([]eventstore.EventData, batch)
		for j := range events {
			events[j] = eventstore.EventData{Type: eventType, Payload: payload(i*batch + j), Metadata: metadata()}
		}
		stream := fmt.Sprintf("bench-b%d-w%d-%d-%d", batch, writers, round, writer)
		res, err := b.store.Append(ctx, stream, eventstore.Exact(versions[writer]), events...)
		if err != nil {
			return 0, err
		}
		versions[writer] = res.StreamVersion
		return batch, nil
	}
}

// pickBest fills in the best append configuration and the lowest ratio.
func (res *Result) pickBest() {
	res.MinRatio = 1e9
	for _, c := range res.Configs {
		if c.AppendEPS > res.AppendEPS {
			res.AppendEPS, res.RawInsertEPS, res.Ratio, res.BestBatch, res.BestWriters = c.AppendEPS, c.RawEPS, c.Ratio, c.Batch, c.Writers
		}
		res.MinRatio = min(res.MinRatio, c.Ratio)
	}
}

// measureRead reads the whole log in pages, as a catching-up subscriber does, and returns
// events per second.
func (b *bench) measureRead(ctx context.Context, progress io.Writer) (float64, error) {
	head, err := b.store.Head(ctx)
	if err != nil {
		return 0, err
	}
	readStart := time.Now()
	var n uint64
	for n < head {
		recs, err := b.store.ReadAll(ctx, n, 5000)
		if err != nil {
			return 0, fmt.Errorf("bench: read: %w", err)
		}
		n += uint64(len(recs))
	}
	eps := float64(n) / time.Since(readStart).Seconds()
	fmt.Fprintf(progress, "read %d events: %.0f ev/s\n", n, eps)
	return eps, nil
}

// measureVerify verifies the log it wrote (every signature checked) and fills in the rate.
func (b *bench) measureVerify(ctx context.Context, progress io.Writer, res *Result) error {
	rep, err := eventstore.Verify(ctx, b.pool, eventstore.VerifyOptions{})
	if err != nil {
		return fmt.Errorf("bench: verify: %w", err)
	}
	if !rep.OK() {
		return fmt.Errorf("bench: the log it wrote does not verify: %v", rep.Failure)
	}
	res.VerifyEPS, res.LogEvents, res.Checkpoints = rep.PerSecond, rep.Count, rep.Checkpoints
	fmt.Fprintf(progress, "verify %d events, %d checkpoints: %.0f ev/s\n", rep.Count, rep.Checkpoints, rep.PerSecond)
	return nil
}

func round2(x float64) float64 { return float64(int64(x*100+0.5)) / 100 }
