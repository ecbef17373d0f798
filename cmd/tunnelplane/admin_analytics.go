package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelplane/tunnelplane/analytics/chargeback"
	"github.com/tunnelplane/tunnelplane/api"
)

// analyticsRange is the --from/--to/--tunnel/--group-by of the usage and capacity reads.
type analyticsRange struct {
	org, groupBy, from, to, tunnel string
	limit                          int
}

func (r *analyticsRange) flags(cmd *cobra.Command, groupHelp string) {
	cmd.Flags().StringVar(&r.groupBy, "group-by", "tunnel", groupHelp)
	cmd.Flags().StringVar(&r.from, "from", "", "start, RFC 3339 (default: 7 days ago)")
	cmd.Flags().StringVar(&r.to, "to", "", "end, RFC 3339 (default: now)")
	cmd.Flags().StringVar(&r.tunnel, "tunnel", "", "one tunnel (id or name)")
	cmd.Flags().IntVar(&r.limit, "limit", 20, "series a page holds (the API may take fewer for a long range); every page is read")
}

func (r *analyticsRange) query(ctx context.Context, a *adminClient) (url.Values, error) {
	q := orgQuery(r.org)
	q.Set("group_by", r.groupBy)
	now := time.Now().UTC()
	from, to := now.Add(-7*24*time.Hour).Format(time.RFC3339), now.Format(time.RFC3339)
	if r.from != "" {
		from = r.from
	}
	if r.to != "" {
		to = r.to
	}
	q.Set("from", from)
	q.Set("to", to)
	if r.limit < 1 {
		return nil, fmt.Errorf("--limit %d: give at least 1", r.limit)
	}
	q.Set("limit", fmt.Sprint(r.limit))
	if r.tunnel != "" {
		id, err := a.tunnelID(ctx, r.org, r.tunnel)
		if err != nil {
			return nil, err
		}
		q.Set("tunnel", id)
	}
	return q, nil
}

// maxAnalyticsPages bounds how many pages one command reads.
const maxAnalyticsPages = 1000

func seriesName(tunnel, kind, caller string) string {
	switch {
	case kind != "" && caller != "":
		return tunnel + " " + kind + ":" + caller
	case kind != "":
		return tunnel + " " + kind
	case tunnel != "":
		return tunnel
	}
	return "org"
}

