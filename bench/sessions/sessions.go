// Package sessions measures the control plane's side of a node restart: the node's node.started
// and then one agent.connected per returning agent, published through the node's own fact queue
// (nodeapp.FactQueue), through NATS and the real ingester
// into the log and the agent_sessions read model, with the lag from each report's publication to
// its session being listed. It owns nothing of the product; it assembles it.
package sessions

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/bench/stats"
	storebench "github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/projections"
)

// ErrInvalidOptions is returned by Options.Validate.
var ErrInvalidOptions = errors.New("bench sessions: invalid options")

// Options configure a run.
type Options struct {
	// AdminURL is a PostgreSQL server URL allowed to create databases (a scratch database is made
	// and dropped).
	AdminURL string
	// Agents is the agents on the node (default 10,000).
	Agents int
	// Over is the window the agents return in after the restart, each at a uniformly random time
	// (default 1s: 10,000/s on average, where `bench tunnel`'s restart of 10,000 agents brings
	// them back over about 8 s with a peak near 20,000/s in its busiest 100 ms).
	Over time.Duration
	// KeptUpLag: the control plane kept up when every session was listed within it of its
	// report's publication (default 5s).
	KeptUpLag time.Duration
	Progress  io.Writer
	Logger    *slog.Logger
}

func (o *Options) applyDefaults() {
	if o.Agents == 0 {
		o.Agents = 10_000
	}
	if o.Over == 0 {
		o.Over = time.Second
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
	if o.Agents < 1 || o.Agents > 1_000_000 {
		errs = append(errs, fmt.Errorf("%w: agents must be 1..1000000", ErrInvalidOptions))
	}
	if o.Over < 0 || o.Over > 10*time.Minute || o.KeptUpLag <= 0 {
		errs = append(errs, fmt.Errorf("%w: the return window must be 0..10m and the kept-up lag positive", ErrInvalidOptions))
	}
	return errors.Join(errs...)
}

// Result is what a run measured: the node's fact queue as it is (one publication per
// nodeapp.FactLinger while a batch fills), and the baseline, the same queue publishing whatever
// has come in at once (as it did before the linger), in the same run.
type Result struct {
	Agents int     `json:"agents"`
	OverMS float64 `json:"over_ms"`
	Round
	Baseline Round `json:"baseline"`
	// DrainRatio is the baseline's drain over this build's: how much sooner the last session is
	// listed.
	DrainRatio float64 `json:"drain_ratio"`
	KeptUp     bool    `json:"kept_up"`
	About      string  `json:"about"`
}

// Round is one restart: node.started, then every agent back.
type Round struct {
	LingerMS float64 `json:"linger_ms"`
	// ArrivalPerS is the reports per second published; PeakPerS the most in any 100 ms.
	ArrivalPerS float64 `json:"arrival_per_s"`
	PeakPerS    float64 `json:"arrival_peak_per_s"`
	// Publications is how many times the queue published (each one signed batch, or several
	// when one NATS message cannot hold them).
	Publications int `json:"publications"`
	// Lag is from a report's publication to its session being listed in agent_sessions.
	LagP50MS float64 `json:"lag_p50_ms"`
	LagP99MS float64 `json:"lag_p99_ms"`
	LagMaxMS float64 `json:"lag_max_ms"`
	// DrainMS is from the last publication to the last session listed; IngestPerS the sessions
	// listed per second from the first report to then.
	DrainMS    float64 `json:"drain_ms"`
	IngestPerS float64 `json:"ingest_per_s"`
	// ClosedBefore: node.started closed every session of before the restart.
	ClosedBefore bool `json:"closed_before"`
}

const about = "kept up: every session listed within the kept-up lag of its report's publication, and node.started closing all of before; lag is publication to listed in the agent_sessions read model, polled every 20 ms; baseline: the same queue without its linger, in the same run"

// Run connects Agents sessions, then restarts the node twice (the baseline's queue, then this
// build's), each time reporting every agent back within Over and following them into the read
// model.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.applyDefaults()
	progress := func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) }
	path, stop, err := storebench.StartNodeFactsPath(ctx, o.AdminURL, "tpbench_sessions", "bench sessions", []string{projections.AgentSessions}, o.Logger)
	if err != nil {
		return nil, err
	}
	defer stop()
	n := &node{path: path, orgID: uuid.NewString(), tokenID: uuid.NewString()}
	for range o.Agents {
		n.tunnels = append(n.tunnels, uuid.NewString())
	}
	// Before: every agent connected, listed (not measured).
	progress("connecting %d agents before the restarts", o.Agents)
	before := time.Now().UTC()
	if err := n.publish(ctx, n.connected(0, o.Agents)...); err != nil {
		return nil, err
	}
	if err := n.waitOpen(ctx, before, o.Agents, 2*time.Minute); err != nil {
		return nil, err
	}
	res := &Result{Agents: o.Agents, OverMS: float64(o.Over.Milliseconds()), About: about}
	for i, linger := range []time.Duration{0, nodeapp.FactLinger} {
		progress("restart %d: node.started, then %d agents back within %s (fact queue linger %s)", i+1, o.Agents, o.Over, linger)
		r, err := n.restart(ctx, o, linger)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			res.Baseline = *r
		} else {
			res.Round = *r
		}
	}
	res.DrainRatio = res.Baseline.DrainMS / max(res.DrainMS, 1)
	res.KeptUp = res.LagMaxMS <= float64(o.KeptUpLag.Milliseconds()) && res.ClosedBefore
	return res, nil
}

