package tunnel

import (
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/bench/stats"
)

// mixSlice is the turn length of the interleaved request-rate measurements.
const mixSlice = 250 * time.Millisecond

// phase is one measurement a round takes: the same load straight to the origin (direct), through
// the tunnel, and, where relay is set, through the two bare relays.
type phase struct {
	name           string
	direct, tunnel mixTarget
	relay          *mixTarget // nil: not measured through the relays
	// load is the load generator's job for some of the ways, in order.
	load func(ways []mixTarget) loadSpec
	// backToBack runs one load generator per way, one after the other; else one load generator
	// takes all ways in turns.
	backToBack bool
	// schedTrace: with Options.SchedTraceDir, the first round of this phase runs under a
	// scheduler recording.
	schedTrace bool
	// report writes a round's progress lines; summarize puts the medians over the rounds and
	// the phase's target into the result.
	report    func(progress progressFunc, s samples)
	summarize func(res *Result, s samples)
}

// phases is the table of what a round measures, in order: AllPhases but "idle", which is
// measured once, after the rounds.
func (o *Options) phases(w ways) []phase {
	bulk := fmt.Sprintf("/bulk?n=%d", o.BulkBytes)
	stream := fmt.Sprintf("/stream?n=%d&interval=%v", o.StreamChunks, o.StreamInterval)
	return []phase{
		{name: "bulk", direct: w.toDirect(bulk), tunnel: w.toTunnel(bulk),
			load: bulkLoad, backToBack: true, report: reportBulk, summarize: summarizeBulk},
		{name: "c1", direct: w.toDirect("/small"), tunnel: w.toTunnel("/small"),
			load: o.rateLoad(1), report: reportRate("c1"), summarize: summarizeC1},
		{name: "c64", direct: w.toDirect("/small"), tunnel: w.toTunnel("/small"), relay: w.toRelays("/small"),
			load: o.rateLoad(64), report: reportC64, summarize: summarizeC64},
		// Callers with a tunnel access key against callers with a user token, both through the
		// tunnel, in turns of mixSlice in one load generator: "direct" is the user-token way here.
		{name: "c64key", direct: w.toTunnel("/small"), tunnel: w.toTunnelWithKey("/small"),
			load: o.rateLoad(64), report: reportC64Key, summarize: summarizeC64Key},
		// The same tunnel with its access log "windows" (direct here) and "calls" (a record per
		// call, handed to a sink that encodes and signs each batch as the publisher does), both
		// with a user token, in turns of mixSlice in one load generator.
		{name: "c64calls", direct: w.toTunnel("/small"), tunnel: w.toTunnelLoggingCalls("/small"),
			load: o.rateLoad(64), report: reportC64Calls, summarize: summarizeC64Calls},
		// Calls entering at the node holding the agent ("direct" here) and at another node that
		// forwards them to it, both with a user token, in turns of mixSlice in one load generator.
		{name: "c64fwd", direct: w.toTunnel("/small"), tunnel: w.toForwarded("/small"),
			load: o.rateLoad(64), report: reportC64Fwd, summarize: summarizeC64Fwd},
		{name: "stream", direct: w.toDirect(stream), tunnel: w.toTunnel(stream), relay: w.toRelays(stream),
			load: o.streamLoad, schedTrace: true, report: reportStream, summarize: summarizeStream},
	}
}

// ways are the base URLs of the three ways to the origin, and the credentials the tunnel takes:
// a user token and an access key.
type ways struct {
	direct, tunnel, relays string
	tunnelCalls            string // the tunnel under a ref whose route logs calls
	forwarded              string // the tunnel at the node without the agent (c64fwd)
	token, accessKey       string
}

func (w ways) toDirect(path string) mixTarget { return mixTarget{URL: w.direct + path} }
func (w ways) toTunnel(path string) mixTarget { return mixTarget{URL: w.tunnel + path, Token: w.token} }
func (w ways) toTunnelWithKey(path string) mixTarget {
	return mixTarget{URL: w.tunnel + path, Token: w.accessKey}
}
func (w ways) toTunnelLoggingCalls(path string) mixTarget {
	return mixTarget{URL: w.tunnelCalls + path, Token: w.token}
}
func (w ways) toForwarded(path string) mixTarget {
	return mixTarget{URL: w.forwarded + path, Token: w.token}
}
func (w ways) toRelays(path string) *mixTarget {
	return &mixTarget{URL: w.relays + path}
}

