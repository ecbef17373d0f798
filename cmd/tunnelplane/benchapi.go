package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"

	apibench "github.com/tunnelplane/tunnelplane/bench/api"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newBenchAPICommand(g *globals) *cobra.Command {
	opts := apibench.Options{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Commands/s and command→read-model latency of the admin API over real HTTP (scratch database)",
		Long: `bench api starts the control plane in-process on loopback against a scratch database (dropped
afterwards) and drives it with concurrent HTTP clients creating and updating tunnels across a few
organizations. It reports commands per second and the latency from sending a write until the
tunnels read model shows its position (p50, p99), medians over the rounds, and the same commands
called in-process as the baseline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGC()
			if err := opts.Validate(); err != nil {
				return err
			}
			srv, err := g.resolveDatabase(cmd.Context(), devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			opts.AdminURL, opts.Start, opts.Progress = srv.AdminURL, benchControlPlane(g), g.stderr
			res, err := apibench.Run(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, res)
			}
			printAPIBench(g, res, opts.Duration)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&opts.Duration, "duration", 5*time.Second, "length of each round")
	f.IntVar(&opts.Rounds, "rounds", 3, "rounds (medians are reported)")
	f.IntVar(&opts.Clients, "clients", 16, "concurrent HTTP clients")
	f.IntVar(&opts.Orgs, "orgs", 4, "organizations the clients spread over")
	f.BoolVar(&opts.Baseline, "baseline", true, "also measure the commands in-process")
	f.BoolVar(&asJSON, "json", false, "print JSON (keys commands_per_s, visible_p50_ms, visible_p99_ms …)")
	f.StringVar(&opts.CPUProfile, "cpuprofile", "", "write a CPU profile of the HTTP rounds to this file")
	return cmd
}

// benchControlPlane starts the control plane `bench api` measures, as `control` assembles it, on
// the bench's scratch database and data directory, with the API on a loopback port.
func benchControlPlane(g *globals) func(ctx context.Context, databaseURL, dataDir string) (*apibench.System, error) {
	return func(ctx context.Context, databaseURL, dataDir string) (*apibench.System, error) {
		// Request logs at info would measure the terminal; the bench logs warnings only.
		bg := *g
		bg.databaseURL, bg.dataDir = databaseURL, dataDir
		bg.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		cp, err := startControlPlane(ctx, &bg, controlPlaneOptions{Listener: ln, DBMaxConns: 32})
		if err != nil {
			ln.Close()
			return nil, err
		}
		return &apibench.System{URL: cp.URL, Service: cp.Service, Runner: cp.Runner, Store: cp.Log.Store, Pool: cp.Log.Pool, Stop: cp.Close}, nil
	}
}

func printAPIBench(g *globals, res *apibench.Result, d time.Duration) {
	fmt.Fprintf(g.stdout, "commands: %.0f/s (%d commands, %d errors, %d clients, %d orgs, %s)\n", res.CommandsPerS, res.Commands, res.Errors,
		res.Clients, res.Orgs, res.Workload)
	fmt.Fprintf(g.stdout, "visible in the read model: p50 %.1f ms, p99 %.1f ms   write round trip: p50 %.1f ms, p99 %.1f ms\n",
		res.VisibleP50, res.VisibleP99, res.WriteP50, res.WriteP99)
	if res.BaselineCommandsPerS > 0 {
		fmt.Fprintf(g.stdout, "baseline (in-process commands): %.0f/s; API/baseline %.2f\n", res.BaselineCommandsPerS, res.Ratio)
	}
	fmt.Fprintf(g.stdout, "medians of %d rounds of %s\n", res.Rounds, d)
}
