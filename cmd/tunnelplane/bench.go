package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	exportbench "github.com/tunnelplane/tunnelplane/bench/export"
	siembench "github.com/tunnelplane/tunnelplane/bench/siem"
	storebench "github.com/tunnelplane/tunnelplane/bench/store"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

func newBenchCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure tunnelplane against its baseline in the same run",
	}
	var dur time.Duration
	var rounds int
	var asJSON bool
	store := &cobra.Command{
		Use:   "store",
		Short: "Signed appends vs raw batched inserts, plus read and verify throughput (scratch database)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			res, err := storebench.Run(ctx, storebench.Options{AdminURL: srv.AdminURL, Duration: dur, Rounds: rounds, Progress: g.stderr, Logger: g.log})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, res)
			}
			printStoreBench(g, res)
			return nil
		},
	}
	store.Flags().DurationVar(&dur, "duration", 2*time.Second, "length of each measurement")
	store.Flags().IntVar(&rounds, "rounds", 3, "rounds per configuration (medians are reported)")
	store.Flags().BoolVar(&asJSON, "json", false, "print JSON (keys raw_insert_eps, append_eps, ratio, read_eps, verify_eps …)")
	cmd.AddCommand(store)

	var records, batch, perDelivery, loadClients int
	var commandRate float64
	var cpuProfile string
	var loadDur time.Duration
	siemCmd := &cobra.Command{
		Use:   "siem",
		Short: "Forwarding the log to a local rsyslog over TLS vs a plain TLS client writing the same messages, and the lag under API load (scratch database)",
		Long: `siem starts the control plane in-process on a scratch database (dropped afterwards), fills its
log, starts a private rsyslogd with a TLS listener (Debian's rsyslog and rsyslog-gnutls), and per
round forwards the whole log with a SIEM forwarder (OCSF in RFC 5424, batches acknowledged by the
receiver, a cursor per batch) and, as the baseline, writes the same messages, formatted
beforehand, over one TLS connection. It prints both rates and their ratio. Then a forwarder
starting at the head of the log forwards while HTTP clients send the admin API commands at a
steady rate (bench api's workload): the lag is, per record, the time from its recording until
the receiver acknowledged the batch holding it (p50, p99).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneGC() // the forwarder and the API run in the control plane, which `control` tunes so
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			res, err := siembench.Run(ctx, siembench.Options{AdminURL: srv.AdminURL, Start: benchControlPlane(g), Records: records, Batch: batch, BatchesPerDelivery: perDelivery,
				Rounds: rounds, CommandRate: commandRate, LoadDuration: loadDur, LoadClients: loadClients, CPUProfile: cpuProfile, Progress: g.stderr, Logger: g.log})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, res)
			}
			fmt.Fprintf(g.stdout, "forwarder %.0f ev/s, plain TLS client %.0f ev/s: siem_ratio %.2f (%d records, batches of %d, medians of %d rounds)\n",
				res.SiemEPS, res.BaselineEPS, res.Ratio, res.Records, res.Batch, res.Rounds)
			fmt.Fprintf(g.stdout, "lag under %.0f API commands/s (%.0f asked, %.1fs): p50 %.0f ms, p99 %.0f ms over %d records\nbaseline: %s\n",
				res.CommandsPerS, res.CommandRate, res.LoadS, res.LagP50MS, res.LagP99MS, res.LagRecords, res.Baseline)
			return nil
		},
	}
	siemCmd.Flags().IntVar(&records, "records", 50000, "records in the scratch log")
	siemCmd.Flags().IntVar(&batch, "batch", 2000, "the forwarder's batch size")
	siemCmd.Flags().IntVar(&perDelivery, "batches-per-delivery", 0, "the most batches one syslog connection carries (0: the forwarder's default, 4)")
	siemCmd.Flags().IntVar(&rounds, "rounds", 3, "rounds (medians are reported)")
	siemCmd.Flags().Float64Var(&commandRate, "command-rate", 1000, "API commands per second while the lag is measured")
	siemCmd.Flags().DurationVar(&loadDur, "load-duration", 10*time.Second, "how long the API load runs while the lag is measured")
	siemCmd.Flags().IntVar(&loadClients, "load-clients", 64, "HTTP clients sending the API load")
	siemCmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the rounds (baseline and forwarder) to this file")
	siemCmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (keys siem_eps, baseline_eps, siem_ratio, lag_p50_ms, lag_p99_ms, commands_per_s …)")
	cmd.AddCommand(siemCmd, newBenchExportCommand(g), newBenchAnalyticsCommand(g), newBenchCallsCommand(g), newBenchSessionsCommand(g), newBenchFailoverCommand(g))
	return cmd
}

func newBenchExportCommand(g *globals) *cobra.Command {
	var records, rounds int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export and verify-export an evidence bundle of the whole log vs verify of the same log (scratch database)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := g.resolveDatabase(ctx, devdb.PrivateStart, true)
			if err != nil {
				return err
			}
			res, err := exportbench.Run(ctx, exportbench.Options{AdminURL: srv.AdminURL, Records: records, Rounds: rounds, Progress: g.stderr, Logger: g.log})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g, res)
			}
			fmt.Fprintf(g.stdout, "export %.0f records/s (%.2f× verify), verify-export %.0f records/s (%.2f× verify), verify %.0f records/s\n%d records, bundle %d bytes, medians of %d rounds; baseline: %s\n",
				res.ExportEPS, res.ExportRatio, res.VerifyExportEPS, res.VerifyExportRatio, res.VerifyEPS, res.Records, res.BundleBytes, res.Rounds, res.Baseline)
			return nil
		},
	}
	cmd.Flags().IntVar(&records, "records", 1_000_000, "records in the scratch log")
	cmd.Flags().IntVar(&rounds, "rounds", 3, "rounds (medians are reported)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (keys export_eps, verify_export_eps, verify_eps …)")
	return cmd
}

// printJSON prints a bench result as indented JSON.
func printJSON(g *globals, res any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func printStoreBench(g *globals, res *storebench.Result) {
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\twriters\traw insert ev/s\tsigned append ev/s\tratio\t")
	for _, c := range res.Configs {
		fmt.Fprintf(tw, "%d\t%d\t%.0f\t%.0f\t%.2f\t\n", c.Batch, c.Writers, c.RawEPS, c.AppendEPS, c.Ratio)
	}
	tw.Flush()
	fmt.Fprintf(g.stdout, "best append: %.0f ev/s (batch %d, %d writers), %.2f× the raw insert at the same batch size; lowest ratio %.2f\n",
		res.AppendEPS, res.BestBatch, res.BestWriters, res.Ratio, res.MinRatio)
	fmt.Fprintf(g.stdout, "read: %.0f ev/s   verify (signatures checked): %.0f ev/s over %d records, %d checkpoints\n",
		res.ReadEPS, res.VerifyEPS, res.LogEvents, res.Checkpoints)
	fmt.Fprintf(g.stdout, "medians of %d rounds; baseline: %s\n", res.Rounds, res.Baseline)
}
