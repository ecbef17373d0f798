package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
)

// scheduleFlags describe a schedule (create, update): a flag not given on update keeps its value.
type scheduleFlags struct {
	format, timeZone, every, weekday, tunnel, metric string
	hour, day, intervalHours, horizon                int
	threshold, probability                           float64
}

func (f *scheduleFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.format, "format", "pdf", "html, pdf, xlsx, csv or json (a forecast: json)")
	fs.StringVar(&f.timeZone, "time-zone", "", "IANA zone of the cadence and the periods covered (default: the organization's, else UTC)")
	fs.StringVar(&f.every, "every", "daily", "daily, weekly, monthly (each covering the previous day, ISO week or month) or interval")
	fs.IntVar(&f.hour, "hour", 6, "local hour of daily, weekly and monthly runs (0-23)")
	fs.StringVar(&f.weekday, "weekday", "monday", "weekly: the day of the runs")
	fs.IntVar(&f.day, "day", 1, "monthly: the day of the month of the runs (1-28)")
	fs.IntVar(&f.intervalHours, "interval-hours", 24, "interval: every N hours (1-744), each covering the N hours before it")
	fs.StringVar(&f.tunnel, "tunnel", "", "forecast: a tunnel's id (default: the whole organization)")
	fs.StringVar(&f.metric, "metric", "requests", "forecast: requests, bytes or streams")
	fs.Float64Var(&f.threshold, "threshold", 0, "forecast: warn when the forecast exceeds this per hour")
	fs.Float64Var(&f.probability, "probability", 0.8, "forecast: with at least this probability (0-1]")
	fs.IntVar(&f.horizon, "horizon-hours", 168, "forecast: hours ahead")
}

func (f *scheduleFlags) cadence() domain.Cadence {
	c := domain.Cadence{Every: f.every}
	switch f.every {
	case domain.CadenceInterval:
		c.IntervalHours = f.intervalHours
	case domain.CadenceWeekly:
		c.Hour, c.Weekday = f.hour, strings.ToLower(f.weekday)
	case domain.CadenceMonthly:
		c.Hour, c.Day = f.hour, f.day
	default:
		c.Hour = f.hour
	}
	return c
}

func (f *scheduleFlags) forecast() *domain.ForecastSpec {
	return &domain.ForecastSpec{TunnelID: f.tunnel, Metric: f.metric, Threshold: f.threshold, Probability: f.probability, HorizonHours: f.horizon}
}

// patch is what update sends: only what was given.
func (f *scheduleFlags) patch(fs *pflag.FlagSet, kind string) api.ReportSchedulePatch {
	var p api.ReportSchedulePatch
	if fs.Changed("format") {
		p.Format = &f.format
	}
	if fs.Changed("time-zone") {
		p.TimeZone = &f.timeZone
	}
	for _, n := range []string{"every", "hour", "weekday", "day", "interval-hours"} {
		if fs.Changed(n) {
			c := f.cadence()
			p.Cadence = &c
		}
	}
	for _, n := range []string{"tunnel", "metric", "threshold", "probability", "horizon-hours"} {
		if fs.Changed(n) && kind == domain.ReportKindForecast {
			p.Forecast = f.forecast()
		}
	}
	return p
}

func cadenceWords(c domain.Cadence) string {
	switch c.Every {
	case domain.CadenceInterval:
		return fmt.Sprintf("every %dh", c.IntervalHours)
	case domain.CadenceWeekly:
		return fmt.Sprintf("weekly %s %02d:00", c.Weekday, c.Hour)
	case domain.CadenceMonthly:
		return fmt.Sprintf("monthly day %d %02d:00", c.Day, c.Hour)
	}
	return fmt.Sprintf("daily %02d:00", c.Hour)
}

func scheduleRow(k api.ReportSchedule) []string {
	next := "-"
	if k.NextDueAt != nil {
		next = k.NextDueAt.UTC().Format(time.RFC3339)
	}
	scope := k.OrgID
	if k.Platform {
		scope = "*"
	}
	return []string{k.ID, scope, k.Kind, k.Format, cadenceWords(k.Cadence) + " " + k.TimeZone, k.State, next, k.CreatedBy}
}

const scheduleHeader = "ID\tORG\tKIND\tFORMAT\tCADENCE\tSTATE\tNEXT DUE\tCREATED BY"

