package main

import (
	"fmt"

	"github.com/spf13/cobra"

	failoverbench "github.com/tunnelplane/tunnelplane/bench/failover"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newBenchFailoverCommand(g *globals) *cobra.Command {
	var o failoverbench.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "A node killed under load: a control plane, 3 nodes and an agent holding two as processes, POST calls entering at every node, SIGKILL of a holding node; detect_ms, recover_ms, failed and duplicated calls (scratch database, embedded NATS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			o.AdminURL, o.Progress, o.Logger = srv.AdminURL, g.stderr, g.log
			res, err := failoverbench.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, struct {
					*failoverbench.Result
					LoadAvg string `json:"load_avg"`
				}{res, loadAvg()})
			}
			fmt.Fprintf(g.stdout, "%d calls at %.0f/s through %d nodes; killed %s\ndetect %.0f ms, recover %.0f ms; failed %d, in flight at the kill %d, duplicated %d; after the kill p50 %.1f ms, p99 %.1f ms (load average %s)\n",
				res.Calls, res.RateOK, res.Nodes, res.Killed, res.DetectMS, res.RecoverMS, res.FailedCalls, res.InFlightAtKill, res.DuplicatedCalls, res.P50AfterMS, res.P99AfterMS, loadAvg())
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Nodes, "nodes", 3, "nodes (the agent holds two)")
	cmd.Flags().IntVar(&o.Rate, "rate", 500, "POST calls per second, entering at the nodes in turn")
	cmd.Flags().DurationVar(&o.Before, "before", 0, "load before the kill (default 5s)")
	cmd.Flags().DurationVar(&o.After, "after", 0, "load after the kill (default 10s)")
	cmd.Flags().DurationVar(&o.FailoverWait, "failover-wait", 0, "the nodes' --failover-wait (default 5s)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (keys detect_ms, recover_ms, failed_calls, in_flight_at_kill, duplicated_calls …)")
	return cmd
}
