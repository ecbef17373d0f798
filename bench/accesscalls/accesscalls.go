// Package accesscalls measures the control plane's side of per-call access records: a node's
// signed access.calls_recorded batches published to NATS at a steady rate of calls, through the
// real ingester into the log and the access_calls projection, with the lag from a batch's
// publication to its calls being readable. It owns nothing of the product; it assembles it.
package accesscalls

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/bench/stats"
	storebench "github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// ErrInvalidOptions is returned by Options.Validate.
var ErrInvalidOptions = errors.New("bench calls: invalid options")

// Options configure a run.
type Options struct {
	// AdminURL is a PostgreSQL server URL allowed to create databases (a scratch database is made
	// and dropped).
	AdminURL string
	// Rate is the calls per second published (default 5,000).
	Rate int
	// Duration is how long the rate is held (default 60s).
	Duration time.Duration
	// CallsPerBatch is the calls in one batch (default 100: what a node's batch of typical calls
	// holds under its 48 KiB bound is about 115).
	CallsPerBatch int
	// BatchesPerPublish is the batches published at once, in one signed NATS message (default 5:
	// a node hands its sink the batches of a flush together, 500 calls when its queue fills
	// first, and its facts queue publishes what it holds at once).
	BatchesPerPublish int
	// KeptUpLag: the ingester kept up when every batch was readable within it of its
	// publication, the last one included (default 5s).
	KeptUpLag time.Duration
	Progress  io.Writer
	Logger    *slog.Logger
}

func (o *Options) applyDefaults() {
	if o.Rate == 0 {
		o.Rate = 5000
	}
	if o.Duration == 0 {
		o.Duration = time.Minute
	}
	if o.CallsPerBatch == 0 {
		o.CallsPerBatch = 100
	}
	if o.BatchesPerPublish == 0 {
		o.BatchesPerPublish = 5
	}
	if o.KeptUpLag == 0 {
		o.KeptUpLag = 5 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every bad option; zero values count as their defaults.
func (o Options) Validate() error {
	o.applyDefaults()
	var errs []error
	if o.AdminURL == "" {
		errs = append(errs, fmt.Errorf("%w: AdminURL is required", ErrInvalidOptions))
	}
	if o.Rate < 1 || o.Duration < time.Second || o.KeptUpLag <= 0 {
		errs = append(errs, fmt.Errorf("%w: rate, duration (at least 1s) and kept-up lag must be positive", ErrInvalidOptions))
	}
	if o.CallsPerBatch < 1 || o.CallsPerBatch > domain.MaxCallsPerBatch {
		errs = append(errs, fmt.Errorf("%w: calls per batch must be 1..%d", ErrInvalidOptions, domain.MaxCallsPerBatch))
	}
	if o.BatchesPerPublish < 1 || o.BatchesPerPublish > 10 {
		errs = append(errs, fmt.Errorf("%w: batches per publication must be 1..10", ErrInvalidOptions))
	}
	return errors.Join(errs...)
}

// Result is what a run measured.
type Result struct {
	Rate              int     `json:"rate"` // calls per second asked for
	DurationSec       float64 `json:"duration_s"`
	CallsPerBatch     int     `json:"calls_per_batch"`
	BatchesPerPublish int     `json:"batches_per_publish"`
	Calls             int64   `json:"calls"`
	Batches           int     `json:"batches"`
	// PublishedRate is the calls per second actually published (the node's side may fall behind
	// on a loaded machine).
	PublishedRate float64 `json:"published_calls_per_s"`
	// Lag is from a publication to its calls being readable in access_calls.
	LagP50MS float64 `json:"lag_p50_ms"`
	LagP99MS float64 `json:"lag_p99_ms"`
	LagMaxMS float64 `json:"lag_max_ms"`
	// DrainMS is from the last publication to the last call being readable.
	DrainMS  float64 `json:"drain_ms"`
	KeptUp   bool    `json:"kept_up"`
	Baseline string  `json:"baseline"`
}

const baseline = "none: the target is absolute (the rate held, every batch readable within the kept-up lag); the lag is publication to readable in the access_calls read model, polled every 10 ms"

// Run publishes Rate calls per second for Duration and follows them into the read model.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.applyDefaults()
	progress := func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) }
	sys, stop, err := start(ctx, o)
	if err != nil {
		return nil, err
	}
	defer stop()
	progress("publishing %d calls/s in batches of %d for %s", o.Rate, o.CallsPerBatch, o.Duration)

	f := &follower{store: sys.log, tunnel: sys.tunnelID}
	fctx, cancelFollow := context.WithCancel(ctx)
	defer cancelFollow()
	followed := make(chan error, 1)
	go func() { followed <- f.run(fctx) }()

	per := o.CallsPerBatch * o.BatchesPerPublish
	interval := time.Duration(float64(time.Second) * float64(per) / float64(o.Rate))
	began := time.Now()
	var last time.Time
	batches := 0
	for i := 0; ; i++ {
		due := began.Add(time.Duration(i) * interval)
		if due.Sub(began) >= o.Duration {
			break
		}
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		at := time.Now().UTC().Truncate(time.Microsecond) // as PostgreSQL keeps it
		facts := make([]nodebus.Fact, o.BatchesPerPublish)
		for j := range facts {
			facts[j] = nodebus.Fact{Event: sys.batch(at, o.CallsPerBatch)}
		}
		f.published(at)
		if err := sys.pub.Publish(ctx, facts...); err != nil {
			return nil, fmt.Errorf("bench calls: publish: %w", err)
		}
		last, batches = at, (i+1)*o.BatchesPerPublish
		if i > 0 && i%int(time.Second*10/interval) == 0 {
			progress("  %4.0fs: %d batches published, lag p99 so far %.0f ms", time.Since(began).Seconds(), batches, f.lagP99())
		}
	}
	published := time.Since(began)
	deadline := time.Now().Add(max(o.KeptUpLag, time.Minute))
	for !f.seen(batches / o.BatchesPerPublish) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench calls: %d of %d publications readable a minute after the last", f.count(), batches/o.BatchesPerPublish)
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case err := <-followed:
			return nil, fmt.Errorf("bench calls: follow the read model: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	drain := f.lastSeen().Sub(last)
	// Every call, not only the newest of each batch: a refused batch would leave a gap.
	var stored int64
	if err := sys.log.Pool().QueryRow(ctx, `SELECT count(*) FROM access_calls WHERE tunnel_id = $1::uuid`, sys.tunnelID).Scan(&stored); err != nil {
		return nil, fmt.Errorf("bench calls: count the read model: %w", err)
	}
	if stored != int64(batches*o.CallsPerBatch) {
		return nil, fmt.Errorf("bench calls: %d calls readable, %d published", stored, batches*o.CallsPerBatch)
	}
	lags := f.sortedLags()
	res := &Result{Rate: o.Rate, DurationSec: o.Duration.Seconds(), CallsPerBatch: o.CallsPerBatch, BatchesPerPublish: o.BatchesPerPublish, Calls: int64(batches * o.CallsPerBatch),
		Batches: batches, PublishedRate: float64(batches*o.CallsPerBatch) / published.Seconds(),
		LagP50MS: stats.Quantile(lags, .5), LagP99MS: stats.Quantile(lags, .99), LagMaxMS: lags[len(lags)-1],
		DrainMS: float64(drain.Microseconds()) / 1000, Baseline: baseline}
	res.KeptUp = res.LagMaxMS <= float64(o.KeptUpLag.Milliseconds()) && res.PublishedRate >= 0.95*float64(o.Rate)
	return res, nil
}

