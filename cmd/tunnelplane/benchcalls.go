package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	callsbench "github.com/tunnelplane/tunnelplane/bench/accesscalls"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newBenchCallsCommand(g *globals) *cobra.Command {
	var o callsbench.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "calls",
		Short: "Per-call access records into the control plane: signed call batches at a steady rate through NATS, the ingester and the access_calls read model, with the lag (scratch database, embedded NATS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			o.AdminURL, o.Progress, o.Logger = srv.AdminURL, g.stderr, g.log
			res, err := callsbench.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, struct {
					*callsbench.Result
					LoadAvg string `json:"load_avg"`
				}{res, loadAvg()})
			}
			fmt.Fprintf(g.stdout, "%d calls/s asked, %.0f published for %.0fs (%d calls in %d batches)\nlag p50 %.0f ms, p99 %.0f ms, max %.0f ms; drained %.0f ms after the last; kept up: %v (load average %s)\n",
				res.Rate, res.PublishedRate, res.DurationSec, res.Calls, res.Batches, res.LagP50MS, res.LagP99MS, res.LagMaxMS, res.DrainMS, res.KeptUp, loadAvg())
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Rate, "rate", 5000, "calls per second")
	cmd.Flags().DurationVar(&o.Duration, "duration", 0, "how long the rate is held (default 60s)")
	cmd.Flags().IntVar(&o.CallsPerBatch, "batch", 100, "calls per signed batch")
	cmd.Flags().IntVar(&o.BatchesPerPublish, "batches-per-publish", 5, "batches in one NATS message (as a node's flush of 500 calls)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (keys lag_p50_ms, lag_p99_ms, kept_up …)")
	return cmd
}

// loadAvg is the machine's load average over 1, 5 and 15 minutes ("" where unknown).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
