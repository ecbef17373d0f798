package main

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/storebench"
	"github.com/tunnelplane/tunnelplane/projections"
)

// benchAPIOptions configures `bench api`.
type benchAPIOptions struct {
	Duration time.Duration
	Rounds   int
	Clients  int
	Orgs     int
	// Baseline also measures the same commands called in-process (no HTTP, no token checks).
	Baseline bool
	// CPUProfile, when set, receives a CPU profile of the HTTP rounds.
	CPUProfile string
}

func (o benchAPIOptions) Validate() error {
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

// benchAPIResult is what `bench api` reports: medians over the rounds.
type benchAPIResult struct {
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

func newBenchAPICommand(g *globals) *cobra.Command {
	opts := benchAPIOptions{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Commands/s and command→read-model latency of the admin API over real HTTP (scratch database)",
		Long: `bench api starts the control plane in-process on loopback against a scratch database (dropped
afterwards) and drives it with concurrent HTTP clients creating and updating tunnels across a few
organizations. It reports commands per second and the latency from sending a write until the
tunnels read model shows its position (p50, p99), medians over the rounds, and the same commands
called in-process as the baseline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGC()
			if err := opts.Validate(); err != nil {
				return err
			}
			res, err := runBenchAPI(cmd.Context(), g, opts)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(g.stdout, "commands: %.0f/s (%d commands, %d errors, %d clients, %d orgs, %s)\n", res.CommandsPerS, res.Commands, res.Errors,
				res.Clients, res.Orgs, res.Workload)
			fmt.Fprintf(g.stdout, "visible in the read model: p50 %.1f ms, p99 %.1f ms   write round trip: p50 %.1f ms, p99 %.1f ms\n",
				res.VisibleP50, res.VisibleP99, res.WriteP50, res.WriteP99)
			if res.BaselineCommandsPerS > 0 {
				fmt.Fprintf(g.stdout, "baseline (in-process commands): %.0f/s; API/baseline %.2f\n", res.BaselineCommandsPerS, res.Ratio)
			}
			fmt.Fprintf(g.stdout, "medians of %d rounds of %s\n", res.Rounds, opts.Duration)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&opts.Duration, "duration", 5*time.Second, "length of each round")
	f.IntVar(&opts.Rounds, "rounds", 3, "rounds (medians are reported)")
	f.IntVar(&opts.Clients, "clients", 16, "concurrent HTTP clients")
	f.IntVar(&opts.Orgs, "orgs", 4, "organizations the clients spread over")
	f.BoolVar(&opts.Baseline, "baseline", true, "also measure the commands in-process")
	f.BoolVar(&asJSON, "json", false, "print JSON (keys commands_per_s, visible_p50_ms, visible_p99_ms …)")
	f.StringVar(&opts.CPUProfile, "cpuprofile", "", "write a CPU profile of the HTTP rounds to this file")
	return cmd
}

func runBenchAPI(ctx context.Context, g *globals, opts benchAPIOptions) (*benchAPIResult, error) {
	srv, err := g.resolveDatabase(ctx)
	if err != nil {
		return nil, err
	}
	dbURL, drop, err := storebench.ScratchDatabase(ctx, srv.AdminURL, "tunnelplane_benchapi")
	if err != nil {
		return nil, err
	}
	defer drop()
	dir, err := os.MkdirTemp("", "tunnelplane-benchapi-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Request logs at info would measure the terminal; the bench logs warnings only.
	bg := *g
	bg.databaseURL, bg.dataDir = dbURL, dir
	bg.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cp, err := startControlPlane(ctx, &bg, controlPlaneOptions{Listener: ln, DBMaxConns: 32})
	if err != nil {
		ln.Close()
		return nil, err
	}
	defer cp.Stop()

	b := &apiBench{progress: g.stderr, cp: cp, opts: opts, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: opts.Clients * 2}, Timeout: 30 * time.Second}}
	defer b.client.CloseIdleConnections()
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	var rounds []*benchAPIResult
	for r := range opts.Rounds {
		stopProfile, err := startCPUProfile(opts.CPUProfile)
		if err != nil {
			return nil, err
		}
		res, err := b.round(ctx, r)
		stopProfile()
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(g.stderr, "bench api: round %d: %.0f commands/s, visible p50 %.1f ms p99 %.1f ms\n", r+1, res.CommandsPerS, res.VisibleP50, res.VisibleP99)
		if opts.Baseline {
			if res.BaselineCommandsPerS, err = b.baseline(ctx, r); err != nil {
				return nil, err
			}
			fmt.Fprintf(g.stderr, "bench api: round %d baseline: %.0f commands/s in-process\n", r+1, res.BaselineCommandsPerS)
		}
		rounds = append(rounds, res)
	}
	med := func(f func(*benchAPIResult) float64) float64 {
		v := make([]float64, len(rounds))
		for i, r := range rounds {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	out := &benchAPIResult{
		CommandsPerS: med(func(r *benchAPIResult) float64 { return r.CommandsPerS }),
		VisibleP50:   med(func(r *benchAPIResult) float64 { return r.VisibleP50 }),
		VisibleP99:   med(func(r *benchAPIResult) float64 { return r.VisibleP99 }),
		WriteP50:     med(func(r *benchAPIResult) float64 { return r.WriteP50 }),
		WriteP99:     med(func(r *benchAPIResult) float64 { return r.WriteP99 }),
		Clients:      opts.Clients, Orgs: opts.Orgs, Rounds: opts.Rounds, DurationS: opts.Duration.Seconds(),
		Workload: "1 tunnel create : 3 updates per client",
	}
	for _, r := range rounds {
		out.Commands += r.Commands
		out.Errors += r.Errors
	}
	if opts.Baseline {
		out.BaselineCommandsPerS = med(func(r *benchAPIResult) float64 { return r.BaselineCommandsPerS })
		if out.BaselineCommandsPerS > 0 {
			out.Ratio = out.CommandsPerS / out.BaselineCommandsPerS
		}
	}
	return out, nil
}

type apiBench struct {
	progress io.Writer
	cp       *controlPlane
	opts     benchAPIOptions
	client   *http.Client
	orgs     []string // ids
	tokens   []string // one owner token per org
}

func (b *apiBench) setup(ctx context.Context) error {
	sys := commands.WithActor(ctx, commands.Actor{ID: "system:bench"})
	if _, err := b.cp.Service.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "bench-root", Role: domain.RoleSuperadmin}); err != nil {
		return err
	}
	root, err := b.mint("bench-root")
	if err != nil {
		return err
	}
	for i := range b.opts.Orgs {
		var res commands.Result
		owner := fmt.Sprintf("bench-owner-%d", i)
		if err := b.do(ctx, root, "POST", "/api/v1/orgs", map[string]string{"name": fmt.Sprintf("bench-%d", i), "owner": owner}, &res); err != nil {
			return fmt.Errorf("bench api: create org: %w", err)
		}
		tok, err := b.mint(owner)
		if err != nil {
			return err
		}
		b.orgs, b.tokens = append(b.orgs, res.ID), append(b.tokens, tok)
	}
	return nil
}

func (b *apiBench) mint(user string) (string, error) {
	return token.MintUser(b.cp.Service.TokenKey(), token.DefaultIssuer, user, "", 2*time.Hour, time.Now())
}

// do sends one request; a non-2xx answer is an error.
func (b *apiBench) do(ctx context.Context, tok, method, path string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, b.cp.URL+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, res.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

// pending is a write waiting to become visible.
type pending struct {
	pos  uint64
	sent time.Time
}

type pendingHeap []pending

func (h pendingHeap) Len() int           { return len(h) }
func (h pendingHeap) Less(i, j int) bool { return h[i].pos < h[j].pos }
func (h pendingHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *pendingHeap) Push(x any)        { *h = append(*h, x.(pending)) }
func (h *pendingHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// observe records, for every write sent on in, when the tunnels read model reached its position.
// One goroutine watches the runner instead of one waiter per write.
func (b *apiBench) observe(ctx context.Context, in <-chan pending, out *[]time.Duration, done chan<- struct{}) {
	defer close(done)
	var h pendingHeap
	open := true
	for (open || h.Len() > 0) && ctx.Err() == nil {
		if h.Len() == 0 {
			p, ok := <-in
			if !ok {
				return
			}
			heap.Push(&h, p)
		}
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := b.cp.Runner.WaitFor(wctx, h[0].pos, projections.Tunnels)
		cancel()
		if errors.Is(err, projections.ErrStopped) {
			return
		}
		now := time.Now()
		if cur, _ := b.cp.Runner.Position(projections.Tunnels); cur >= 0 {
			for h.Len() > 0 && h[0].pos <= uint64(cur) {
				p := heap.Pop(&h).(pending)
				*out = append(*out, now.Sub(p.sent))
			}
		}
		for drained := false; !drained && open; {
			select {
			case p, ok := <-in:
				if !ok {
					open = false
				} else {
					heap.Push(&h, p)
				}
			default:
				drained = true
			}
		}
	}
}

func (b *apiBench) round(ctx context.Context, round int) (*benchAPIResult, error) {
	in := make(chan pending, 1<<16)
	var visible []time.Duration
	observed := make(chan struct{})
	octx, stopObserving := context.WithCancel(ctx)
	defer func() {
		stopObserving()
		<-observed
	}()
	go b.observe(octx, in, &visible, observed)

	var wg sync.WaitGroup
	var errCount atomic.Int64
	var firstErr atomic.Value
	writes := make([][]time.Duration, b.opts.Clients)
	deadline := time.Now().Add(b.opts.Duration)
	start := time.Now()
	for c := range b.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			org := c % b.opts.Orgs
			tok := b.tokens[org]
			var mine []string
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				var res commands.Result
				sent := time.Now()
				var err error
				if n%4 == 0 || len(mine) == 0 {
					err = b.do(ctx, tok, "POST", "/api/v1/tunnels?org="+b.orgs[org],
						map[string]string{"name": fmt.Sprintf("r%d-c%d-t%d", round, c, n), "upstream": "http://127.0.0.1:11434"}, &res)
					if err == nil {
						mine = append(mine, res.ID)
					}
				} else {
					id := mine[n%len(mine)]
					err = b.do(ctx, tok, "PATCH", "/api/v1/tunnels/"+id+"?org="+b.orgs[org],
						map[string]string{"upstream": fmt.Sprintf("http://127.0.0.1:%d", 1024+n%60000)}, &res)
				}
				if err != nil {
					if errCount.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				writes[c] = append(writes[c], time.Since(sent))
				in <- pending{pos: res.Position, sent: sent}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(in)
	select {
	case <-observed:
	case <-time.After(30 * time.Second):
		return nil, errors.New("bench api: writes did not become visible in the read model within 30s")
	}

	var all []time.Duration
	for _, w := range writes {
		all = append(all, w...)
	}
	if len(visible) < len(all) {
		cur, _ := b.cp.Runner.Position(projections.Tunnels)
		return nil, fmt.Errorf("bench api: the tunnels read model stopped at position %d before showing every write", cur)
	}
	if len(all) == 0 {
		err, _ := firstErr.Load().(error)
		return nil, fmt.Errorf("bench api: no command succeeded: %v", err)
	}
	if n := errCount.Load(); n > int64(len(all))/100 {
		err, _ := firstErr.Load().(error)
		return nil, fmt.Errorf("bench api: %d of %d commands failed, first: %v", n, int64(len(all))+n, err)
	}
	if err, _ := firstErr.Load().(error); err != nil {
		fmt.Fprintf(b.progress, "bench api: round %d: %d commands failed, first: %v\n", round+1, errCount.Load(), err)
	}
	return &benchAPIResult{CommandsPerS: float64(len(all)) / elapsed.Seconds(), Commands: len(all), Errors: int(errCount.Load()),
		VisibleP50: percentileMS(visible, 0.50), VisibleP99: percentileMS(visible, 0.99),
		WriteP50: percentileMS(all, 0.50), WriteP99: percentileMS(all, 0.99)}, nil
}

// baseline runs the same workload through the command handlers in-process: the store, the
// aggregates, authorization and the read models, without HTTP, JSON and token verification.
func (b *apiBench) baseline(ctx context.Context, round int) (float64, error) {
	var wg sync.WaitGroup
	var count, failed atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(b.opts.Duration)
	start := time.Now()
	h := b.cp.Service.Handlers
	for c := range b.opts.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			org := c % b.opts.Orgs
			actx := commands.WithActor(ctx, commands.Actor{ID: fmt.Sprintf("bench-owner-%d", org)})
			var mine []string
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				var err error
				if n%4 == 0 || len(mine) == 0 {
					var res commands.Result
					res, err = h.CreateTunnel.Handle(actx, commands.CreateTunnel{OrgID: b.orgs[org], Name: fmt.Sprintf("b%d-c%d-t%d", round, c, n), Upstream: "http://127.0.0.1:11434"})
					if err == nil {
						mine = append(mine, res.ID)
					}
				} else {
					up := fmt.Sprintf("http://127.0.0.1:%d", 1024+n%60000)
					_, err = h.UpdateTunnel.Handle(actx, commands.UpdateTunnel{OrgID: b.orgs[org], TunnelID: mine[n%len(mine)], Upstream: &up})
				}
				if err != nil {
					if failed.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > count.Load()/100 {
		err, _ := firstErr.Load().(error)
		return 0, fmt.Errorf("bench api baseline: %d commands failed, first: %v", failed.Load(), err)
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}

// startCPUProfile profiles until the returned stop (a no-op without a file). With several rounds
// the file holds the last round's profile.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func percentileMS(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i].Microseconds()) / 1000
}
