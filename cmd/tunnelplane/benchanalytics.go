package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	analyticsbench "github.com/tunnelplane/tunnelplane/bench/analytics"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newBenchAnalyticsCommand(g *globals) *cobra.Command {
	var o analyticsbench.Options
	var asJSON bool
	var forecasts int
	cmd := &cobra.Command{
		Use:   "analytics",
		Short: "Usage windows folded per second by a rebuild of the usage rollups, and analytics query latency over 90 days × 1,000 tunnels (scratch database)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			o.AdminURL, o.Progress, o.Logger = srv.AdminURL, g.stderr, g.log
			if forecasts > 0 {
				// 90 days of hourly history per series, a week ahead, backtest included.
				o.Forecast = func(context.Context, *pgxpool.Pool, string, []string) (float64, error) {
					return forecast.MsPerSeries(forecast.BenchSeries(forecasts), 168)
				}
			}
			res, err := analyticsbench.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, res)
			}
			fmt.Fprintf(g.stdout, "rollup %.0f windows/s (%d windows, rebuild %.1fs)\nquery p50 %.1f ms, p99 %.1f ms over %d days × %d tunnels (%d hourly rows, %d MB)\n",
				res.RollupEPS, res.Windows, res.RebuildSec, res.QueryP50MS, res.QueryP99MS, res.QueryDays, res.QueryTunnels, res.QueryRows, res.QueryBytes>>20)
			for k, v := range res.Kinds {
				fmt.Fprintf(g.stdout, "  %s: p50 %.1f ms, p99 %.1f ms\n", k, v[0], v[1])
			}
			for k, v := range res.ReportMS {
				fmt.Fprintf(g.stdout, "  report %s: %.0f ms (median)\n", k, v)
			}
			if res.ForecastMSPerSeries != nil {
				fmt.Fprintf(g.stdout, "forecast %.0f ms per series (90 days of hourly history, 168 h ahead, backtest included; %d series)\n", *res.ForecastMSPerSeries, forecasts)
			}
			fmt.Fprintln(g.stdout, res.Notes)
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Windows, "windows", 200_000, "usage windows in the scratch log")
	cmd.Flags().IntVar(&o.WindowTunnels, "window-tunnels", 100, "tunnels the windows are spread over (× 3 callers)")
	cmd.Flags().IntVar(&o.Days, "days", 90, "days of hourly rollups for the queries")
	cmd.Flags().IntVar(&o.Tunnels, "tunnels", 1000, "tunnels of hourly rollups for the queries")
	cmd.Flags().IntVar(&o.Queries, "queries", 100, "queries of each kind")
	cmd.Flags().IntVar(&o.Reports, "reports", 0, "also time each analytics report (usage, chargeback, capacity: build, and render as json, pdf, xlsx) this many times over the query data")
	cmd.Flags().IntVar(&o.RebuildBatchSize, "batch", 0, "records the rebuild reads and folds at once (default: the runner's, 5,000)")
	cmd.Flags().IntVar(&forecasts, "forecasts", 20, "series forecast for forecast_ms_per_series (0: skip)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (keys rollup_eps, query_p99_ms …)")
	return cmd
}
