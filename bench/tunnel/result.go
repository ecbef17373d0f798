package tunnel

import (
	"runtime"

	"github.com/tunnelplane/tunnelplane/bench/stats"
)

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
	// c64key: the tunnel's c=64 request rate with callers presenting a tunnel access key, and
	// with a user token, in turns in one run.
	RPSC64UserToken float64 `json:"rps_c64_user_token"`
	RPSC64AccessKey float64 `json:"rps_c64_access_key"`
	RPSC64KeyRatio  float64 `json:"rps_c64_key_ratio"`
	// c64calls: the tunnel's c=64 request rate with its access log "windows" and "calls", in
	// turns in one run, and the calls the node recorded and dropped over the whole run.
	RPSC64Windows    float64 `json:"rps_c64_access_log_windows"`
	RPSC64Calls      float64 `json:"rps_c64_access_log_calls"`
	RPSC64CallsRatio float64 `json:"rps_c64_calls_ratio"`
	// c64fwd: calls entering at the node that holds the agent against calls entering at another
	// node, which forwards them there (dataplane/node/peers.go), in turns.
	RPSC64Holding     float64 `json:"rps_c64_holding_node"`
	RPSC64Forwarded   float64 `json:"rps_c64_forwarded"`
	ForwardedC64Ratio float64 `json:"forwarded_c64_ratio"`
	CallsRecorded     int64   `json:"calls_recorded"`
	CallsDropped      int64   `json:"calls_dropped"`
	TTFBDirectUS      float64 `json:"ttfb_direct_us"`
	TTFBTunnelUS      float64 `json:"ttfb_tunnel_us"`
	TTFBAddedUS       float64 `json:"ttfb_added_us"`
	ChunkDirectUS     float64 `json:"chunk_direct_us_p50"`
	ChunkTunnelUS     float64 `json:"chunk_tunnel_us_p50"`
	ChunkAddedUSP50   float64 `json:"chunk_added_us_p50"`
	ChunkAddedUSP99   float64 `json:"chunk_added_us_p99"`
	ChunkRelayUS      float64 `json:"chunk_relay_us_p50"`
	ChunkRelayAdded   float64 `json:"chunk_relay_added_us_p50"`

	IdleAgents             int     `json:"idle_agents"`
	IdleKiBPerAgent        float64 `json:"idle_kib_per_agent"`
	IdleHeapKiBPerAgent    float64 `json:"idle_heap_kib_per_agent"`
	IdleGoroutinesPerAgent float64 `json:"idle_goroutines_per_agent"`
	ConnectMSP50           float64 `json:"connect_ms_p50"`
	ConnectMSP95           float64 `json:"connect_ms_p95"`
	// After the idle agents, the node is killed (SIGKILL) and started again on its address:
	// RestartRecoverMS is the time from the kill until it holds every agent again (the idle
	// agents reconnect with the agent's default backoff, jittered), RestartPeakPerS the most
	// agents it took back in one 100 ms step (per second), RestartHalfMS when it held half.
	RestartRecoverMS float64 `json:"restart_recover_ms"`
	RestartHalfMS    float64 `json:"restart_half_ms"`
	RestartPeakPerS  float64 `json:"restart_peak_per_s"`

	// Hops (with SchedTraceDir): for "direct", "tunnel" and "relays", each process after the
	// origin on a chunk's way.
	Hops map[string][]Hop `json:"hops,omitempty"`

	Targets map[string]Target `json:"targets"`
}

// Target is one required bound and whether the run met it.
type Target struct {
	Value float64 `json:"value"`
	Bound float64 `json:"bound"`
	Max   bool    `json:"max"` // the value must not exceed the bound (else: not fall below it)
	Met   bool    `json:"met"`
}

const baseline = "the same load generator straight to the same origin: request rates in turns of 250ms with the tunnel (and the two bare relays) in one run, streams taking turns stream by stream, bulk in back-to-back runs"

// newResult is a result with the run's setting and no measurement yet.
func (o *Options) newResult() *Result {
	return &Result{Rounds: o.Rounds, Duration: o.Duration.String(), BulkBytes: o.BulkBytes, CPUs: runtime.NumCPU(),
		Baseline: baseline, Cipher: "aes128-gcm@openssh.com", KEX: "mlkem768x25519-sha256",
		Targets: map[string]Target{}}
}

func target(v, bound float64, isMax bool) Target {
	met := v >= bound
	if isMax {
		met = v <= bound
	}
	return Target{Value: v, Bound: bound, Max: isMax, Met: met}
}

// The summaries of the phases (the table's summarize): medians over the rounds into the result,
// and the phase's target.

func summarizeBulk(res *Result, s samples) {
	res.BulkDirectMBps = medianOf(s.direct, mbps)
	res.BulkTunnelMBps = medianOf(s.tunnel, mbps)
	res.BulkRatio = medianRatio(s.tunnel, s.direct, mbps)
	res.Targets["bulk_ratio"] = target(res.BulkRatio, 0.15, false)
}