// tunnelWay is the tunnel's index in a phase's ways.
const tunnelWay = 1

// ways lists what the phase measures: direct, tunnel and (if any) relays.
func (p phase) ways() []mixTarget {
	ws := []mixTarget{p.direct, p.tunnel}
	if p.relay != nil {
		ws = append(ws, *p.relay)
	}
	return ws
}

// jobs splits the ways into the load generators to run, in order.
func (p phase) jobs() [][]mixTarget {
	ws := p.ways()
	if !p.backToBack {
		return [][]mixTarget{ws}
	}
	jobs := make([][]mixTarget, len(ws))
	for i := range ws {
		jobs[i] = ws[i : i+1]
	}
	return jobs
}

// bulkLoad downloads BulkBytes from one way.
func bulkLoad(ways []mixTarget) loadSpec {
	return loadSpec{Mode: "bulk", URL: ways[0].URL, Token: ways[0].Token}
}

// rateLoad runs conc closed-loop clients, the ways taking turns of mixSlice.
func (o *Options) rateLoad(conc int) func([]mixTarget) loadSpec {
	return func(ways []mixTarget) loadSpec {
		return loadSpec{Mode: "mix", Mix: ways, Concurrency: conc, Duration: o.Duration, Slice: mixSlice}
	}
}

// streamLoad reads Streams streams from each way, the ways taking turns stream by stream.
func (o *Options) streamLoad(ways []mixTarget) loadSpec {
	return loadSpec{Mode: "stream", Streams: o.Streams, Mix: ways}
}

// samples are a phase's results: one per round for each way.
type samples struct{ direct, tunnel, relay []*loadResult }

// add appends a round's results, in the order of the phase's ways.
func (s *samples) add(parts []*loadResult) {
	s.direct = append(s.direct, parts[0])
	s.tunnel = append(s.tunnel, parts[tunnelWay])
	if len(parts) > 2 {
		s.relay = append(s.relay, parts[2])
	}
}

// measurements are every phase's samples, by phase name.
type measurements map[string]*samples

func last(s []*loadResult) *loadResult { return s[len(s)-1] }

// The reports of the phases (the table's report): the round just taken.

func reportBulk(progress progressFunc, s samples) {
	b := last(s.tunnel)
	progress("  bulk %.0f / %.0f MB/s (direct / tunnel); CPU node / agent %.2f / %.2f ns/B",
		mbps(last(s.direct)), mbps(b), b.NodeCPU/float64(b.Bytes)*1e9, b.AgentCPU/float64(b.Bytes)*1e9)
}

func reportRate(name string) func(progressFunc, samples) {
	return func(progress progressFunc, s samples) {
		t := last(s.tunnel)
		progress("  %s %.0f / %.0f rps (direct / tunnel); CPU node / agent %.0f / %.0f µs/req",
			name, rps(last(s.direct)), rps(t), perReq(t, t.NodeCPU), perReq(t, t.AgentCPU))
	}
}

func reportC64(progress progressFunc, s samples) {
	reportRate("c64")(progress, s)
	progress("  c64 through two bare relays %.0f rps", rps(last(s.relay)))
}

func reportC64Key(progress progressFunc, s samples) {
	u, k := last(s.direct), last(s.tunnel)
	progress("  c64 through the tunnel %.0f / %.0f rps (user token / access key); CPU node %.0f µs/req with the key",
		rps(u), rps(k), perReq(k, k.NodeCPU))
}

func reportC64Calls(progress progressFunc, s samples) {
	w, c := last(s.direct), last(s.tunnel)
	progress("  c64 through the tunnel %.0f / %.0f rps (access log windows / calls); CPU node %.0f µs/req over both ways' requests",
		rps(w), rps(c), c.NodeCPU/float64(w.Requests+c.Requests)*1e6)
}

func reportC64Fwd(progress progressFunc, s samples) {
	h, f := last(s.direct), last(s.tunnel)
	progress("  c64 entering at the holding node / at another node, which forwards %.0f / %.0f rps", rps(h), rps(f))
}

func reportStream(progress progressFunc, s samples) {
	d, t, r := last(s.direct), last(s.tunnel), last(s.relay)
	progress("  stream chunk delay p50 %.0f / %.0f / %.0f µs (direct / tunnel / two bare relays)",
		stats.UpperMedian(d.ChunkDelay), stats.UpperMedian(t.ChunkDelay), stats.UpperMedian(r.ChunkDelay))
}
