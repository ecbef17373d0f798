// Package failover measures a node dying under load: a control plane, three nodes and one agent
// holding two of them, each its own process of the tunnelplane binary; POST calls at a steady
// rate enter at every node in turn (a node without the agent forwards them); one node holding the
// agent is killed with SIGKILL. It reports how soon the agent knew, how soon calls succeeded again
// through every node left, how many calls failed against how many were in flight on the killed
// node, and how many reached the upstream twice (counted there by call id). It owns nothing of
// the product; it assembles it.
package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	storebench "github.com/tunnelplane/tunnelplane/bench/store"
)

// ErrInvalidOptions is returned by Options.Validate.
var ErrInvalidOptions = errors.New("bench failover: invalid options")

// Options configure a run.
type Options struct {
	// AdminURL is a PostgreSQL server URL allowed to create databases (a scratch database is made
	// and dropped).
	AdminURL string
	// Exe is the tunnelplane binary (default: this executable).
	Exe string
	// Nodes is how many nodes run (default 3; the agent holds two).
	Nodes int
	// Rate is the calls per second, spread over the nodes in turn (default 500).
	Rate int
	// Before and After are how long the load runs before the kill and after it (default 5s, 10s).
	Before, After time.Duration
	// FailoverWait is the nodes' --failover-wait (default 5s).
	FailoverWait time.Duration
	// CallTimeout bounds one call (default 10s).
	CallTimeout time.Duration
	Progress    io.Writer
	Logger      *slog.Logger
}

