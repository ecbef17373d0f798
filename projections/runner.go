package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ErrUnknownProjection: no projection has that name.
var ErrUnknownProjection = errors.New("unknown projection")

// ErrStopped: the projection stopped on an error and needs attention (fix and restart, or rebuild).
var ErrStopped = errors.New("projection stopped")

// Projection turns events into rows of its tables.
type Projection interface {
	// Name is the stable name used for the cursor and the views.
	Name() string
	// Tables are the rm_ tables it owns; each has a leading generation column.
	Tables() []string
	// Apply writes the effect of rec into generation gen, inside tx. Events it does not care
	// about are ignored; an event it cannot handle is an error, which stops the projection.
	Apply(ctx context.Context, tx pgx.Tx, gen int, rec eventstore.Record) error
}

// Status is a projection's health.
type Status struct {
	Name       string `json:"name"`
	Position   int64  `json:"position"` // last applied global position, -1 for none
	Lag        int64  `json:"lag"`      // records behind the log head
	Generation int    `json:"generation"`
	Running    bool   `json:"running"`
	Rebuilding bool   `json:"rebuilding"`
	LastError  string `json:"last_error,omitempty"`
}

// Config configures a Runner.
type Config struct {
	Store       *eventstore.Store
	Projections []Projection
	// BatchSize is the most events applied in one transaction. Default 500.
	BatchSize  int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("projections config: Store is required"))
	}
	seen := map[string]bool{}
	for _, p := range c.Projections {
		if seen[p.Name()] {
			errs = append(errs, fmt.Errorf("projections config: %q twice", p.Name()))
		}
		seen[p.Name()] = true
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("projections config: BatchSize %d is negative", c.BatchSize))
	}
	return errors.Join(errs...)
}

// Runner keeps every projection caught up with the log.
type Runner struct {
	cfg    Config
	pool   *pgxpool.Pool
	log    *slog.Logger
	byName map[string]Projection

	mu      sync.Mutex
	state   map[string]*runState
	changed chan struct{} // closed and replaced whenever a position moves

	position *prometheus.GaugeVec
	lag      *prometheus.GaugeVec
	failures *prometheus.CounterVec

	cancel context.CancelFunc
	wg     sync.WaitGroup
	stopMu sync.Mutex
}

type runState struct {
	position   int64
	generation int
	running    bool
	rebuilding bool
	lastErr    string
}

// New builds a Runner.
func New(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Runner{cfg: cfg, pool: cfg.Store.Pool(), log: cfg.Logger, byName: map[string]Projection{}, state: map[string]*runState{},
		changed:  make(chan struct{}),
		position: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tunnelplane_projection_position", Help: "Last global position applied by a projection."}, []string{"projection"}),
		lag:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tunnelplane_projection_lag", Help: "Records a projection is behind the log head."}, []string{"projection"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tunnelplane_projection_failures_total", Help: "Errors that stopped or delayed a projection."}, []string{"projection"}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.position, r.lag, r.failures} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("projections: register metrics: %w", err)
			}
		}
	}
	for _, p := range cfg.Projections {
		r.byName[p.Name()] = p
		r.state[p.Name()] = &runState{position: -1, generation: 1}
	}
	return r, nil
}

