package tunnel

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The test binary doubles as the bench's child: Run re-executes it with this variable set and
// the role as the last argument.
const childEnv = "TUNNELBENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := RunChild(context.Background(), os.Args[len(os.Args)-1], os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// skipUnderRace skips tests that run the bench's processes: they re-execute this test binary,
// and with the race detector in it they burn several times the CPU for nothing the detector
// could find in them. make test runs this package again without -race.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("runs the bench's processes; make test runs it without -race")
	}
}

// A tiny run through every phase: separate processes, real tunnel, every key filled in.
func TestBenchRunsEveryPhase(t *testing.T) {
	skipUnderRace(t)
	if testing.Short() {
		t.Skip("starts a dozen processes")
	}
	t.Setenv(childEnv, "1")
	var progress strings.Builder
	res, err := Run(context.Background(), Options{
		// At least three 250 ms turns, so direct, tunnel and relays each get one even on a busy machine.
		Duration: 800 * time.Millisecond, Rounds: 1, BulkBytes: 4 << 20, IdleAgents: 3,
		Streams: 1, StreamChunks: 3, StreamInterval: 5 * time.Millisecond,
		Exe: os.Args[0], ExeArgs: []string{}, Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	for name, v := range map[string]float64{
		"bulk_ratio": res.BulkRatio, "rps_c1_ratio": res.RPSC1Ratio, "rps_c64_ratio": res.RPSC64Ratio,
		"p50_c1_tunnel_us": res.P50C1TunnelUS, "chunk_tunnel_us_p50": res.ChunkTunnelUS,
		"connect_ms_p95": res.ConnectMSP95, "idle_heap_kib_per_agent": res.IdleHeapKiBPerAgent,
		"rps_c64_relay_ratio": res.RPSC64RelayRatio, "chunk_relay_us_p50": res.ChunkRelayUS,
		"rps_c64_key_ratio": res.RPSC64KeyRatio, "rps_c64_access_key": res.RPSC64AccessKey,
		"rps_c64_calls_ratio": res.RPSC64CallsRatio, "calls_recorded": float64(res.CallsRecorded),
		"forwarded_c64_ratio": res.ForwardedC64Ratio, "rps_c64_forwarded": res.RPSC64Forwarded,
		"restart_recover_ms": res.RestartRecoverMS, "restart_peak_per_s": res.RestartPeakPerS,
	} {
		if !(v > 0) {
			t.Errorf("%s = %v", name, v)
		}
	}
	t.Log(progress.String())
	if len(res.Targets) != 10 || res.IdleGoroutinesPerAgent < 1 {
		t.Fatalf("targets %v, goroutines per agent %v", res.Targets, res.IdleGoroutinesPerAgent)
	}
}

// --only runs the named phases and reports only their targets.
func TestBenchRunsOnlyChosenPhases(t *testing.T) {
	skipUnderRace(t)
	if testing.Short() {
		t.Skip("starts several processes")
	}
	t.Setenv(childEnv, "1")
	res, err := Run(context.Background(), Options{
		Duration: 150 * time.Millisecond, Rounds: 1, Streams: 1, StreamChunks: 3, StreamInterval: 5 * time.Millisecond,
		Exe: os.Args[0], ExeArgs: []string{}, Phases: []string{"stream"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Targets["chunk_added_us_p50"]; len(res.Targets) != 1 || !ok || !(res.ChunkTunnelUS > 0) || res.BulkRatio != 0 || res.IdleAgents != 0 {
		t.Fatalf("targets %v, chunk %v, bulk %v, idle agents %d", res.Targets, res.ChunkTunnelUS, res.BulkRatio, res.IdleAgents)
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{Duration: time.Millisecond, Rounds: -1, Phases: []string{"c64", "warp"}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "duration") || !strings.Contains(err.Error(), "rounds") || !strings.Contains(err.Error(), `"warp"`) {
		t.Fatalf("validate: %v", err)
	}
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if err := (Options{SchedTraceDir: t.TempDir(), Phases: []string{"c64"}}).Validate(); err == nil || !strings.Contains(err.Error(), "stream phase") {
		t.Fatalf("a scheduler trace without the stream phase: %v", err)
	}
}

// The latency sample a load process sends back keeps the extremes and thins the rest evenly.
func TestSampleKeepsTheExtremes(t *testing.T) {
	if got := sample([]float64{1, 2, 3, 4, 5}, 3); len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 5 {
		t.Fatalf("sample %v", got)
	}
	if got := sample([]float64{1, 2}, 3); len(got) != 2 {
		t.Fatalf("sample of fewer than n: %v", got)
	}
}

// The table holds every phase a round takes, in the order of AllPhases (idle, measured once
// after the rounds, is not in it); the request-rate and stream phases share one load generator
// between the ways, bulk runs them back to back, and only c64 and stream go through the relays.
func TestPhasesTable(t *testing.T) {
	o := Options{}
	o.applyDefaults()
	w := ways{direct: "http://d", tunnel: "http://n/t/bench", tunnelCalls: "http://n/t/bench-calls", forwarded: "http://i/t/bench",
		relays: "http://r", token: "tok", accessKey: "key"}
	phases := o.phases(w)
	var names []string
	for _, p := range phases {
		names = append(names, p.name)
		jobs := p.jobs()
		var ways int
		for _, j := range jobs {
			ways += len(j)
			if s := p.load(j); (len(s.Mix) == 0) != (s.Mode == "bulk") {
				t.Errorf("%s: load %+v", p.name, s)
			}
		}
		if wantRelay := p.name == "c64" || p.name == "stream"; (p.relay != nil) != wantRelay || ways != len(p.ways()) {
			t.Errorf("%s: relay %v, %d ways in %d jobs", p.name, p.relay, ways, len(jobs))
		}
		if (len(jobs) > 1) != (p.name == "bulk") {
			t.Errorf("%s: %d jobs", p.name, len(jobs))
		}
		if p.name == "c64calls" {
			// Both ways through the tunnel with a user token: access log windows against calls.
			if p.direct.Token != "tok" || p.tunnel.Token != "tok" || !strings.HasPrefix(p.direct.URL, "http://n/t/bench/") || !strings.HasPrefix(p.tunnel.URL, "http://n/t/bench-calls/") {
				t.Errorf("%s: windows way %+v, calls way %+v", p.name, p.direct, p.tunnel)
			}
		} else if p.name == "c64fwd" {
			// Both ways with a user token: entering at the holding node against at another node.
			if p.direct.Token != "tok" || p.tunnel.Token != "tok" || !strings.HasPrefix(p.direct.URL, "http://n/t/bench/") || !strings.HasPrefix(p.tunnel.URL, "http://i/t/bench/") {
				t.Errorf("%s: holding node's way %+v, forwarded way %+v", p.name, p.direct, p.tunnel)
			}
		} else if p.name == "c64key" {
			// Both ways through the tunnel: user token against access key.
			if p.direct.Token != "tok" || p.tunnel.Token != "key" || p.direct.URL != p.tunnel.URL || !strings.HasPrefix(p.tunnel.URL, "http://n/t/bench/") {
				t.Errorf("%s: user-token way %+v, access-key way %+v", p.name, p.direct, p.tunnel)
			}
		} else if p.tunnel.Token != "tok" || p.direct.Token != "" || !strings.HasPrefix(p.tunnel.URL, "http://n/t/bench/") {
			t.Errorf("%s: direct %+v tunnel %+v", p.name, p.direct, p.tunnel)
		}
	}
	if want := AllPhases[:len(AllPhases)-1]; strings.Join(names, ",") != strings.Join(want, ",") || AllPhases[len(AllPhases)-1] != "idle" {
		t.Fatalf("table %v, AllPhases %v", names, AllPhases)
	}
}