func summarizeC1(res *Result, s samples) {
	d, t := s.direct, s.tunnel
	res.RPSC1Direct, res.RPSC1Tunnel = medianOf(d, rps), medianOf(t, rps)
	res.RPSC1Ratio = medianRatio(t, d, rps)
	res.P50C1DirectUS, res.P50C1TunnelUS = medianOf(d, latency(.5)), medianOf(t, latency(.5))
	res.P50C1AddedUS = medianDiff(t, d, latency(.5))
	res.P99C1DirectUS, res.P99C1TunnelUS = medianOf(d, latency(.99)), medianOf(t, latency(.99))
	res.Targets["p50_c1_added_us"] = target(res.P50C1AddedUS, 400, true)
}

func summarizeC64Key(res *Result, s samples) {
	res.RPSC64UserToken, res.RPSC64AccessKey = medianOf(s.direct, rps), medianOf(s.tunnel, rps)
	res.RPSC64KeyRatio = medianRatio(s.tunnel, s.direct, rps)
	res.Targets["rps_c64_key_ratio"] = target(res.RPSC64KeyRatio, 0.95, false)
}

func summarizeC64Calls(res *Result, s samples) {
	res.RPSC64Windows, res.RPSC64Calls = medianOf(s.direct, rps), medianOf(s.tunnel, rps)
	res.RPSC64CallsRatio = medianRatio(s.tunnel, s.direct, rps)
	res.Targets["rps_c64_calls_ratio"] = target(res.RPSC64CallsRatio, 0.85, false)
}

func summarizeC64Fwd(res *Result, s samples) {
	res.RPSC64Holding, res.RPSC64Forwarded = medianOf(s.direct, rps), medianOf(s.tunnel, rps)
	res.ForwardedC64Ratio = medianRatio(s.tunnel, s.direct, rps)
	res.Targets["forwarded_c64_ratio"] = target(res.ForwardedC64Ratio, 0.6, false)
}

func summarizeC64(res *Result, s samples) {
	d, t, r := s.direct, s.tunnel, s.relay
	res.RPSC64Direct, res.RPSC64Tunnel = medianOf(d, rps), medianOf(t, rps)
	res.RPSC64Ratio = medianRatio(t, d, rps)
	res.P50C64DirectUS, res.P50C64TunnelUS = medianOf(d, latency(.5)), medianOf(t, latency(.5))
	res.P99C64DirectUS, res.P99C64TunnelUS = medianOf(d, latency(.99)), medianOf(t, latency(.99))
	res.RPSC64Relay = medianOf(r, rps)
	res.RPSC64RelayRatio = medianRatio(r, d, rps)
	res.Targets["rps_c64_ratio"] = target(res.RPSC64Ratio, 0.40, false)
}

func summarizeStream(res *Result, s samples) {
	d, t, r := s.direct, s.tunnel, s.relay
	res.TTFBDirectUS, res.TTFBTunnelUS = medianOf(d, ttfb), medianOf(t, ttfb)
	res.TTFBAddedUS = medianDiff(t, d, ttfb)
	res.ChunkDirectUS, res.ChunkTunnelUS = medianOf(d, chunkDelay(.5)), medianOf(t, chunkDelay(.5))
	res.ChunkAddedUSP50 = medianDiff(t, d, chunkDelay(.5))
	res.ChunkAddedUSP99 = medianDiff(t, d, chunkDelay(.99))
	res.ChunkRelayUS = medianOf(r, chunkDelay(.5))
	res.ChunkRelayAdded = medianDiff(r, d, chunkDelay(.5))
	res.Targets["chunk_added_us_p50"] = target(res.ChunkAddedUSP50, 200, true)
}

// metric is one number of one load result.
type metric func(*loadResult) float64

func mbps(l *loadResult) float64 { return float64(l.Bytes) / l.Seconds / 1e6 }
func rps(l *loadResult) float64  { return float64(l.Requests) / l.Seconds }

// latency is the q-quantile of a request-rate run's latencies (sent sorted).
func latency(q float64) metric {
	return func(l *loadResult) float64 { return stats.Quantile(l.LatencyUS, q) }
}

// ttfb is a stream run's median time to first byte.
func ttfb(l *loadResult) float64 { return stats.UpperMedian(l.TTFBUS) }

// chunkDelay is the q-quantile of a stream run's chunk delays.
func chunkDelay(q float64) metric {
	return func(l *loadResult) float64 { return stats.Quantile(stats.Sorted(l.ChunkDelay), q) }
}

// medianOf is the median of f over the rounds.
func medianOf(rs []*loadResult, f metric) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return stats.UpperMedian(v)
}

// medianRatio pairs each run with the direct run of the same round.
func medianRatio(t, d []*loadResult, f metric) float64 {
	v := make([]float64, len(t))
	for i := range t {
		v[i] = f(t[i]) / f(d[i])
	}
	return stats.UpperMedian(v)
}

// medianDiff pairs each run with the direct run of the same round.
func medianDiff(t, d []*loadResult, f metric) float64 {
	v := make([]float64, len(t))
	for i := range t {
		v[i] = f(t[i]) - f(d[i])
	}
	return stats.UpperMedian(v)
}

// perReq is CPU µs per request of a tunnel run (the warm-up included, so a slight overestimate).
func perReq(l *loadResult, cpu float64) float64 {
	return cpu / float64(l.Requests) * 1e6
}