// restart publishes node.started, then every agent back through a fact queue lingering linger,
// and follows them into the read model.
func (n *node) restart(ctx context.Context, o Options, linger time.Duration) (*Round, error) {
	restart := time.Now().UTC().Truncate(time.Microsecond) // as PostgreSQL keeps it
	if err := n.publish(ctx, nodebus.Fact{Event: domain.NodeStarted{NodeID: n.path.NodeID, Version: "bench"}, OccurredAt: restart}); err != nil {
		return nil, err
	}
	arrivals := make([]time.Duration, o.Agents)
	for i := range arrivals {
		arrivals[i] = time.Duration(rand.Int64N(int64(o.Over) + 1))
	}
	slices.Sort(arrivals)
	f := &follower{n: n, since: restart}
	fctx, cancelFollow := context.WithCancel(ctx)
	defer cancelFollow()
	followed := make(chan error, 1)
	go func() { followed <- f.run(fctx) }()
	pubs, last, err := n.returnAt(ctx, restart, arrivals, f, linger, o.Logger)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(max(o.KeptUpLag, time.Minute))
	for f.count() < o.Agents {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench sessions: %d of %d sessions listed a minute after the last report", f.count(), o.Agents)
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case err := <-followed:
			return nil, fmt.Errorf("bench sessions: follow the read model: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cancelFollow()
	var open, closed int
	if err := n.path.Log.Pool().QueryRow(ctx, `SELECT count(*) FILTER (WHERE ended_at IS NULL),
		count(*) FILTER (WHERE connected_at < $2 AND ended_at >= $2 AND end_reason = $3)
		FROM rm_agent_sessions WHERE node_id = $1::uuid`, n.path.NodeID, restart, projections.ReasonNodeRestarted).Scan(&open, &closed); err != nil {
		return nil, fmt.Errorf("bench sessions: count the read model: %w", err)
	}
	if open != o.Agents {
		return nil, fmt.Errorf("bench sessions: %d sessions open after the restart, %d agents returned", open, o.Agents)
	}
	lags := f.sortedLags()
	first := restart.Add(arrivals[0])
	return &Round{LingerMS: float64(linger.Microseconds()) / 1000, Publications: pubs,
		ArrivalPerS: float64(o.Agents) / max(arrivals[len(arrivals)-1]-arrivals[0], time.Millisecond).Seconds(), PeakPerS: peak(arrivals, 100*time.Millisecond),
		LagP50MS: stats.Quantile(lags, .5), LagP99MS: stats.Quantile(lags, .99), LagMaxMS: lags[len(lags)-1],
		DrainMS:    float64(f.lastSeen().Sub(last).Microseconds()) / 1000,
		IngestPerS: float64(o.Agents) / f.lastSeen().Sub(first).Seconds(), ClosedBefore: closed == o.Agents}, nil
}

// peak is the most arrivals in any window w, per second.
func peak(sorted []time.Duration, w time.Duration) float64 {
	most, j := 0, 0
	for i := range sorted {
		for sorted[i]-sorted[j] >= w {
			j++
		}
		most = max(most, i-j+1)
	}
	return float64(most) / w.Seconds()
}

// node reports as a node does: a session per tunnel, all under one agent token.
type node struct {
	path           *storebench.NodeFactsPath
	orgID, tokenID string
	tunnels        []string
}

func (n *node) connected(from, to int) []nodebus.Fact {
	at := time.Now().UTC()
	facts := make([]nodebus.Fact, 0, to-from)
	for i := from; i < to; i++ {
		facts = append(facts, n.connectedFact(i, at))
	}
	return facts
}

func (n *node) connectedFact(i int, at time.Time) nodebus.Fact {
	return nodebus.Fact{OccurredAt: at, Event: domain.AgentConnected{NodeID: n.path.NodeID, SessionID: uuid.NewString(), OrgID: n.orgID,
		TunnelID: n.tunnels[i], TokenID: n.tokenID, AgentVersion: "bench", ProtocolVersion: "1", KeyExchange: "mlkem768x25519-sha256",
		Cipher: "aes128-gcm@openssh.com", HostKeyAlgo: "ssh-ed25519"}}
}

func (n *node) publish(ctx context.Context, facts ...nodebus.Fact) error {
	if err := n.path.Pub.Publish(ctx, facts...); err != nil {
		return fmt.Errorf("bench sessions: publish: %w", err)
	}
	return nil
}

// returnAt reports agent i back at restart+arrivals[i] through the node's own fact queue
// (nodeapp.FactQueue), which publishes what has come in as a node does; the follower is told
// each report's publication time. It returns the publications and the last one's time.
func (n *node) returnAt(ctx context.Context, restart time.Time, arrivals []time.Duration, f *follower, linger time.Duration, log *slog.Logger) (int, time.Time, error) {
	var mu sync.Mutex
	pubs, published := 0, 0
	var last time.Time
	var failed error
	q := nodeapp.NewFactQueue(func(ctx context.Context, facts ...nodebus.Fact) error {
		now := time.Now()
		f.published(now, len(facts))
		err := n.publish(ctx, facts...)
		mu.Lock()
		defer mu.Unlock()
		pubs, published, last = pubs+1, published+len(facts), now
		if err != nil && failed == nil {
			failed = err
		}
		return err
	}, log)
	q.SetLinger(linger)
	if err := q.Start(ctx); err != nil {
		return 0, time.Time{}, err
	}
	for i, d := range arrivals {
		if w := time.Until(restart.Add(d)); w > 0 {
			select {
			case <-time.After(w):
			case <-ctx.Done():
				q.Stop()
				return 0, time.Time{}, ctx.Err()
			}
		}
		q.AgentConnected(n.connectedFact(i, time.Time{}).Event.(domain.AgentConnected))
	}
	q.Stop() // publishes what is queued
	mu.Lock()
	defer mu.Unlock()
	if failed != nil {
		return 0, time.Time{}, failed
	}
	if published != len(arrivals) {
		return 0, time.Time{}, fmt.Errorf("bench sessions: the fact queue published %d of %d reports", published, len(arrivals))
	}
	return pubs, last, nil
}

// waitOpen waits until want sessions connected from since on are open.
func (n *node) waitOpen(ctx context.Context, since time.Time, want int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		got, err := n.open(ctx, since)
		if err != nil {
			return err
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench sessions: %d of %d sessions listed after %s", got, want, within)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// open counts the node's open sessions connected from since on.
func (n *node) open(ctx context.Context, since time.Time) (int, error) {
	var c int
	err := n.path.Log.Pool().QueryRow(ctx, `SELECT count(*) FROM rm_agent_sessions WHERE node_id = $1::uuid AND ended_at IS NULL AND connected_at >= $2`,
		n.path.NodeID, since).Scan(&c)
	if err != nil {
		return 0, fmt.Errorf("bench sessions: count the read model: %w", err)
	}
	return c, nil
}

// follower polls the read model for the sessions listed since the restart and times each
// report from its publication to then (the projection applies the log in order, so the count
// only grows and the first k reports are the k listed).
type follower struct {
	n     *node
	since time.Time

	mu    sync.Mutex
	at    []time.Time // publication time of each report, in order
	seen  int
	lags  []float64 // ms
	lastT time.Time
}

func (f *follower) published(at time.Time, k int) {
	f.mu.Lock()
	for range k {
		f.at = append(f.at, at)
	}
	f.mu.Unlock()
}

func (f *follower) run(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		listed, err := f.n.open(ctx, f.since)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		f.mu.Lock()
		for f.seen < listed && f.seen < len(f.at) {
			f.lags = append(f.lags, float64(now.Sub(f.at[f.seen]).Microseconds())/1000)
			f.seen++
			f.lastT = now
		}
		f.mu.Unlock()
	}
}

func (f *follower) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
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