func (a *adminClient) reportSchedulesCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "report-schedules", Short: "Scheduled reports: made when due, stored for download, recorded as report.generated",
		Long: `A schedule makes a report of KIND (soc2, hipaa, iso27001, forecast, …) daily, weekly or monthly at a
local hour, or every N hours; each run covers the period before it. A forecast schedule warns
(capacity.forecast_exceeded) when usage is forecast to exceed --threshold per hour. Who may read that
kind of report in the organization (--org "*": the whole log, superadmins) may schedule it.`}
	var org string
	cmd.PersistentFlags().StringVar(&org, "org", "", `organization name or id, or "*" for the whole log (default: your only one)`)

	var f scheduleFlags
	create := &cobra.Command{
		Use: "create KIND", Short: "Schedule a report", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := api.ReportScheduleInput{Org: org, Kind: args[0], Format: f.format, TimeZone: f.timeZone, Cadence: f.cadence()}
			if args[0] == domain.ReportKindForecast {
				in.Forecast = f.forecast()
				if !cmd.Flags().Changed("format") {
					in.Format = "json"
				}
			}
			_, err := a.write(cmd.Context(), "created report schedule", http.MethodPost, "/api/v1/report-schedules", nil, in)
			return err
		},
	}
	f.register(create.Flags())

	var deleted bool
	list := &cobra.Command{
		Use: "list", Short: "Schedules of the organization (of the kinds you may read)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := orgQuery(org)
			if deleted {
				q.Set("deleted", "true")
			}
			items, err := listAll[api.ReportSchedule](cmd.Context(), a, "/api/v1/report-schedules", q, 0)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, k := range items {
				rows[i] = scheduleRow(k)
			}
			return a.table(items, scheduleHeader, rows)
		},
	}
	list.Flags().BoolVar(&deleted, "deleted", false, "include deleted schedules")

	show := &cobra.Command{
		Use: "show ID", Short: "One schedule and its next due time", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k api.ReportSchedule
			raw, err := a.get(cmd.Context(), "/api/v1/report-schedules/"+args[0], orgQuery(org), &k)
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(raw)
			}
			return a.table(k, scheduleHeader, [][]string{scheduleRow(k)})
		},
	}

	var uf scheduleFlags
	update := &cobra.Command{
		Use: "update ID", Short: "Change a schedule from now on (flags not given keep their value; the kind stays)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k api.ReportSchedule
			if _, err := a.get(cmd.Context(), "/api/v1/report-schedules/"+args[0], orgQuery(org), &k); err != nil {
				return err
			}
			_, err := a.write(cmd.Context(), "updated report schedule", http.MethodPatch, "/api/v1/report-schedules/"+args[0], orgQuery(org),
				uf.patch(cmd.Flags(), k.Kind), "If-Match", fmt.Sprintf("%q", fmt.Sprint(k.Version)))
			return err
		},
	}
	uf.register(update.Flags())

	action := func(use, short, path, done string) *cobra.Command {
		return &cobra.Command{Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				method := http.MethodPost
				if path == "" {
					method = http.MethodDelete
				}
				_, err := a.write(cmd.Context(), done, method, "/api/v1/report-schedules/"+args[0]+path, orgQuery(org), nil)
				return err
			}}
	}

	var schedule, kind string
	reports := &cobra.Command{
		Use: "reports", Short: "Stored reports of the organization, newest first (download one with download ID)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := orgQuery(org)
			if schedule != "" {
				q.Set("schedule_id", schedule)
			}
			if kind != "" {
				q.Set("kind", kind)
			}
			items, err := listAll[api.StoredReport](cmd.Context(), a, "/api/v1/reports", q, 500)
			if err != nil {
				return err
			}
			rows := make([][]string, len(items))
			for i, r := range items {
				due := "-"
				if r.DueAt != nil {
					due = r.DueAt.UTC().Format(time.RFC3339)
				}
				rows[i] = []string{r.ID, r.Kind, r.Format, due, r.From + ".." + r.To, fmt.Sprint(r.Bytes), r.SHA256}
			}
			return a.table(items, "ID\tKIND\tFORMAT\tDUE\tWINDOW\tBYTES\tSHA-256", rows)
		},
	}
	reports.Flags().StringVar(&schedule, "schedule", "", "only this schedule's reports")
	reports.Flags().StringVar(&kind, "kind", "", "only reports of this kind")

	var out string
	download := &cobra.Command{
		Use: "download ID", Short: "Download a stored report (to --out, else standard output)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := a.call(cmd.Context(), http.MethodGet, "/api/v1/reports/"+args[0], nil, nil)
			if err != nil {
				return err
			}
			if out == "" {
				_, err = a.g.stdout.Write(raw)
				return err
			}
			if err := os.WriteFile(out, raw, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(a.g.stdout, "wrote %s (%d bytes)\n", out, len(raw))
			return nil
		},
	}
	download.Flags().StringVar(&out, "out", "", "file to write")

	cmd.AddCommand(create, list, show, update, action("pause", "Pause a schedule (runs due meanwhile are not made)", "/pause", "paused report schedule"),
		action("resume", "Resume a schedule from its next due time", "/resume", "resumed report schedule"),
		action("delete", "Delete a schedule (its reports stay)", "", "deleted report schedule"), reports, download)
	return cmd
}