// system is the control plane's path of call records: a scratch log, an embedded NATS with the
// streams, the ingester, the access_calls projection, and an enrolled node's publisher.
type system struct {
	log               *eventstore.Store
	pub               *nodebus.Publisher
	nodeID            string
	orgID, tunnelID   string
	callerIDs         []string
	routes, methods   []string
	statuses          []int
	bytesIn, bytesOut []int64
}

func start(ctx context.Context, o Options) (*system, func(), error) {
	path, stop, err := storebench.StartNodeFactsPath(ctx, o.AdminURL, "tpbench_calls", "bench calls", []string{projections.AccessCalls}, o.Logger)
	if err != nil {
		return nil, nil, err
	}
	s := &system{log: path.Log, pub: path.Pub, nodeID: path.NodeID, orgID: uuid.NewString(), tunnelID: uuid.NewString()}
	s.fill()
	return s, stop, nil
}

// fill sets the values calls are made of: a few callers, routes and results, as an API's
// traffic has.
func (s *system) fill() {
	for i := range 20 {
		s.callerIDs = append(s.callerIDs, fmt.Sprintf("user-%02d@example.com", i))
	}
	s.routes = []string{"/v1/chat/completions", "/v1/models", "/v1/embeddings", "/api/generate", "/api/tags", "/v1/completions"}
	s.methods = []string{"POST", "GET", "POST", "POST", "GET", "POST"}
	s.statuses = []int{200, 200, 200, 200, 401, 200, 200, 429, 200, 500}
	s.bytesIn = []int64{512, 0, 2048, 900, 0, 4000}
	s.bytesOut = []int64{16000, 1200, 6000, 30000, 800, 9000}
}

// batch is n calls that began at at.
func (s *system) batch(at time.Time, n int) domain.AccessCallsRecorded {
	calls := make([]domain.AccessCall, n)
	for i := range calls {
		r := i % len(s.routes)
		calls[i] = domain.AccessCall{At: at, OrgID: s.orgID, TunnelID: s.tunnelID, CallerKind: domain.CallerUser,
			CallerID: s.callerIDs[i%len(s.callerIDs)], Method: s.methods[r], Route: s.routes[r], Status: s.statuses[i%len(s.statuses)],
			BytesIn: s.bytesIn[r], BytesOut: s.bytesOut[r], DurationUS: int64(1000 + 37*i)}
	}
	return domain.AccessCallsRecorded{NodeID: s.nodeID, Calls: calls}
}

// follower polls the read model for the newest readable call and times each batch from its
// publication to then.
type follower struct {
	store  *eventstore.Store
	tunnel string

	mu    sync.Mutex
	at    []time.Time // publication times = the calls' times, in order
	next  int         // batches seen readable
	lags  []float64   // ms
	lastT time.Time
}

func (f *follower) published(at time.Time) {
	f.mu.Lock()
	f.at = append(f.at, at)
	f.mu.Unlock()
}

func (f *follower) run(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var newest *time.Time
		err := f.store.Pool().QueryRow(ctx, `SELECT max(at) FROM access_calls WHERE tunnel_id = $1::uuid`, f.tunnel).Scan(&newest)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		f.mu.Lock()
		for newest != nil && f.next < len(f.at) && !f.at[f.next].After(*newest) {
			f.lags = append(f.lags, float64(now.Sub(f.at[f.next]).Microseconds())/1000)
			f.next++
			f.lastT = now
		}
		f.mu.Unlock()
	}
}

func (f *follower) seen(n int) bool { return f.count() >= n }

func (f *follower) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next
}

func (f *follower) lastSeen() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastT
}

func (f *follower) sortedLags() []float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return stats.Sorted(slices.Clone(f.lags))
}

func (f *follower) lagP99() float64 {
	l := f.sortedLags()
	if len(l) == 0 {
		return 0
	}
	return stats.Quantile(l, .99)
}
