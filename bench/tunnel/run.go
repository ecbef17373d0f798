package tunnel

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/bench/stats"
)

// progressFunc writes one progress line.
type progressFunc func(format string, args ...any)

// newProgress stamps each line with the seconds since the run began.
func newProgress(o *Options) progressFunc {
	began := time.Now()
	return func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "[%5.1fs] "+format+"\n", append([]any{time.Since(began).Seconds()}, args...)...)
	}
}

// Run measures the tunnel against direct access to the same origin.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o.applyDefaults()
	progress := newProgress(&o)
	cr, err := newCredentials()
	if err != nil {
		return nil, err
	}
	c, err := startCluster(ctx, &o, cr, progress)
	if err != nil {
		return nil, err
	}
	defer c.stop()
	w := c.ways(cr)
	if err := c.warmUp(ctx, w); err != nil {
		return nil, err
	}
	phases := o.phases(w)
	m, hops, err := c.measureRounds(ctx, phases, progress)
	if err != nil {
		return nil, err
	}
	res := o.newResult()
	res.Hops = hops
	for _, p := range phases {
		if o.runs(p.name) {
			p.summarize(res, *m[p.name])
		}
	}
	if o.runs("c64calls") {
		m, err := c.node.command("calls")
		if err != nil {
			return nil, err
		}
		if m.Calls == nil || m.Calls.Recorded == 0 {
			return nil, fmt.Errorf("c64calls: the node recorded no calls")
		}
		res.CallsRecorded, res.CallsDropped = m.Calls.Recorded, m.Calls.Dropped
	}
	if o.runs("idle") {
		if err := c.measureIdle(ctx, cr, res, progress); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// measureRounds takes every phase that runs, round after round, and reports each round.
func (c *cluster) measureRounds(ctx context.Context, phases []phase, progress progressFunc) (measurements, map[string][]Hop, error) {
	m := measurements{}
	for _, p := range phases {
		m[p.name] = &samples{}
	}
	var hops map[string][]Hop
	for r := range c.o.Rounds {
		progress("round %d/%d", r+1, c.o.Rounds)
		for _, p := range phases {
			if !c.o.runs(p.name) {
				continue
			}
			parts, h, err := c.measure(ctx, p, r)
			if err != nil {
				return nil, nil, err
			}
			if h != nil {
				hops = h
			}
			m[p.name].add(parts)
		}
		for _, p := range phases {
			if c.o.runs(p.name) {
				p.report(progress, *m[p.name])
			}
		}
		if hops != nil && r == 0 {
			for _, k := range []string{"direct", "tunnel", "relays"} {
				progress("  scheduler, %s: %s", k, hopLine(hops[k]))
			}
		}
	}
	return m, hops, nil
}

// measure takes one phase of one round and returns a result per way (direct, tunnel[, relays]).
// With a scheduler trace it also returns the hops.
func (c *cluster) measure(ctx context.Context, p phase, round int) ([]*loadResult, map[string][]Hop, error) {
	var parts []*loadResult
	var hops map[string][]Hop
	for _, ways := range p.jobs() {
		tunnelAt := tunnelWay - len(parts) // the tunnel's index in this job's ways, if in range
		if tunnelAt >= len(ways) {
			tunnelAt = -1
		}
		got, h, err := c.measureJob(ctx, p, ways, tunnelAt, round)
		if err != nil {
			return nil, nil, err
		}
		if h != nil {
			hops = h
		}
		parts = append(parts, got...)
	}
	return parts, hops, nil
}

// measureJob runs one load generator over some ways of a phase and returns a result per way;
// the tunnel's (at tunnelAt, -1: none) carries the CPU node and agent spent meanwhile.
func (c *cluster) measureJob(ctx context.Context, p phase, ways []mixTarget, tunnelAt, round int) ([]*loadResult, map[string][]Hop, error) {
	var n0, a0 float64
	if tunnelAt >= 0 {
		n0, a0 = cpuOf(c.node), cpuOf(c.agent)
	}
	s := p.load(ways)
	res, hops, err := c.runJob(ctx, p, s, round, tunnelAt >= 0)
	if err != nil {
		return nil, nil, err
	}
	got := []*loadResult{res}
	if len(s.Mix) > 0 {
		got = res.Parts
	}
	if len(got) != len(ways) {
		return nil, nil, fmt.Errorf("%s: %d results for %d targets", p.name, len(got), len(ways))
	}
	if tunnelAt >= 0 {
		t := got[tunnelAt]
		t.NodeCPU, t.AgentCPU = cpuOf(c.node)-n0, cpuOf(c.agent)-a0
		t.NodeAgentCPU = t.NodeCPU + t.AgentCPU
	}
	return got, hops, nil
}

// runJob runs one load generator of a phase: in the first round under CPU profiles when it
// carries the tunnel, and under the scheduler recording when the phase is the traced one.
func (c *cluster) runJob(ctx context.Context, p phase, s loadSpec, round int, withTunnel bool) (*loadResult, map[string][]Hop, error) {
	var res *loadResult
	run := func() error {
		var err error
		res, err = c.load(ctx, s)
		return err
	}
	var hops map[string][]Hop
	var err error
	switch {
	case p.schedTrace && round == 0 && c.o.SchedTraceDir != "":
		hops, err = schedTraced(c.o.SchedTraceDir, func() error { return c.profiled(p.name, run) }, c.hopPaths)
	case withTunnel && round == 0:
		err = c.profiled(p.name, run)
	default:
		err = run()
	}
	if err != nil {
		if s.URL != "" {
			err = fmt.Errorf("%s: %w", s.URL, err)
		}
		return nil, nil, fmt.Errorf("%s: %w", p.name, err)
	}
	return res, hops, nil
}

// agentsPerProcess is the most agents one agents child runs.
const agentsPerProcess = 2500

// measureIdle connects IdleAgents more agents, sends one request through each of their tunnels
// and reports the node's memory per agent and the connect times.
func (c *cluster) measureIdle(ctx context.Context, cr *credentials, res *Result, progress progressFunc) error {
	progress("connecting %d idle agents", c.o.IdleAgents)
	before, err := c.node.command("mem")
	if err != nil {
		return err
	}
	toks := make([]string, c.o.IdleAgents)
	urls := make([]string, c.o.IdleAgents)
	for i := range toks {
		toks[i] = cr.agentToken(fmt.Sprintf("tun-idle-%03d", i))
		urls[i] = fmt.Sprintf("http://%s/t/idle-%03d/small", c.nodeAddr, i)
	}
	// Several agent processes, each holding many sessions: one would run out of file
	// descriptors (a connection to the node and one to the upstream per agent).
	var connectMS []float64
	for chunk := range slices.Chunk(toks, agentsPerProcess) {
		sp := c.agentSpec(cr, chunk)
		sp.AgentDefaults = true
		_, m, err := c.startChild(ctx, RoleAgents, sp)
		if err != nil {
			return err
		}
		connectMS = append(connectMS, m.ConnectMS...)
	}
	connect := stats.Sorted(connectMS)
	res.ConnectMSP50, res.ConnectMSP95 = stats.Quantile(connect, .5), stats.Quantile(connect, .95)
	if _, err := c.load(ctx, loadSpec{Mode: "touch", URLs: urls, Token: cr.userToken}); err != nil {
		return fmt.Errorf("touch idle tunnels: %w", err)
	}
	progress("idle tunnels touched")
	after, err := c.node.command("mem")
	if err != nil {
		return err
	}
	n := float64(c.o.IdleAgents)
	res.IdleAgents = c.o.IdleAgents
	res.IdleKiBPerAgent = (float64(after.Mem.RSS) - float64(before.Mem.RSS)) / n / 1024
	res.IdleHeapKiBPerAgent = (float64(after.Mem.HeapInuse+after.Mem.StackInuse) - float64(before.Mem.HeapInuse+before.Mem.StackInuse)) / n / 1024
	res.IdleGoroutinesPerAgent = float64(after.Mem.Goroutines-before.Mem.Goroutines) / n
	res.Targets["idle_kib_per_agent"] = target(res.IdleKiBPerAgent, 64, true)
	res.Targets["connect_ms_p95"] = target(res.ConnectMSP95, 30, true)
	return c.measureRestart(ctx, cr, res, progress)
}

// measureRestart kills the node holding every agent and starts it again on its address with
// its host key, and times how the agents come back.
func (c *cluster) measureRestart(ctx context.Context, cr *credentials, res *Result, progress progressFunc) error {
	m, err := c.node.command("sessions")
	if err != nil {
		return err
	}
	want := m.Sessions
	progress("killing the node holding %d agents", want)
	killed := time.Now()
	_ = c.node.cmd.Process.Kill()
	_ = c.node.cmd.Wait()
	sp := c.nodeSpec(cr)
	sp.ListenAddr = c.nodeAddr
	var addr string
	for {
		// The address is free again once the old process's sockets are gone.
		if c.node, addr, err = c.startServer(ctx, RoleNode, sp); err == nil || time.Since(killed) > 10*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("restart the node on %s: %w", c.nodeAddr, err)
	}
	if addr != c.nodeAddr {
		return fmt.Errorf("the restarted node listens on %s, not %s", addr, c.nodeAddr)
	}
	const step = 100 * time.Millisecond
	held, peak := 0, 0
	for held < want {
		if time.Since(killed) > 2*time.Minute {
			return fmt.Errorf("the restarted node holds %d of %d agents after 2 minutes", held, want)
		}
		time.Sleep(step)
		m, err := c.node.command("sessions")
		if err != nil {
			return err
		}
		peak = max(peak, m.Sessions-held)
		if held < want/2 && m.Sessions >= want/2 {
			res.RestartHalfMS = float64(time.Since(killed).Milliseconds())
		}
		held = m.Sessions
	}
	res.RestartRecoverMS = float64(time.Since(killed).Milliseconds())
	res.RestartPeakPerS = float64(peak) / step.Seconds()
	res.Targets["restart_recover_ms"] = target(res.RestartRecoverMS, 30000, true)
	progress("the restarted node holds all %d agents after %.1f s", want, res.RestartRecoverMS/1000)
	return nil
}
