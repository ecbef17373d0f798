package main

import (
	"fmt"

	"github.com/spf13/cobra"

	sessionsbench "github.com/tunnelplane/tunnelplane/bench/sessions"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newBenchSessionsCommand(g *globals) *cobra.Command {
	var o sessionsbench.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "A node restart as the control plane sees it: node.started, then an agent.connected per returning agent through NATS, the ingester and the agent_sessions read model, with the lag (scratch database, embedded NATS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			o.AdminURL, o.Progress, o.Logger = srv.AdminURL, g.stderr, g.log
			res, err := sessionsbench.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, struct {
					*sessionsbench.Result
					LoadAvg string `json:"load_avg"`
				}{res, loadAvg()})
			}
			for _, r := range []struct {
				name string
				sessionsbench.Round
			}{{"baseline (no linger)", res.Baseline}, {"this build", res.Round}} {
				fmt.Fprintf(g.stdout, "%s: %d agents back within %.0f ms (%.0f/s, peak %.0f/s in 100 ms) in %d publications; listed: lag p50 %.0f ms, p99 %.0f ms, max %.0f ms; drained %.0f ms after the last; %.0f sessions/s\n",
					r.name, res.Agents, res.OverMS, r.ArrivalPerS, r.PeakPerS, r.Publications, r.LagP50MS, r.LagP99MS, r.LagMaxMS, r.DrainMS, r.IngestPerS)
			}
			fmt.Fprintf(g.stdout, "drain ratio %.1f; kept up: %v (load average %s)\n", res.DrainRatio, res.KeptUp, loadAvg())
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Agents, "agents", 10_000, "agents on the restarted node")
	cmd.Flags().DurationVar(&o.Over, "over", 0, "the window the agents return in, each at a random time (default 1s)")
	cmd.Flags().DurationVar(&o.KeptUpLag, "kept-up-lag", 0, "kept up: every session listed within this of its report (default 5s)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (keys lag_p99_ms, drain_ms, ingest_per_s, drain_ratio, kept_up, baseline …)")
	return cmd
}
