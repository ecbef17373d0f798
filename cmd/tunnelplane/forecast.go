package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
)

func newForecastCommand(g *globals) *cobra.Command {
	a := &adminClient{g: g}
	var org, tunnel, metric, horizon, asOf, history string
	var threshold, probability float64
	cmd := &cobra.Command{
		Use:   "forecast",
		Short: "Forecast a tunnel's or an organization's hourly usage from the log's history (through the API)",
		Long: `forecast asks the control plane (GET /api/v1/analytics/forecast) to rebuild the hourly series of
--metric from the usage windows in the log, up to --as-of when given ("what would we have
forecast on March 1"), and to forecast --horizon hours. The model is chosen per series by
rolling-origin backtesting against the seasonal naive forecast (docs/forecasting.md); the table
shows each hour with its 80% and 95% intervals. With --threshold it also says when the series is
expected to exceed it (per hour) with at least --probability.`,
		Example: `  tunnelplane forecast --org acme --tunnel llm --metric requests --horizon 168h
  tunnelplane forecast --org acme --tunnel llm --threshold 5000 --as-of 2026-03-01T00:00:00Z --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			q := orgQuery(org)
			q.Set("metric", metric)
			q.Set("horizon", horizon)
			for k, v := range map[string]string{"as_of": asOf, "history": history} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if threshold > 0 {
				q.Set("threshold", strconv.FormatFloat(threshold, 'f', -1, 64))
				q.Set("probability", strconv.FormatFloat(probability, 'f', -1, 64))
			}
			if tunnel != "" {
				id, err := a.tunnelID(ctx, org, tunnel)
				if err != nil {
					return err
				}
				q.Set("tunnel", id)
			}
			var f api.ForecastAnswer
			raw, err := a.get(ctx, "/api/v1/analytics/forecast", q, &f)
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(raw)
			}
			fc := f.Forecast.Forecast
			fmt.Fprintf(a.g.stdout, "%s per hour, from %d usage windows up to log position %d (series %s, %d hours)\n", f.Metric, f.Windows, f.Position,
				fc.SeriesStart.UTC().Format(time.RFC3339), fc.SeriesHours)
			fmt.Fprintf(a.g.stdout, "model %s: backtest MASE %.3f against the %s's %.3f over %d origins; interval coverage in the backtest 80%%: %.0f%%, 95%%: %.0f%%\n",
				fc.Model, fc.Backtest.MASE, fc.Backtest.ReferenceModel, fc.Backtest.ReferenceMASE, fc.Backtest.Origins, 100*fc.Backtest.Coverage80, 100*fc.Backtest.Coverage95)
			if f.Warning != "" {
				fmt.Fprintln(a.g.stdout, f.Warning)
			}
			rows := make([][]string, 0, len(fc.Points))
			num := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
			for _, p := range fc.Points {
				rows = append(rows, []string{p.Hour.UTC().Format(time.RFC3339), num(p.Value), num(p.Lo80), num(p.Hi80), num(p.Lo95), num(p.Hi95)})
			}
			return a.table(fc.Points, "HOUR\tFORECAST\tLO80\tHI80\tLO95\tHI95", rows)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&a.baseURL, "api-url", envDefault("API_URL", "http://"+controlapp.DefaultAPIAddr), "admin API base URL (env TUNNELPLANE_API_URL)")
	secretFlag(fs, &a.token, "token", "TOKEN", "bearer token (an owner, admin or auditor of the organization)")
	fs.BoolVar(&a.asJSON, "json", false, "print the API's JSON")
	fs.StringVar(&org, "org", "", "organization name or id (default: your only one)")
	fs.StringVar(&tunnel, "tunnel", "", "one tunnel (name or id); default: the whole organization")
	fs.StringVar(&metric, "metric", "requests", "requests, bytes or streams (mean calls open)")
	fs.StringVar(&horizon, "horizon", "168h", "hours to forecast, like 168h")
	fs.StringVar(&asOf, "as-of", "", "forecast as it would have been made then (RFC 3339): only what the log held then counts")
	fs.StringVar(&history, "history", "", "how far back the series reaches (default 90 days)")
	fs.Float64Var(&threshold, "threshold", 0, "per hour: say when the forecast is expected to exceed it")
	fs.Float64Var(&probability, "probability", 0.5, "with --threshold: the least probability of exceeding it that counts")
	return cmd
}
