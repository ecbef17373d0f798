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
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// ErrUnknownProjection: no projection has that name.
var ErrUnknownProjection = errors.New("unknown projection")

// ErrStopped: the projection stopped on an error and needs attention (fix and restart, or rebuild).
var ErrStopped = errors.New("projection stopped")

// ErrAheadOfLog: a projection has applied positions the log no longer holds. The log was
// truncated or rolled back after the read models saw it; serving would show what the log lost
// and drop what new writes reuse its positions for.
var ErrAheadOfLog = errors.New("a read model is ahead of the log")

// Projection turns events into rows of its tables.
type Projection interface {
	// Name is the stable name used for the cursor and the views.
	Name() string
	// Tables are the rm_ tables it owns; each has a leading generation column.
	Tables() []string
	// Handles reports whether events of this type can change the projection. Batches without
	// such events cost no transaction.
	Handles(eventType string) bool
	// Apply queues into b the statements that write the effect of rec into generation gen. They
	// run in one transaction with the cursor update. An event it cannot handle is an error, which
	// stops the projection.
	Apply(ctx context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error
}

// BatchApplier is a Projection that folds a batch of records at once: the usage rollups add
// many windows into few rows, read those rows in tx, merge in memory and write each once. The
// runner and rebuilds call ApplyBatch, with the records the projection folds and has not
// applied, instead of Apply on each. tx holds the projection's state row locked (or writes a
// generation no one else writes), so what it reads stays its own until the batch b is sent.
type BatchApplier interface {
	Projection
	ApplyBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch, gen int, recs []eventstore.Record) error
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
	// BatchSize is the most events read and applied at once. Default 500.
	BatchSize int
	// RebuildBatchSize is the most events a rebuild reads and applies in one transaction. A
	// rebuild replays the whole log, where larger batches fold more usage windows into each row
	// write. Default 5,000.
	RebuildBatchSize int
	// CursorEvery is how often the cursor of a projection that only saw events it ignores is
	// saved (it is always saved with the rows of events it applies). Default 1s.
	CursorEvery time.Duration
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
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
	if c.RebuildBatchSize < 0 {
		errs = append(errs, fmt.Errorf("projections config: RebuildBatchSize %d is negative", c.RebuildBatchSize))
	}
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("projections config: BatchSize %d is negative", c.BatchSize))
	}
	if c.CursorEvery < 0 {
		errs = append(errs, fmt.Errorf("projections config: CursorEvery %s is negative", c.CursorEvery))
	}
	return errors.Join(errs...)
}

// Runner keeps every projection caught up with the log. It reads the log once for all of them.
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

	life lifecycle.Lifecycle
}

type runState struct {
	position   int64 // last position applied (or skipped as irrelevant)
	saved      int64 // position last written to projection_state
	savedAt    time.Time
	lastChange int64 // last position whose event changed the projection
	generation int
	running    bool
	stopped    bool // stopped on an error that needs attention
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
	if cfg.RebuildBatchSize == 0 {
		cfg.RebuildBatchSize = 5000
	}
	if cfg.CursorEvery == 0 {
		cfg.CursorEvery = time.Second
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
		r.state[p.Name()] = &runState{position: -1, saved: -1, lastChange: -1, generation: 1}
	}
	return r, nil
}

