package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/report/record"
	"github.com/tunnelplane/tunnelplane/report/render"
)

func newReportCommand(g *globals) *cobra.Command {
	var from, to, org, format, out, month string
	var asJSON bool
	var wait time.Duration
	var nodeCap int64
	cmd := &cobra.Command{
		Use:   "report soc2|hipaa|iso27001|usage|chargeback|capacity --from TIME --to TIME [--org ORG_ID] [--format html|pdf|xlsx|csv|json] [--out FILE]",
		Short: "Write a compliance report (by control, exceptions first) or a usage, chargeback or capacity report of a window",
		Long: `report writes a SOC 2, HIPAA or ISO/IEC 27001 report of the events recorded in [--from, --to)
(RFC 3339 times, or dates: midnight UTC), of one organization (--org, its id) or of the whole log.
Each section states a control, then its exceptions, the counts of the event types that evidence
it and tables of them; what the log of this version does not record is said so. The mapping of
controls to events and rules is compliance/report/controls.json (docs/compliance.md).

It first brings the compliance read model up to the log's head (running that projection here,
safely beside a running control plane), and names in the report the log positions and the signed
checkpoint it was computed from. It appends report.generated (who, which report, window, format,
the file's SHA-256). Without --out the file goes to stdout and the summary to stderr.

usage, chargeback and capacity report on one organization (--org, its id; required) from the
usage read model, brought up to the log's head the same way: usage per tunnel and per caller with
a timeline, chargeback's priced lines in exact decimals with the price sheets in force and the
rounding rule (--month YYYY-MM instead of --from and --to: a local month), capacity's peak hour,
p95 of hourly concurrency and headroom against the nodes in service (docs/analytics.md).`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"soc2", "hipaa", "iso27001", "usage", "chargeback", "capacity"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var fromT, toT time.Time
			var err error
			if month == "" || from != "" || to != "" {
				if fromT, err = report.ParseBound(from); err != nil {
					return fmt.Errorf("--from %q: %w", from, err)
				}
				if toT, err = report.ParseBound(to); err != nil {
					return fmt.Errorf("--to %q: %w", to, err)
				}
			}
			if format == "" {
				format = strings.TrimPrefix(filepath.Ext(out), ".")
			}
			if format == "" {
				format = string(render.JSON)
			}
			f, err := render.ParseFormat(format)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			h, err := openLog(ctx, g, 4)
			if err != nil {
				return err
			}
			defer h.Close()
			var res record.Result
			if analyticsreport.IsKind(args[0]) {
				req := analyticsreport.Request{Kind: args[0], From: fromT, To: toT, Month: month, OrgID: org, Actor: localActor()}
				res, err = controlapp.GenerateAnalyticsReport(ctx, h, req, f, nodeCap, wait, g.log)
			} else if month != "" {
				return fmt.Errorf("--month is for chargeback reports")
			} else {
				res, err = controlapp.GenerateReport(ctx, h, report.Request{Framework: args[0], From: fromT, To: toT, OrgID: org, Actor: localActor()}, f, wait, g.log)
			}
			if err != nil {
				return err
			}
			summary := g.stdout
			if out == "" {
				summary = g.stderr
				if _, err := g.stdout.Write(res.File); err != nil {
					return err
				}
			} else if err := writeFileAtomic(out, res.File); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(summary)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"report_id": res.ReportID, "report": args[0], "format": f, "sha256": res.SHA256,
					"bytes": len(res.File), "position": res.Provenance.Position, "checkpoint_size": res.Provenance.CheckpointSize,
					"event_position": res.EventPosition, "out": out})
			}
			checkpoint := ""
			if res.Provenance.CheckpointSize > 0 {
				checkpoint = fmt.Sprintf(", checkpoint size %d", res.Provenance.CheckpointSize)
			}
			fmt.Fprintf(summary, "%s report %s (%s, %d bytes) from log positions 0..%d%s\n",
				args[0], res.ReportID, f, len(res.File), res.Provenance.Position, checkpoint)
			fmt.Fprintf(summary, "sha256 %s, recorded as report.generated at position %d\n", res.SHA256, res.EventPosition)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "window start: an RFC 3339 time or a date (YYYY-MM-DD, UTC)")
	cmd.Flags().StringVar(&to, "to", "", "window end, excluded: an RFC 3339 time or a date")
	cmd.Flags().StringVar(&org, "org", "", "an organization's id (default: the whole log; required for usage, chargeback and capacity)")
	cmd.Flags().StringVar(&month, "month", "", "chargeback: a local month YYYY-MM instead of --from and --to")
	cmd.Flags().Int64Var(&nodeCap, "node-stream-capacity", api.DefaultNodeStreamCapacity, "capacity: calls one data-plane node is sized to hold open at once")
	cmd.Flags().StringVar(&format, "format", "", "html, pdf, xlsx, csv or json (default: from --out's extension, else json)")
	cmd.Flags().StringVar(&out, "out", "", "the file to write (default: stdout)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "how long to let the report's read models catch up with the log")
	return cmd
}

// writeFileAtomic writes through a temporary file in the same directory, renamed when complete.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".report-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
