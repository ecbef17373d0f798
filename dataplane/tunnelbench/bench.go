package tunnelbench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ErrInvalidOptions is returned by Options.Validate.
var ErrInvalidOptions = errors.New("tunnelbench: invalid options")

// Options configure a bench run.
type Options struct {
	// Duration of each request-rate measurement (default 2s).
	Duration time.Duration
	// Rounds of every direct/tunnel pair; medians are reported (default 3).
	Rounds int
	// BulkBytes is the size of the bulk download (default 1 GiB).
	BulkBytes int64
	// IdleAgents connect for the memory and connect-time measurement (default 300).
	IdleAgents int
	// Streams and StreamChunks, StreamInterval shape the streaming measurement (default 10
	// streams of 20 chunks 10ms apart).
	Streams, StreamChunks int
	StreamInterval        time.Duration
	// Exe and ExeArgs start a child: Exe ExeArgs… <role> (default: this executable and
	// "bench-tunnel-child").
	Exe     string
	ExeArgs []string
	// ProfileDir, when set, receives CPU profiles of the node and the agent for each phase.
	ProfileDir string
	// SchedTraceDir, when set, receives a `perf record` of the scheduler (sched_switch,
	// sched_waking on every CPU) during the first round's stream phase, and the result gets
	// Hops: per process on a chunk's way, how long it waited to run and how long it ran.
	// Needs perf (Debian: linux-perf) and the right to trace (root).
	SchedTraceDir string
	// Phases limits the run to some of Phases (nil: all). Values of skipped phases are zero and
	// their targets are left out of the result.
	Phases []string
	// Progress receives a line per phase (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

func (o *Options) applyDefaults() {
	if o.Duration == 0 {
		o.Duration = 2 * time.Second
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.BulkBytes == 0 {
		o.BulkBytes = 1 << 30
	}
	if o.IdleAgents == 0 {
		o.IdleAgents = 300
	}
	if o.Streams == 0 {
		o.Streams = 10
	}
	if o.StreamChunks == 0 {
		o.StreamChunks = 20
	}
	if o.StreamInterval == 0 {
		o.StreamInterval = 10 * time.Millisecond
	}
	if o.Exe == "" {
		o.Exe, _ = os.Executable()
		if o.ExeArgs == nil {
			o.ExeArgs = []string{"bench-tunnel-child"}
		}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// AllPhases are the measurements a run can take, in the order it takes them.
var AllPhases = []string{"bulk", "c1", "c64", "stream", "idle"}

func (o *Options) runs(phase string) bool {
	return len(o.Phases) == 0 || slices.Contains(o.Phases, phase)
}

// Validate reports every bad option; zero values count as their defaults.
func (o Options) Validate() error {
	o.applyDefaults()
	var errs []error
	for _, p := range o.Phases {
		if !slices.Contains(AllPhases, p) {
			errs = append(errs, fmt.Errorf("%w: unknown phase %q (phases: %v)", ErrInvalidOptions, p, AllPhases))
		}
	}
	if o.Duration < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("%w: duration %v is below 100ms", ErrInvalidOptions, o.Duration))
	}
	if o.Rounds < 1 || o.BulkBytes < 1 || o.IdleAgents < 1 || o.Streams < 1 || o.StreamChunks < 1 || o.StreamInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: rounds, bulk bytes, idle agents and stream sizes must be positive", ErrInvalidOptions))
	}
	if o.Exe == "" {
		errs = append(errs, fmt.Errorf("%w: cannot find the executable to start children with", ErrInvalidOptions))
	}
	if o.SchedTraceDir != "" {
		if _, err := exec.LookPath("perf"); err != nil {
			errs = append(errs, fmt.Errorf("%w: a scheduler trace needs perf (Debian package linux-perf): %w", ErrInvalidOptions, err))
		}
		if !o.runs("stream") {
			errs = append(errs, fmt.Errorf("%w: a scheduler trace is taken in the stream phase, which this run leaves out", ErrInvalidOptions))
		}
	}
	return errors.Join(errs...)
}

// Result holds medians over the rounds. Ratios are tunnel / direct (higher is better); "added"
// values are tunnel minus direct.
type Result struct {
	Rounds   int    `json:"rounds"`
	Duration string `json:"duration"`
	Baseline string `json:"baseline"`
	Cipher   string `json:"cipher"`
	KEX      string `json:"kex"`
	CPUs     int    `json:"cpus"`

	BulkBytes      int64   `json:"bulk_bytes"`
	BulkDirectMBps float64 `json:"bulk_direct_mbps"`
	BulkTunnelMBps float64 `json:"bulk_tunnel_mbps"`
	BulkRatio      float64 `json:"bulk_ratio"`
	RPSC1Direct    float64 `json:"rps_c1_direct"`
	RPSC1Tunnel    float64 `json:"rps_c1_tunnel"`
	RPSC1Ratio     float64 `json:"rps_c1_ratio"`
	P50C1DirectUS  float64 `json:"p50_c1_direct_us"`
	P50C1TunnelUS  float64 `json:"p50_c1_tunnel_us"`
	P50C1AddedUS   float64 `json:"p50_c1_added_us"`
	P99C1DirectUS  float64 `json:"p99_c1_direct_us"`
	P99C1TunnelUS  float64 `json:"p99_c1_tunnel_us"`
	RPSC64Direct   float64 `json:"rps_c64_direct"`
	RPSC64Tunnel   float64 `json:"rps_c64_tunnel"`
	RPSC64Ratio    float64 `json:"rps_c64_ratio"`
	P50C64DirectUS float64 `json:"p50_c64_direct_us"`
	P50C64TunnelUS float64 `json:"p50_c64_tunnel_us"`
	P99C64DirectUS float64 `json:"p99_c64_direct_us"`
	P99C64TunnelUS float64 `json:"p99_c64_tunnel_us"`
	// The reference: the same load through two bare TCP relay processes (io.Copy), the floor
	// of any design that puts two processes between caller and origin.
	RPSC64Relay      float64 `json:"rps_c64_relay"`
	RPSC64RelayRatio float64 `json:"rps_c64_relay_ratio"`
	TTFBDirectUS     float64 `json:"ttfb_direct_us"`
	TTFBTunnelUS     float64 `json:"ttfb_tunnel_us"`
	TTFBAddedUS      float64 `json:"ttfb_added_us"`
	ChunkDirectUS    float64 `json:"chunk_direct_us_p50"`
	ChunkTunnelUS    float64 `json:"chunk_tunnel_us_p50"`
	ChunkAddedUSP50  float64 `json:"chunk_added_us_p50"`
	ChunkAddedUSP99  float64 `json:"chunk_added_us_p99"`
	ChunkRelayUS     float64 `json:"chunk_relay_us_p50"`
	ChunkRelayAdded  float64 `json:"chunk_relay_added_us_p50"`

	IdleAgents             int     `json:"idle_agents"`
	IdleKiBPerAgent        float64 `json:"idle_kib_per_agent"`
	IdleHeapKiBPerAgent    float64 `json:"idle_heap_kib_per_agent"`
	IdleGoroutinesPerAgent float64 `json:"idle_goroutines_per_agent"`
	ConnectMSP50           float64 `json:"connect_ms_p50"`
	ConnectMSP95           float64 `json:"connect_ms_p95"`

	// Hops (with SchedTraceDir): for "direct", "tunnel" and "relays", each process after the
	// origin on a chunk's way.
	Hops map[string][]Hop `json:"hops,omitempty"`

	Targets map[string]Target `json:"targets"`
}

// mixSlice is the turn length of the interleaved request-rate measurements.
const mixSlice = 250 * time.Millisecond

// Target is one required bound and whether the run met it.
type Target struct {
	Value float64 `json:"value"`
	Bound float64 `json:"bound"`
	Max   bool    `json:"max"` // the value must not exceed the bound (else: not fall below it)
	Met   bool    `json:"met"`
}

// child is a running bench process.
type child struct {
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  *bufio.Scanner
	stderr *bytes.Buffer
	mu     sync.Mutex
}

func (o *Options) start(ctx context.Context, role string, sp spec) (*child, error) {
	args := append(slices.Clone(o.ExeArgs), role)
	cmd := exec.CommandContext(ctx, o.Exe, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &lockedBuffer{b: &stderr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s child: %w", role, err)
	}
	c := &child{role: role, cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout), stderr: &stderr}
	c.lines.Buffer(make([]byte, 1<<20), 64<<20)
	b, _ := json.Marshal(sp)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		c.stop()
		return nil, fmt.Errorf("send spec to %s: %w", role, err)
	}
	return c, nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// next reads the child's next message.
func (c *child) next() (message, error) {
	if !c.lines.Scan() {
		err := c.cmd.Wait()
		return message{}, fmt.Errorf("%s child ended (%v): %s", c.role, err, tail(c.stderr.String()))
	}
	var m message
	if err := json.Unmarshal(c.lines.Bytes(), &m); err != nil {
		return m, fmt.Errorf("%s child said %q: %w", c.role, c.lines.Text(), err)
	}
	if m.Error != "" {
		return m, fmt.Errorf("%s child: %s", c.role, m.Error)
	}
	return m, nil
}

func (c *child) command(cmd string) (message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return message{}, err
	}
	return c.next()
}