// Start creates missing state rows, loads the cursors and runs the projections until Stop.
func (r *Runner) Start(ctx context.Context) error {
	return r.life.Start(ctx, "projections", func(runCtx context.Context) error {
		cursors := map[string]int64{}
		for name := range r.byName {
			if _, err := r.pool.Exec(ctx, `INSERT INTO projection_state (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, name); err != nil {
				return fmt.Errorf("projections: init %s: %w", name, err)
			}
			var pos int64
			var gen int
			if err := r.pool.QueryRow(ctx, `SELECT position, generation FROM projection_state WHERE name = $1`, name).Scan(&pos, &gen); err != nil {
				return fmt.Errorf("projections: cursor of %s: %w", name, err)
			}
			cursors[name] = pos
			r.setState(name, func(s *runState) {
				s.position, s.saved, s.generation, s.running = pos, pos, gen, true
				s.lastChange = pos // unknown: assume the newest state might be recent
			})
			// Every projection shows in the metrics from the start, not once it applies something.
			r.position.WithLabelValues(name).Set(float64(pos))
		}
		// The head is read after the cursors: another instance may move both meanwhile, but a
		// cursor never passes the head it was written under.
		head, err := r.cfg.Store.Head(ctx)
		if err != nil {
			return fmt.Errorf("projections: %w", err)
		}
		for _, p := range r.cfg.Projections {
			if pos := cursors[p.Name()]; pos >= int64(head) {
				return fmt.Errorf("projections: %w: %s has applied the log up to position %d but the log's head is at %d "+
					"(it holds positions below %d): the log was truncated or rolled back after the read models saw it; "+
					"restore the log, and do not serve it as it is", ErrAheadOfLog, p.Name(), pos, head, head)
			}
		}
		r.life.Go(r.feed)
		return nil
	})
}

// Stop ends the projections, saving their cursors. Safe to call twice; a stopped runner does not
// start again.
func (r *Runner) Stop() { r.life.Stop() }

func (r *Runner) setState(name string, f func(s *runState)) {
	r.mu.Lock()
	f(r.state[name])
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// from is the first position some running projection still needs.
func (r *Runner) from() (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	min, any := int64(-1), false
	for _, s := range r.state {
		if s.stopped {
			continue
		}
		if !any || s.position < min {
			min, any = s.position, true
		}
	}
	return uint64(min + 1), any
}

// feed reads the log once for every projection. Transient database errors are retried with
// backoff; any other error stops only the projection it belongs to.
func (r *Runner) feed(ctx context.Context) {
	defer func() {
		r.saveCursors(context.WithoutCancel(ctx))
		for name := range r.byName {
			r.setState(name, func(s *runState) { s.running = false })
		}
	}()
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		from, any := r.from()
		if !any {
			<-ctx.Done() // every projection stopped: nothing to feed
			return
		}
		err := r.cfg.Store.Subscribe(ctx, from, eventstore.SubscribeOptions{BatchSize: r.cfg.BatchSize},
			func(ctx context.Context, recs []eventstore.Record) error {
				if err := r.applyAll(ctx, recs); err != nil {
					return err
				}
				backoff = 200 * time.Millisecond
				return nil
			})
		if ctx.Err() != nil || errors.Is(err, eventstore.ErrClosed) {
			return
		}
		if errors.Is(err, errResubscribe) {
			continue // a projection stopped; the others go on from their own positions
		}
		r.log.Warn("projections paused: cannot read the log; retrying", "error", err, "backoff", backoff)
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// errResubscribe makes the feed re-read from the slowest running projection.
var errResubscribe = errors.New("resubscribe")

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

// applyAll hands a batch to every running projection. A transient failure makes the whole feed
// retry (positions already applied are skipped); a projection that cannot apply an event stops.
func (r *Runner) applyAll(ctx context.Context, recs []eventstore.Record) error {
	resubscribe := false
	for _, p := range r.cfg.Projections {
		name := p.Name()
		r.mu.Lock()
		s := r.state[name]
		stopped, pos := s.stopped, s.position
		r.mu.Unlock()
		if stopped {
			continue
		}
		err := r.applyBatch(ctx, p, recs, pos)
		switch {
		case err == nil:
		case errors.Is(err, eventstore.ErrUnavailable) || ctx.Err() != nil:
			r.failures.WithLabelValues(name).Inc()
			r.setState(name, func(s *runState) { s.lastErr = err.Error() })
			return err
		default:
			r.failures.WithLabelValues(name).Inc()
			r.log.Error("projection stopped: an event could not be applied", "projection", name, "error", err)
			r.setState(name, func(s *runState) { s.stopped, s.running, s.lastErr = true, false, err.Error() })
			_, _ = r.pool.Exec(context.WithoutCancel(ctx), `UPDATE projection_state SET last_error = $2, updated_at = now() WHERE name = $1`, name, err.Error())
			resubscribe = true
		}
	}
	if head := r.cfg.Store.KnownHead(); head > 0 {
		r.mu.Lock()
		for name, s := range r.state {
			r.lag.WithLabelValues(name).Set(float64(max(int64(head)-1-s.position, 0)))
		}
		r.mu.Unlock()
	}
	if resubscribe {
		return errResubscribe
	}
	return nil
}

// applyBatch applies the records p has not seen. Events it handles are written, with its cursor,
// in one transaction with one round trip for all statements; the state row is locked, so two
// control-plane instances (or a rebuild swap) never apply the same event twice. Batches of events
// it ignores only move the cursor in memory, saved at most every CursorEvery.
func (r *Runner) applyBatch(ctx context.Context, p Projection, recs []eventstore.Record, pos int64) error {
	name := p.Name()
	last := recs[len(recs)-1].Position
	if int64(last) <= pos {
		return nil
	}
	relevant := false
	for _, rec := range recs {
		if int64(rec.Position) > pos && folds(p, rec) {
			relevant = true
			break
		}
	}
	if !relevant {
		r.advance(name, int64(last), -1, 0)
		r.maybeSave(ctx, name)
		return nil
	}
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var dbPos int64
	var gen int
	if err := tx.QueryRow(ctx, `SELECT position, generation FROM projection_state WHERE name = $1 FOR UPDATE`, name).Scan(&dbPos, &gen); err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	b := &pgx.Batch{}
	changed := int64(-1)
	var todo []eventstore.Record
	for _, rec := range recs {
		if int64(rec.Position) <= pos || !folds(p, rec) {
			continue // applied already, or not this projection's
		}
		// Applied by another instance or a rebuild swap, or now: the projection changed either
		// way (a control plane caching what it holds, as the authorizer its policy, reloads).
		changed = int64(rec.Position)
		if int64(rec.Position) <= dbPos {
			continue
		}
		todo = append(todo, rec)
	}
	if err := applyRecords(ctx, tx, p, b, gen, todo); err != nil {
		return fmt.Errorf("projection %s: %w", name, err)
	}
	newPos := max(int64(last), dbPos)
	b.Queue(`UPDATE projection_state SET position = $2, last_error = NULL, updated_at = now() WHERE name = $1`, name, newPos)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		if isTransient(err) {
			return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
		}
		return fmt.Errorf("projection %s in positions %d..%d: %w", name, pos+1, last, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err)
	}
	r.advance(name, newPos, changed, gen)
	r.mu.Lock()
	s := r.state[name]
	s.saved, s.savedAt = newPos, time.Now()
	r.mu.Unlock()
	r.position.WithLabelValues(name).Set(float64(newPos))
	return nil
}

func (r *Runner) advance(name string, pos, changed int64, gen int) {
	r.setState(name, func(s *runState) {
		s.position = max(s.position, pos)
		if changed >= 0 {
			s.lastChange = max(s.lastChange, changed)
		}
		if gen > 0 {
			s.generation = gen
		}
		s.lastErr = ""
	})
}

// maybeSave writes the in-memory cursor of a projection that only skipped events, at most every
// CursorEvery, so a restart does not re-read much.
func (r *Runner) maybeSave(ctx context.Context, name string) {
	r.mu.Lock()
	s := r.state[name]
	due := s.position > s.saved && time.Since(s.savedAt) >= r.cfg.CursorEvery
	pos := s.position
	r.mu.Unlock()
	if !due {
		return
	}
	r.saveCursor(ctx, name, pos)
}

func (r *Runner) saveCursor(ctx context.Context, name string, pos int64) {
	// greatest(): never move a cursor back (another instance may be ahead).
	if _, err := r.pool.Exec(ctx, `UPDATE projection_state SET position = greatest(position, $2), updated_at = now() WHERE name = $1`, name, pos); err != nil {
		if ctx.Err() != nil {
			return // stopping: Stop saves every cursor once more, without the cancelled context
		}
		r.log.Warn("projection cursor not saved; it will be re-read after a restart", "projection", name, "error", err)
		return
	}
	r.mu.Lock()
	s := r.state[name]
	s.saved, s.savedAt = max(s.saved, pos), time.Now()
	r.mu.Unlock()
	r.position.WithLabelValues(name).Set(float64(pos))
}

func (r *Runner) saveCursors(ctx context.Context) {
	r.mu.Lock()
	todo := map[string]int64{}
	for name, s := range r.state {
		if s.position > s.saved && !s.stopped {
			todo[name] = s.position
		}
	}
	r.mu.Unlock()
	for name, pos := range todo {
		r.saveCursor(ctx, name, pos)
	}
}

// isTransient tells connection failures from errors in the statements themselves.
func isTransient(err error) bool {
	return errors.Is(classifyDB(err), eventstore.ErrUnavailable)
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
		out = append(out, Status{Name: p.Name(), Position: s.position, Lag: max(int64(head)-1-s.position, 0), Generation: s.generation,
			Running: s.running && !s.stopped, Rebuilding: s.rebuilding, LastError: s.lastErr})
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

// LastChange is the position of the newest event that changed the projection (as far as this
// process knows): a cache of the read model needs reloading only when it moves.
func (r *Runner) LastChange(name string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.state[name]
	if !ok {
		return 0, false
	}
	return s.lastChange, true
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
				if s.stopped {
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