func (o *Options) applyDefaults() {
	if o.Exe == "" {
		o.Exe, _ = os.Executable()
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Rate == 0 {
		o.Rate = 500
	}
	if o.Before == 0 {
		o.Before = 5 * time.Second
	}
	if o.After == 0 {
		o.After = 10 * time.Second
	}
	if o.FailoverWait == 0 {
		o.FailoverWait = 5 * time.Second
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 10 * time.Second
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
	if o.AdminURL == "" || o.Exe == "" {
		errs = append(errs, fmt.Errorf("%w: AdminURL and the tunnelplane binary are required", ErrInvalidOptions))
	}
	if o.Nodes < 3 || o.Nodes > 9 {
		errs = append(errs, fmt.Errorf("%w: nodes must be 3..9 (the agent holds two, one is killed, one takes over)", ErrInvalidOptions))
	}
	if o.Rate < 1 || o.Rate > 20_000 {
		errs = append(errs, fmt.Errorf("%w: rate must be 1..20000 calls/s", ErrInvalidOptions))
	}
	if o.Before < time.Second || o.After < time.Second || o.FailoverWait < 0 || o.CallTimeout < time.Second {
		errs = append(errs, fmt.Errorf("%w: before, after and the call timeout at least 1s, the failover wait not negative", ErrInvalidOptions))
	}
	return errors.Join(errs...)
}

// Result is what a run measured.
type Result struct {
	Nodes  int     `json:"nodes"`
	Rate   int     `json:"rate"`
	Calls  int     `json:"calls"`
	Killed string  `json:"killed_node"`
	RateOK float64 `json:"calls_per_s"` // the calls per second actually started
	// DetectMS is from the kill to the agent's "failover started" (it lost the node).
	DetectMS float64 `json:"detect_ms"`
	// RecoverMS is from the kill to when calls succeed again through every node left: per node,
	// the end of the first call started after the kill that succeeded with every later one; the
	// latest of those.
	RecoverMS float64 `json:"recover_ms"`
	// FailedCalls are the calls through the nodes left that failed, and the calls entering at the
	// killed node that it had taken (in flight at the kill); InFlightAtKill is every call not yet
	// answered at the kill and started before the killed node had exited.
	FailedCalls    int `json:"failed_calls"`
	InFlightAtKill int `json:"in_flight_at_kill"`
	// DuplicatedCalls are the call ids the upstream saw more than once (must be 0).
	DuplicatedCalls int `json:"duplicated_calls"`
	// Latency of the calls that succeeded after the kill, through the nodes left.
	P50AfterMS float64           `json:"p50_after_ms"`
	P99AfterMS float64           `json:"p99_after_ms"`
	Forwarded  bool              `json:"forwarded"` // calls entered at a node without the agent
	Targets    map[string]string `json:"targets"`
}

// Run starts the system, runs the load, kills a node holding the agent and measures.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.applyDefaults()
	progress := func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) }
	dbURL, drop, err := storebench.ScratchDatabase(ctx, o.AdminURL, "tpbench_failover")
	if err != nil {
		return nil, err
	}
	defer drop()
	up := newUpstream()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: up, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()

	progress("starting a control plane, %d nodes and an agent holding two", o.Nodes)
	sys, stop, err := startSystem(ctx, &o, dbURL, "http://"+l.Addr().String())
	if err != nil {
		return nil, err
	}
	defer stop()
	var holders []*nodeProc
	for deadline := time.Now().Add(10 * time.Second); len(holders) != 2 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if holders, err = sys.holders(ctx); err != nil {
			return nil, err
		}
	}
	if len(holders) != 2 {
		return nil, fmt.Errorf("bench failover: the agent holds %d nodes, want 2", len(holders))
	}
	victim := holders[0]

	progress("load: %d POST calls/s through %d nodes in turn for %s, then SIGKILL %s, then %s more", o.Rate, o.Nodes, o.Before, victim.name, o.After)
	ld := newLoad(&o, sys)
	lctx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); ld.run(lctx) }()

	var detected atomic.Int64
	sys.agent.watch(func(line string) bool {
		if strings.Contains(line, `"failover started"`) && strings.Contains(line, victim.addr) {
			detected.Store(time.Now().UnixNano())
			return true
		}
		return false
	})
	select {
	case <-time.After(o.Before):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	kill := ld.killAt(victim)
	if err := victim.cmd.Process.Kill(); err != nil {
		return nil, fmt.Errorf("bench failover: kill %s: %w", victim.name, err)
	}
	// The node dies a little after the signal: a call started in between may still have reached
	// it (through a peer), so it was in flight at the kill.
	select {
	case <-victim.done:
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("bench failover: %s still runs 10 s after SIGKILL", victim.name)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	died := time.Now()
	select {
	case <-time.After(o.After):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cancelLoad()
	<-loadDone
	calls := ld.finished()
	res := summarize(calls, kill, died, victim.name, o)
	if d := detected.Load(); d > 0 {
		res.DetectMS = float64(time.Unix(0, d).Sub(kill).Microseconds()) / 1000
	} else {
		res.DetectMS = -1
	}
	res.DuplicatedCalls = up.duplicates()
	res.Forwarded = slices.ContainsFunc(sys.nodes, func(n *nodeProc) bool { return !slices.Contains(holders, n) })
	res.Targets = map[string]string{
		"recover_ms":       target(res.RecoverMS >= 0 && res.RecoverMS <= 2000, fmt.Sprintf("%.0f ≤ 2000", res.RecoverMS)),
		"duplicated_calls": target(res.DuplicatedCalls == 0, fmt.Sprintf("%d = 0", res.DuplicatedCalls)),
	}
	return res, nil
}

func target(ok bool, what string) string {
	if ok {
		return "met: " + what
	}
	return "missed: " + what
}

// upstream answers every call and counts its id (X-Bench-Call).
type upstream struct {
	mu   sync.Mutex
	seen map[string]int
}

func newUpstream() *upstream { return &upstream{seen: map[string]int{}} }

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	if id := r.Header.Get("X-Bench-Call"); id != "" {
		u.mu.Lock()
		u.seen[id]++
		u.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func (u *upstream) duplicates() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.seen {
		if c > 1 {
			n++
		}
	}
	return n
}