func (c *child) stop() {
	c.stdin.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// Run measures the tunnel against direct access to the same origin.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.applyDefaults()
	began := time.Now()
	progress := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "[%5.1fs] "+format+"\n", append([]any{time.Since(began).Seconds()}, args...)...)
	}

	tokenKey, err := eventstore.GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	hostKey, _ := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(seed))
	userTok, err := token.MintUser(tokenKey, token.DefaultIssuer, benchUser, "bench", 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	agentTok := func(tunnel string) string {
		t, err := token.MintAgent(tokenKey, token.DefaultIssuer, "jti-"+tunnel, "org-bench", tunnel, time.Now().Add(24*time.Hour), time.Now())
		if err != nil {
			panic(err) // only fails for empty ids
		}
		return t
	}

	var children []*child
	defer func() {
		for _, c := range slices.Backward(children) {
			c.stop()
		}
	}()
	startServer := func(role string, sp spec) (*child, string, error) {
		c, err := o.start(ctx, role, sp)
		if err != nil {
			return nil, "", err
		}
		children = append(children, c)
		m, err := c.next()
		return c, m.Addr, err
	}
	originChild, originAddr, err := startServer(RoleOrigin, spec{})
	if err != nil {
		return nil, err
	}
	nodeChild, nodeAddr, err := startServer(RoleNode, spec{
		HostKeySeed: seed, TokenKeyID: tokenKey.ID(), TokenPub: tokenKey.Public(), IdleTunnels: o.IdleAgents,
	})
	if err != nil {
		return nil, err
	}
	fp := ssh.FingerprintSHA256(hostKey.PublicKey())
	agentChild, err := o.start(ctx, RoleAgents, spec{
		NodeURL: "ws://" + nodeAddr + "/v1/agent", Fingerprint: fp, Upstream: "http://" + originAddr,
		Tokens: []string{agentTok("tun-bench")},
	})
	if err != nil {
		return nil, err
	}
	children = append(children, agentChild)
	if _, err := agentChild.next(); err != nil {
		return nil, err
	}
	progress("origin %s, node %s, agent connected", originAddr, nodeAddr)

	// Two bare relays in a row, agent-like next to the origin and node-like next to the caller.
	relayAChild, relayA, err := startServer(RoleRelay, spec{Target: originAddr})
	if err != nil {
		return nil, err
	}
	relayBChild, relayB, err := startServer(RoleRelay, spec{Target: relayA})
	if err != nil {
		return nil, err
	}

	direct := "http://" + originAddr
	relayed := "http://" + relayB
	tunnel := "http://" + nodeAddr + "/t/bench"
	var loadPid int // of the last load generator started
	load := func(s loadSpec) (*loadResult, error) {
		c, err := o.start(ctx, RoleLoad, spec{Load: &s})
		if err != nil {
			return nil, err
		}
		loadPid = c.cmd.Process.Pid
		defer c.stop()
		m, err := c.next()
		if err != nil {
			return nil, err
		}
		return m.Load, nil
	}
	// profiled runs f with CPU profiles of node and agent when a profile dir is set.
	profiled := func(phase string, f func() error) error {
		if o.ProfileDir == "" {
			return f()
		}
		os.MkdirAll(o.ProfileDir, 0o755)
		for _, c := range []*child{nodeChild, agentChild} {
			if _, err := c.command("profile " + filepath.Join(o.ProfileDir, c.role+"-"+phase+".pprof")); err != nil {
				return err
			}
		}
		err := f()
		for _, c := range []*child{nodeChild, agentChild} {
			c.command("profile-stop")
		}
		return err
	}

	// Warm up both paths (connections, pools, the auth cache).
	for _, base := range []string{direct, tunnel} {
		if _, err := load(loadSpec{Mode: "rps", URL: base + "/small", Token: userTok, Concurrency: 8, Duration: 300 * time.Millisecond}); err != nil {
			return nil, fmt.Errorf("warm-up %s: %w", base, err)
		}
	}

	var bulkD, bulkT, c1D, c1T, c64D, c64T []*loadResult
	var streamD, streamT []*loadResult
	var c64R, streamR []*loadResult // through the two bare relays
	var hops map[string][]Hop
	for r := range o.Rounds {
		progress("round %d/%d", r+1, o.Rounds)
		small := func(conc int, targets ...mixTarget) loadSpec {
			return loadSpec{Mode: "mix", Mix: targets, Concurrency: conc, Duration: o.Duration, Slice: mixSlice}
		}
		for _, m := range []struct {
			name   string
			spec   loadSpec
			dsts   []*[]*loadResult // one per target of a mix, else one
			tunnel int              // index in dsts of the tunnel's result (node and agent CPU), -1: none
		}{
			{"bulk", loadSpec{Mode: "bulk", URL: fmt.Sprintf("%s/bulk?n=%d", direct, o.BulkBytes)}, []*[]*loadResult{&bulkD}, -1},
			{"bulk", loadSpec{Mode: "bulk", URL: fmt.Sprintf("%s/bulk?n=%d", tunnel, o.BulkBytes), Token: userTok}, []*[]*loadResult{&bulkT}, 0},
			{"c1", small(1, mixTarget{URL: direct + "/small"}, mixTarget{URL: tunnel + "/small", Token: userTok}), []*[]*loadResult{&c1D, &c1T}, 1},
			{"c64", small(64, mixTarget{URL: direct + "/small"}, mixTarget{URL: tunnel + "/small", Token: userTok}, mixTarget{URL: relayed + "/small"}),
				[]*[]*loadResult{&c64D, &c64T, &c64R}, 1},
			{"stream", loadSpec{Mode: "stream", Streams: o.Streams, Mix: []mixTarget{
				{URL: fmt.Sprintf("%s/stream?n=%d&interval=%v", direct, o.StreamChunks, o.StreamInterval)},
				{URL: fmt.Sprintf("%s/stream?n=%d&interval=%v", tunnel, o.StreamChunks, o.StreamInterval), Token: userTok},
				{URL: fmt.Sprintf("%s/stream?n=%d&interval=%v", relayed, o.StreamChunks, o.StreamInterval)},
			}}, []*[]*loadResult{&streamD, &streamT, &streamR}, 1},
		} {
			if !o.runs(m.name) {
				continue
			}
			var res *loadResult
			run := func() error {
				var err error
				res, err = load(m.spec)
				return err
			}
			var err error
			n0, a0 := cpuOf(nodeChild), cpuOf(agentChild)
			switch {
			case m.name == "stream" && r == 0 && o.SchedTraceDir != "":
				hops, err = schedTraced(o.SchedTraceDir, func() error { return profiled(m.name, run) }, func() map[string]hopPath {
					pid := func(c *child) int { return c.cmd.Process.Pid }
					return map[string]hopPath{
						"direct": {[]int{pid(originChild), loadPid}, []string{"caller"}},
						"tunnel": {[]int{pid(originChild), pid(agentChild), pid(nodeChild), loadPid}, []string{"agent", "node", "caller"}},
						"relays": {[]int{pid(originChild), pid(relayAChild), pid(relayBChild), loadPid}, []string{"relay 1", "relay 2", "caller"}},
					}
				})
			case m.tunnel >= 0 && r == 0:
				err = profiled(m.name, run)
			default:
				err = run()
			}
			if err != nil {
				if m.spec.URL != "" {
					err = fmt.Errorf("%s: %w", m.spec.URL, err)
				}
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			parts := []*loadResult{res}
			if len(m.spec.Mix) > 0 {
				parts = res.Parts
			}
			if len(parts) != len(m.dsts) {
				return nil, fmt.Errorf("%s: %d results for %d targets", m.name, len(parts), len(m.dsts))
			}
			if m.tunnel >= 0 {
				t := parts[m.tunnel]
				t.NodeCPU, t.AgentCPU = cpuOf(nodeChild)-n0, cpuOf(agentChild)-a0
				t.NodeAgentCPU = t.NodeCPU + t.AgentCPU
			}
			for i, d := range m.dsts {
				*d = append(*d, parts[i])
			}
		}
		last := func(s []*loadResult) *loadResult { return s[len(s)-1] }
		if len(bulkT) > 0 {
			b := last(bulkT)
			progress("  bulk %.0f / %.0f MB/s (direct / tunnel); CPU node / agent %.2f / %.2f ns/B",
				mbps(last(bulkD)), mbps(b), b.NodeCPU/float64(b.Bytes)*1e9, b.AgentCPU/float64(b.Bytes)*1e9)
		}
		for _, c := range []struct {
			name string
			d, t []*loadResult
		}{{"c1", c1D, c1T}, {"c64", c64D, c64T}} {
			if len(c.t) > 0 {
				t := last(c.t)
				progress("  %s %.0f / %.0f rps (direct / tunnel); CPU node / agent %.0f / %.0f µs/req",
					c.name, rps(last(c.d)), rps(t), perReq(t, t.NodeCPU), perReq(t, t.AgentCPU))
			}
		}
		if len(c64R) > 0 {
			progress("  c64 through two bare relays %.0f rps", rps(last(c64R)))
		}
		if len(streamT) > 0 {
			d, t, r := last(streamD), last(streamT), last(streamR)
			progress("  stream chunk delay p50 %.0f / %.0f / %.0f µs (direct / tunnel / two bare relays)",
				quantile(sorted(d.ChunkDelay), .5), quantile(sorted(t.ChunkDelay), .5), quantile(sorted(r.ChunkDelay), .5))
		}
		if hops != nil && r == 0 {
			for _, k := range []string{"direct", "tunnel", "relays"} {
				progress("  scheduler, %s: %s", k, hopLine(hops[k]))
			}
		}
	}

	res := &Result{Rounds: o.Rounds, Duration: o.Duration.String(), BulkBytes: o.BulkBytes, CPUs: runtimeCPUs(),
		Baseline: "the same load generator straight to the same origin: request rates in turns of 250ms with the tunnel (and the two bare relays) in one run, streams taking turns stream by stream, bulk in back-to-back runs",
		Cipher:   "aes128-gcm@openssh.com", KEX: "mlkem768x25519-sha256"}
	res.BulkDirectMBps = medianOf(bulkD, mbps)
	res.BulkTunnelMBps = medianOf(bulkT, mbps)
	res.BulkRatio = medianRatio(bulkT, bulkD, mbps)
	res.RPSC1Direct, res.RPSC1Tunnel = medianOf(c1D, rps), medianOf(c1T, rps)
	res.RPSC1Ratio = medianRatio(c1T, c1D, rps)
	res.RPSC64Direct, res.RPSC64Tunnel = medianOf(c64D, rps), medianOf(c64T, rps)
	res.RPSC64Ratio = medianRatio(c64T, c64D, rps)
	p := func(q float64) func(*loadResult) float64 {
		return func(l *loadResult) float64 { return quantile(l.LatencyUS, q) }
	}
	res.P50C1DirectUS, res.P50C1TunnelUS = medianOf(c1D, p(.5)), medianOf(c1T, p(.5))
	res.P50C1AddedUS = medianDiff(c1T, c1D, p(.5))
	res.P99C1DirectUS, res.P99C1TunnelUS = medianOf(c1D, p(.99)), medianOf(c1T, p(.99))
	res.P50C64DirectUS, res.P50C64TunnelUS = medianOf(c64D, p(.5)), medianOf(c64T, p(.5))
	res.P99C64DirectUS, res.P99C64TunnelUS = medianOf(c64D, p(.99)), medianOf(c64T, p(.99))
	ttfb := func(l *loadResult) float64 { return quantile(sorted(l.TTFBUS), .5) }
	chunk := func(q float64) func(*loadResult) float64 {
		return func(l *loadResult) float64 { return quantile(sorted(l.ChunkDelay), q) }
	}
	res.TTFBDirectUS, res.TTFBTunnelUS = medianOf(streamD, ttfb), medianOf(streamT, ttfb)
	res.TTFBAddedUS = medianDiff(streamT, streamD, ttfb)
	res.ChunkDirectUS, res.ChunkTunnelUS = medianOf(streamD, chunk(.5)), medianOf(streamT, chunk(.5))
	res.ChunkAddedUSP50 = medianDiff(streamT, streamD, chunk(.5))
	res.ChunkAddedUSP99 = medianDiff(streamT, streamD, chunk(.99))
	res.RPSC64Relay = medianOf(c64R, rps)
	res.RPSC64RelayRatio = medianRatio(c64R, c64D, rps)
	res.ChunkRelayUS = medianOf(streamR, chunk(.5))
	res.ChunkRelayAdded = medianDiff(streamR, streamD, chunk(.5))

	res.Hops = hops
	res.Targets = map[string]Target{}
	if len(bulkT) > 0 {
		res.Targets["bulk_ratio"] = target(res.BulkRatio, 0.15, false)
	}
	if len(c64T) > 0 {
		res.Targets["rps_c64_ratio"] = target(res.RPSC64Ratio, 0.40, false)
	}
	if len(c1T) > 0 {
		res.Targets["p50_c1_added_us"] = target(res.P50C1AddedUS, 400, true)
	}
	if len(streamT) > 0 {
		res.Targets["chunk_added_us_p50"] = target(res.ChunkAddedUSP50, 200, true)
	}
	if !o.runs("idle") {
		return res, nil
	}

	// Idle agents: node memory before and after N agents connect and each carries a request.
	progress("connecting %d idle agents", o.IdleAgents)
	before, err := nodeChild.command("mem")
	if err != nil {
		return nil, err
	}
	toks := make([]string, o.IdleAgents)
	urls := make([]string, o.IdleAgents)
	for i := range toks {
		toks[i] = agentTok(fmt.Sprintf("tun-idle-%03d", i))
		urls[i] = fmt.Sprintf("http://%s/t/idle-%03d/small", nodeAddr, i)
	}
	idleChild, err := o.start(ctx, RoleAgents, spec{
		NodeURL: "ws://" + nodeAddr + "/v1/agent", Fingerprint: fp, Upstream: "http://" + originAddr, Tokens: toks,
	})
	if err != nil {
		return nil, err
	}
	children = append(children, idleChild)
	m, err := idleChild.next()
	if err != nil {
		return nil, err
	}
	connect := sorted(m.ConnectMS)
	res.ConnectMSP50, res.ConnectMSP95 = quantile(connect, .5), quantile(connect, .95)
	if _, err := load(loadSpec{Mode: "touch", URLs: urls, Token: userTok}); err != nil {
		return nil, fmt.Errorf("touch idle tunnels: %w", err)
	}
	progress("idle tunnels touched")
	after, err := nodeChild.command("mem")
	if err != nil {
		return nil, err
	}
	n := float64(o.IdleAgents)
	res.IdleAgents = o.IdleAgents
	res.IdleKiBPerAgent = (float64(after.Mem.RSS) - float64(before.Mem.RSS)) / n / 1024
	res.IdleHeapKiBPerAgent = (float64(after.Mem.HeapInuse+after.Mem.StackInuse) - float64(before.Mem.HeapInuse+before.Mem.StackInuse)) / n / 1024
	res.IdleGoroutinesPerAgent = float64(after.Mem.Goroutines-before.Mem.Goroutines) / n

	res.Targets["idle_kib_per_agent"] = target(res.IdleKiBPerAgent, 96, true)
	res.Targets["connect_ms_p95"] = target(res.ConnectMSP95, 30, true)
	return res, nil
}

func target(v, bound float64, isMax bool) Target {
	met := v >= bound
	if isMax {
		met = v <= bound
	}
	return Target{Value: v, Bound: bound, Max: isMax, Met: met}
}

func mbps(l *loadResult) float64 { return float64(l.Bytes) / l.Seconds / 1e6 }
func rps(l *loadResult) float64  { return float64(l.Requests) / l.Seconds }

func sorted(v []float64) []float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s
}

// quantile of a sorted slice (nearest rank).
func quantile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(i, len(s)-1)]
}

func median(v []float64) float64 { return quantile(sorted(v), .5) }

func medianOf(rs []*loadResult, f func(*loadResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return median(v)
}

// medianRatio pairs each tunnel run with the direct run of the same round.
func medianRatio(t, d []*loadResult, f func(*loadResult) float64) float64 {
	v := make([]float64, len(t))
	for i := range t {
		v[i] = f(t[i]) / f(d[i])
	}
	return median(v)
}

func medianDiff(t, d []*loadResult, f func(*loadResult) float64) float64 {
	v := make([]float64, len(t))
	for i := range t {
		v[i] = f(t[i]) - f(d[i])
	}
	return median(v)
}

func runtimeCPUs() int { return runtime.NumCPU() }

func cpuOf(c *child) float64 {
	m, err := c.command("cpu")
	if err != nil {
		return 0
	}
	return m.CPU
}

// perReq is CPU µs per request of a tunnel run (the warm-up included, so a slight overestimate).
func perReq(l *loadResult, cpu float64) float64 {
	return cpu / float64(l.Requests) * 1e6
}