func (a *adminClient) analyticsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "analytics", Short: "Usage, capacity and chargeback from the usage rollups"}
	var org string
	cmd.PersistentFlags().StringVar(&org, "org", "", "organization name or id (default: your only one)")

	var ur analyticsRange
	var granularity string
	usage := &cobra.Command{
		Use: "usage", Short: "Requests, errors, bytes, latency and TTFB percentiles, streams per tunnel, caller or org by hour, day, week or month", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ur.org = org
			q, err := ur.query(cmd.Context(), a)
			if err != nil {
				return err
			}
			q.Set("granularity", granularity)
			var all api.UsageReport
			for range maxAnalyticsPages {
				var page api.UsageReport
				if _, err := a.get(cmd.Context(), "/api/v1/analytics/usage", q, &page); err != nil {
					return err
				}
				items := append(all.Items, page.Items...)
				all, all.Items = page, items
				if page.NextCursor == "" {
					break
				}
				q.Set("cursor", page.NextCursor)
			}
			all.NextCursor = ""
			if a.asJSON {
				return a.printReport(all)
			}
			rows := make([][]string, len(all.Items))
			for i, b := range all.Items {
				rows[i] = []string{seriesName(b.TunnelID, b.CallerKind, b.CallerID), b.Start.In(location(all.TimeZone)).Format("2006-01-02 15:04 MST"),
					fmt.Sprint(b.Requests), fmt.Sprint(b.Errors), fmt.Sprint(b.BytesIn), fmt.Sprint(b.BytesOut),
					fmt.Sprintf("%.1f / %.1f / %.1f", b.Latency.P50, b.Latency.P95, b.Latency.P99), fmt.Sprintf("%.1f / %.1f / %.1f", b.TTFB.P50, b.TTFB.P95, b.TTFB.P99),
					fmt.Sprint(b.StreamsMax), fmt.Sprintf("%.2f", b.StreamsMean), fmt.Sprintf("%.0f", b.StreamedSeconds)}
			}
			return a.table(all.Items, "SERIES\tSTART ("+all.TimeZone+")\tREQUESTS\tERRORS\tBYTES IN\tBYTES OUT\tLATENCY P50/95/99 MS\tTTFB P50/95/99 MS\tSTREAMS MAX\tMEAN\tSTREAMED S", rows)
		},
	}
	ur.flags(usage, "tunnel, caller or org")
	usage.Flags().StringVar(&granularity, "granularity", "day", "hour, day, week (ISO, from Monday) or month, in the org's time zone")

	var cr analyticsRange
	capacity := &cobra.Command{
		Use: "capacity", Short: "Peak hour, p95 of hourly concurrency and headroom against the nodes' configured capacity", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cr.org = org
			q, err := cr.query(cmd.Context(), a)
			if err != nil {
				return err
			}
			var all api.CapacityReport
			for range maxAnalyticsPages {
				var page api.CapacityReport
				if _, err := a.get(cmd.Context(), "/api/v1/analytics/capacity", q, &page); err != nil {
					return err
				}
				items := append(all.Items, page.Items...)
				all, all.Items = page, items
				if page.NextCursor == "" {
					break
				}
				q.Set("cursor", page.NextCursor)
			}
			all.NextCursor = ""
			if a.asJSON {
				return a.printReport(all)
			}
			rows := make([][]string, len(all.Items))
			for i, c := range all.Items {
				peak := ""
				if c.PeakHour != nil {
					peak = short(*c.PeakHour)
				}
				rows[i] = []string{seriesName(c.TunnelID, "", ""), peak, fmt.Sprint(c.PeakRequests), fmt.Sprint(c.PeakStreamsMax), fmt.Sprint(c.P95StreamsMax),
					fmt.Sprintf("%.2f", c.P95StreamsMean), fmt.Sprintf("%d × %d", c.Nodes, c.NodeCapacity), fmt.Sprint(c.Headroom)}
			}
			return a.table(all.Items, "SERIES\tPEAK HOUR\tPEAK REQUESTS\tPEAK STREAMS\tP95 STREAMS MAX\tP95 STREAMS MEAN\tNODES × CAPACITY\tHEADROOM", rows)
		},
	}
	cr.flags(capacity, "tunnel or org")

	var month string
	charge := &cobra.Command{
		Use: "chargeback", Short: "A month's chargeback: one line per tunnel and caller, exact decimals, with its rounding rule", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := orgQuery(org)
			q.Set("month", month)
			var st chargeback.Statement
			if _, err := a.get(cmd.Context(), "/api/v1/analytics/chargeback", q, &st); err != nil {
				return err
			}
			if a.asJSON {
				return a.printReport(st)
			}
			rows := make([][]string, 0, len(st.Lines)+len(st.Totals))
			for _, l := range st.Lines {
				rows = append(rows, []string{l.TunnelID, seriesName("", l.CallerKind, l.CallerID), l.Item, fmt.Sprint(len(l.Periods)), l.Currency, l.Amount})
			}
			for _, t := range st.Totals {
				rows = append(rows, []string{"TOTAL", "", "", "", t.Currency, t.Amount})
			}
			if err := a.table(st.Lines, "TUNNEL\tCALLER\tITEM\tPERIODS\tCURRENCY\tAMOUNT", rows); err != nil {
				return err
			}
			_, err := fmt.Fprintf(a.g.stdout, "\n%s %s (%s). Rounding: %s\n", st.OrgID, st.Month, st.TimeZone, st.Rounding)
			return err
		},
	}
	charge.Flags().StringVar(&month, "month", time.Now().UTC().Format("2006-01"), "the month, like 2026-03, in the org's time zone")

	timeZone := &cobra.Command{
		Use: "time-zone ZONE", Short: "Set the org's time zone (IANA, like Europe/Berlin): its days, weeks and months", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.write(cmd.Context(), "set time zone", http.MethodPut, "/api/v1/analytics/settings", orgQuery(org), api.OrgSettingsInput{TimeZone: args[0]})
			return err
		},
	}
	var ps api.PriceSheetInput
	var effective string
	prices := &cobra.Command{
		Use: "price-sheet", Short: "Set the org's prices from a whole hour on (never in the past)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := time.Parse(time.RFC3339, effective)
			if err != nil {
				return fmt.Errorf("--effective-from %q: want an RFC 3339 time like 2026-04-01T00:00:00+02:00", effective)
			}
			ps.EffectiveFrom = t
			_, err = a.write(cmd.Context(), "set price sheet", http.MethodPost, "/api/v1/analytics/price-sheets", orgQuery(org), ps)
			return err
		},
	}
	prices.Flags().StringVar(&effective, "effective-from", "", "when the prices start (a whole hour, RFC 3339)")
	prices.Flags().StringVar(&ps.Currency, "currency", "EUR", "ISO 4217 code")
	prices.Flags().StringVar(&ps.PerGBIn, "per-gb-in", "0", "price per GB (10^9 bytes) from callers")
	prices.Flags().StringVar(&ps.PerGBOut, "per-gb-out", "0", "price per GB to callers")
	prices.Flags().StringVar(&ps.Per1kRequests, "per-1k-requests", "0", "price per 1,000 requests")
	prices.Flags().StringVar(&ps.PerStreamedHour, "per-streamed-hour", "0", "price per hour of calls open")
	prices.Flags().StringVar(&ps.PerTunnelDay, "per-tunnel-day", "0", "price per local day a tunnel served a request")
	cmd.AddCommand(usage, capacity, charge, timeZone, prices)
	return cmd
}

func (a *adminClient) printReport(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.printJSON(raw)
}

func location(name string) *time.Location {
	if loc, err := time.LoadLocation(name); err == nil {
		return loc
	}
	return time.UTC
}
