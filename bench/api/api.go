package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/bench/stats"
	"github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Options configures a run.
type Options struct {
	Duration time.Duration
	Rounds   int
	Clients  int
	Orgs     int
	// Baseline also measures the same commands called in-process (no HTTP, no token checks).
	Baseline bool
	// CPUProfile, when set, receives a CPU profile of the HTTP rounds.
	CPUProfile string
	// AdminURL points at the server's maintenance database; the scratch database is made there.
	AdminURL string
	// Start starts the control plane under measurement on databaseURL, with its keys and state
	// in dataDir (both scratch, removed after the run), serving the API on loopback.
	Start func(ctx context.Context, databaseURL, dataDir string) (*System, error)
	// Progress receives a line per round (nil: none).
	Progress io.Writer
}

// System is the control plane under measurement.
type System struct {
	// URL is the API's base URL (http://host:port).
	URL string
	// Service sets up the organizations and mints their owners' tokens, and is the baseline.
	Service *commands.Service
	// Runner tells when a write has reached the tunnels read model.
	Runner *projections.Runner
	// Store and Pool are the control plane's log and database pool, for benches that extend
	// or read the log beside the API (bench siem).
	Store *eventstore.Store
	Pool  *pgxpool.Pool
	// Stop stops the control plane.
	Stop func()
}

// Validate reports every bad option (named by their flags).
func (o Options) Validate() error {
	var errs []error
	if o.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %s: want more than 0", o.Duration))
	}
	if o.Rounds < 1 || o.Rounds > 100 {
		errs = append(errs, fmt.Errorf("--rounds %d: want 1 to 100", o.Rounds))
	}
	if o.Clients < 1 || o.Clients > 1024 {
		errs = append(errs, fmt.Errorf("--clients %d: want 1 to 1024", o.Clients))
	}
	if o.Orgs < 1 || o.Orgs > o.Clients {
		errs = append(errs, fmt.Errorf("--orgs %d: want 1 to --clients", o.Orgs))
	}
	return errors.Join(errs...)
}

// Result is what `bench api` reports: medians over the rounds.
type Result struct {
	CommandsPerS float64 `json:"commands_per_s"`
	// VisibleP50/P99: from sending a write until the tunnels read model shows its position.
	VisibleP50 float64 `json:"visible_p50_ms"`
	VisibleP99 float64 `json:"visible_p99_ms"`
	// WriteP50/P99: the write's HTTP round trip.
	WriteP50 float64 `json:"write_p50_ms"`
	WriteP99 float64 `json:"write_p99_ms"`
	// BaselineCommandsPerS: the same commands through commands.Service directly; Ratio is
	// CommandsPerS / BaselineCommandsPerS (the cost of HTTP, authentication and JSON).
	BaselineCommandsPerS float64 `json:"baseline_commands_per_s,omitempty"`
	Ratio                float64 `json:"ratio,omitempty"`
	Commands             int     `json:"commands"`
	Errors               int     `json:"errors"`
	Clients              int     `json:"clients"`
	Orgs                 int     `json:"orgs"`
	Rounds               int     `json:"rounds"`
	DurationS            float64 `json:"duration_s"`
	Workload             string  `json:"workload"`
}

const workload = "1 tunnel create : 3 updates per client"

// Run starts the control plane on a scratch database and measures it.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Start == nil {
		return nil, errors.New("bench api: no way to start the control plane (Options.Start)")
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	dbURL, drop, err := store.ScratchDatabase(ctx, opts.AdminURL, "tunnelplane_benchapi")
	if err != nil {
		return nil, err
	}
	defer drop()
	dir, err := os.MkdirTemp("", "tunnelplane-benchapi-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sys, err := opts.Start(ctx, dbURL, dir)
	if err != nil {
		return nil, err
	}
	defer sys.Stop()

	b := &bench{progress: opts.Progress, sys: sys, opts: opts, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: opts.Clients * 2}, Timeout: 30 * time.Second}}
	defer b.client.CloseIdleConnections()
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	rounds, err := b.rounds(ctx)
	if err != nil {
		return nil, err
	}
	return summarize(opts, rounds), nil
}

// rounds measures every round: the API, then (with Baseline) the same workload in-process.
func (b *bench) rounds(ctx context.Context) ([]*Result, error) {
	var rounds []*Result
	for r := range b.opts.Rounds {
		stopProfile, err := StartCPUProfile(b.opts.CPUProfile)
		if err != nil {
			return nil, err
		}
		res, err := b.round(ctx, r)
		stopProfile()
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(b.progress, "bench api: round %d: %.0f commands/s, visible p50 %.1f ms p99 %.1f ms\n", r+1, res.CommandsPerS, res.VisibleP50, res.VisibleP99)
		if b.opts.Baseline {
			if res.BaselineCommandsPerS, err = b.baseline(ctx, r); err != nil {
				return nil, err
			}
			fmt.Fprintf(b.progress, "bench api: round %d baseline: %.0f commands/s in-process\n", r+1, res.BaselineCommandsPerS)
		}
		rounds = append(rounds, res)
	}
	return rounds, nil
}

// summarize takes the medians over the rounds and the totals.
func summarize(opts Options, rounds []*Result) *Result {
	med := func(f func(*Result) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		return stats.UpperMedian(v)
	}
	out := &Result{
		CommandsPerS: med(func(r *Result) float64 { return r.CommandsPerS }),
		VisibleP50:   med(func(r *Result) float64 { return r.VisibleP50 }),
		VisibleP99:   med(func(r *Result) float64 { return r.VisibleP99 }),
		WriteP50:     med(func(r *Result) float64 { return r.WriteP50 }),
		WriteP99:     med(func(r *Result) float64 { return r.WriteP99 }),
		Clients:      opts.Clients, Orgs: opts.Orgs, Rounds: opts.Rounds, DurationS: opts.Duration.Seconds(),
		Workload: workload,
	}
	for _, r := range rounds {
		out.Commands += r.Commands
		out.Errors += r.Errors
	}
	if opts.Baseline {
		out.BaselineCommandsPerS = med(func(r *Result) float64 { return r.BaselineCommandsPerS })
		if out.BaselineCommandsPerS > 0 {
			out.Ratio = out.CommandsPerS / out.BaselineCommandsPerS
		}
	}
	return out
}

// percentileMS is the nearest-rank percentile of d in milliseconds (to the microsecond).
func percentileMS(d []time.Duration, q float64) float64 {
	return float64(stats.Percentile(stats.Sorted(d), q).Microseconds()) / 1000
}