// Start creates missing state rows and runs every projection until Stop.
func (r *Runner) Start(ctx context.Context) error {
	for name := range r.byName {
		if _, err := r.pool.Exec(ctx, `INSERT INTO projection_state (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, name); err != nil {
			return fmt.Errorf("projections: init %s: %w", name, err)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.stopMu.Lock()
	r.cancel = cancel
	r.stopMu.Unlock()
	for _, p := range r.cfg.Projections {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.run(runCtx, p)
		}()
	}
	return nil
}

// Stop ends every projection. Safe to call twice.
func (r *Runner) Stop() {
	r.stopMu.Lock()
	if r.cancel != nil {
		r.cancel()
	}
	r.stopMu.Unlock()
	r.wg.Wait()
}

func (r *Runner) setState(name string, f func(s *runState)) {
	r.mu.Lock()
	f(r.state[name])
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// run applies events to one projection. Transient database errors are retried with backoff; any
// other error stops the projection (status + log + metric) until the process restarts.
func (r *Runner) run(ctx context.Context, p Projection) {
	name := p.Name()
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		var pos int64
		var gen int
		if err := r.pool.QueryRow(ctx, `SELECT position, generation FROM projection_state WHERE name = $1`, name).Scan(&pos, &gen); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.failures.WithLabelValues(name).Inc()
			r.log.Warn("projection cannot read its cursor; retrying", "projection", name, "error", err)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		r.setState(name, func(s *runState) { s.position, s.generation, s.running = pos, gen, true })
		err := r.cfg.Store.Subscribe(ctx, uint64(pos+1), eventstore.SubscribeOptions{BatchSize: r.cfg.BatchSize},
			func(ctx context.Context, recs []eventstore.Record) error {
				return r.applyBatch(ctx, p, recs)
			})
		if ctx.Err() != nil || errors.Is(err, eventstore.ErrClosed) {
			r.setState(name, func(s *runState) { s.running = false })
			return
		}
		r.failures.WithLabelValues(name).Inc()
		if errors.Is(err, eventstore.ErrUnavailable) {
			r.log.Warn("projection paused: database unavailable; retrying", "projection", name, "error", err)
			r.setState(name, func(s *runState) { s.lastErr = err.Error() })
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		r.log.Error("projection stopped: an event could not be applied", "projection", name, "error", err)
		r.setState(name, func(s *runState) { s.running, s.lastErr = false, err.Error() })
		_, _ = r.pool.Exec(context.WithoutCancel(ctx), `UPDATE projection_state SET last_error = $2, updated_at = now() WHERE name = $1`, name, err.Error())
		return
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// applyBatch applies recs and moves the cursor in one transaction. The state row is locked, so
// two control-plane instances (or a rebuild swap) never apply the same event twice.
func (r *Runner) applyBatch(ctx context.Context, p Projection, recs []eventstore.Record) error {
	name := p.Name()
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var pos int64
	var gen int
	if err := tx.QueryRow(ctx, `SELECT position, generation FROM projection_state WHERE name = $1 FOR UPDATE`, name).Scan(&pos, &gen); err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	last := pos
	for _, rec := range recs {
		if int64(rec.Position) <= pos {
			continue // applied by another instance or by a rebuild swap
		}
		if err := p.Apply(ctx, tx, gen, rec); err != nil {
			return fmt.Errorf("projection %s at position %d (%s): %w", name, rec.Position, rec.Type, err)
		}
		last = int64(rec.Position)
	}
	if last == pos {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE projection_state SET position = $2, last_error = NULL, updated_at = now() WHERE name = $1`, name, last); err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	r.position.WithLabelValues(name).Set(float64(last))
	// The head this process knows of (no database round trip per batch; it is a metric).
	if head := r.cfg.Store.KnownHead(); head > 0 {
		r.lag.WithLabelValues(name).Set(float64(max(int64(head)-1-last, 0)))
	}
	r.setState(name, func(s *runState) { s.position, s.generation, s.lastErr = last, gen, "" })
	return nil
}

// Statuses reports every projection, with lag against the log head.
func (r *Runner) Statuses(ctx context.Context) ([]Status, error) {
	head, err := r.cfg.Store.Head(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.state))
	for _, p := range r.cfg.Projections {
		s := r.state[p.Name()]
		out = append(out, Status{Name: p.Name(), Position: s.position, Lag: int64(head) - 1 - s.position, Generation: s.generation,
			Running: s.running, Rebuilding: s.rebuilding, LastError: s.lastErr})
	}
	return out, nil
}

// Position is the last position a projection applied in this process.
func (r *Runner) Position(name string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.state[name]
	if !ok {
		return 0, false
	}
	return s.position, true
}

// WaitFor blocks until the named projections have applied position pos (read-your-writes), or
// ctx ends. A stopped projection fails at once with ErrStopped.
func (r *Runner) WaitFor(ctx context.Context, pos uint64, names ...string) error {
	for {
		r.mu.Lock()
		done := true
		for _, n := range names {
			s, ok := r.state[n]
			if !ok {
				r.mu.Unlock()
				return fmt.Errorf("%w: %q", ErrUnknownProjection, n)
			}
			if s.position < int64(pos) {
				if !s.running && s.lastErr != "" {
					r.mu.Unlock()
					return fmt.Errorf("%w: %s: %s", ErrStopped, n, s.lastErr)
				}
				done = false
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
