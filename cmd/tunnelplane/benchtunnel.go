package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	tunnelbench "github.com/tunnelplane/tunnelplane/bench/tunnel"
)

// benchChildName is the hidden subcommand the bench re-executes this binary with.
const benchChildName = "bench-tunnel-child"

// newBenchTunnelCommand is `tunnelplane bench tunnel`: origin, node, agent and load generator as
// separate processes on loopback, each measurement taken directly and through the tunnel.
// Register it under the bench command.
func newBenchTunnelCommand(g *globals) *cobra.Command {
	var o tunnelbench.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tunnel",
		Short: "Tunnel vs direct on loopback: bulk, request rate and latency, streaming, idle memory, connect time, node restart",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = g.stderr
			o.Logger = g.log
			o.ExeArgs = []string{benchChildName, "--log-level", g.logLevel}
			res, err := tunnelbench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, res)
			}
			printTunnelBench(g, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 2*time.Second, "length of each request-rate measurement")
	f.IntVar(&o.Rounds, "rounds", 3, "rounds of every direct/tunnel pair (medians are reported)")
	f.Int64Var(&o.BulkBytes, "bulk-bytes", 1<<30, "size of the bulk download")
	f.IntVar(&o.IdleAgents, "idle-agents", 300, "agents connected for the idle-memory, connect-time and node-restart measurement (spread over agent processes of 2,500)")
	f.StringSliceVar(&o.Phases, "only", nil, "run only these phases (comma-separated: "+strings.Join(tunnelbench.AllPhases, ", ")+")")
	f.StringVar(&o.ProfileDir, "profile-dir", "", "write CPU profiles of node and agent for each phase of the first round here")
	f.StringVar(&o.SchedTraceDir, "sched-trace", "", "record the scheduler with perf (root) during the first stream phase into this dir and report, per process on a chunk's way, its wake-up and run time")
	f.BoolVar(&asJSON, "json", false, "print JSON (keys bulk_ratio, rps_c64_ratio, forwarded_c64_ratio, p50_c1_added_us, chunk_added_us_p50, idle_kib_per_agent, connect_ms_p95 …)")
	return cmd
}

// newBenchChildCommand is the hidden `tunnelplane bench-tunnel-child <role>` the bench starts
// (origin, node, agents, load). Register it on the root command.
func newBenchChildCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    benchChildName + " <role>",
		Short:  "One process of `bench tunnel` (internal)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return tunnelbench.RunChild(cmd.Context(), args[0], cmd.InOrStdin(), g.stdout)
		},
	}
}

func printTunnelBench(g *globals, r *tunnelbench.Result) {
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measure\tdirect\ttunnel\ttunnel/direct\t")
	has := func(k string) bool { _, ok := r.Targets[k]; return ok }
	if has("bulk_ratio") {
		fmt.Fprintf(tw, "bulk %d MiB (MB/s)\t%.0f\t%.0f\t%.2f\t\n", r.BulkBytes>>20, r.BulkDirectMBps, r.BulkTunnelMBps, r.BulkRatio)
	}
	if has("p50_c1_added_us") {
		fmt.Fprintf(tw, "requests/s c=1\t%.0f\t%.0f\t%.2f\t\n", r.RPSC1Direct, r.RPSC1Tunnel, r.RPSC1Ratio)
		fmt.Fprintf(tw, "p50 / p99 µs c=1\t%.0f / %.0f\t%.0f / %.0f\t+%.0f µs\t\n", r.P50C1DirectUS, r.P99C1DirectUS, r.P50C1TunnelUS, r.P99C1TunnelUS, r.P50C1AddedUS)
	}
	if has("rps_c64_ratio") {
		fmt.Fprintf(tw, "requests/s c=64\t%.0f\t%.0f\t%.2f\t\n", r.RPSC64Direct, r.RPSC64Tunnel, r.RPSC64Ratio)
		fmt.Fprintf(tw, "p50 / p99 µs c=64\t%.0f / %.0f\t%.0f / %.0f\t\t\n", r.P50C64DirectUS, r.P99C64DirectUS, r.P50C64TunnelUS, r.P99C64TunnelUS)
		fmt.Fprintf(tw, "  two bare relays c=64\t\t%.0f\t%.2f\t\n", r.RPSC64Relay, r.RPSC64RelayRatio)
	}
	if has("rps_c64_key_ratio") {
		fmt.Fprintf(tw, "tunnel c=64: user token / access key\t%.0f\t%.0f\t%.2f\t\n", r.RPSC64UserToken, r.RPSC64AccessKey, r.RPSC64KeyRatio)
	}
	if has("rps_c64_calls_ratio") {
		fmt.Fprintf(tw, "tunnel c=64: access log windows / calls\t%.0f\t%.0f\t%.2f\t\n", r.RPSC64Windows, r.RPSC64Calls, r.RPSC64CallsRatio)
		fmt.Fprintf(tw, "  calls recorded / dropped\t\t%d / %d\t\t\n", r.CallsRecorded, r.CallsDropped)
	}
	if has("forwarded_c64_ratio") {
		fmt.Fprintf(tw, "tunnel c=64: at the holding node / forwarded by another\t%.0f\t%.0f\t%.2f\t\n", r.RPSC64Holding, r.RPSC64Forwarded, r.ForwardedC64Ratio)
	}
	if has("chunk_added_us_p50") {
		fmt.Fprintf(tw, "stream TTFB µs\t%.0f\t%.0f\t+%.0f µs\t\n", r.TTFBDirectUS, r.TTFBTunnelUS, r.TTFBAddedUS)
		fmt.Fprintf(tw, "chunk delay p50 µs\t%.0f\t%.0f\t+%.0f µs (p99 +%.0f)\t\n", r.ChunkDirectUS, r.ChunkTunnelUS, r.ChunkAddedUSP50, r.ChunkAddedUSP99)
		fmt.Fprintf(tw, "  two bare relays\t\t%.0f\t+%.0f µs\t\n", r.ChunkRelayUS, r.ChunkRelayAdded)
	}
	tw.Flush()
	if has("idle_kib_per_agent") {
		fmt.Fprintf(g.stdout, "idle agents: %d, node memory %.1f KiB RSS (%.1f KiB heap+stacks, %.1f goroutines) per agent; connect p50 %.1f ms, p95 %.1f ms\n",
			r.IdleAgents, r.IdleKiBPerAgent, r.IdleHeapKiBPerAgent, r.IdleGoroutinesPerAgent, r.ConnectMSP50, r.ConnectMSP95)
		fmt.Fprintf(g.stdout, "node killed and restarted: all agents back in %.1f s (half in %.1f s), at most %.0f agents/s taken back\n",
			r.RestartRecoverMS/1000, r.RestartHalfMS/1000, r.RestartPeakPerS)
	}
	names := make([]string, 0, len(r.Targets))
	for k := range r.Targets {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		t := r.Targets[k]
		op, verdict := "≥", "met"
		if t.Max {
			op = "≤"
		}
		if !t.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(g.stdout, "target %-20s %10.2f %s %-6g %s\n", k, t.Value, op, t.Bound, verdict)
	}
	fmt.Fprintf(g.stdout, "medians of %d rounds on %d CPUs (%s, %s); baseline: %s\n", r.Rounds, r.CPUs, r.KEX, r.Cipher, r.Baseline)
}
