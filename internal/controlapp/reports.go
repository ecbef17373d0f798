package controlapp

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/record"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// NewReportGenerator makes compliance reports from the log's compliance read model.
func NewReportGenerator(log *Log) (*report.Generator, error) {
	m, err := report.LoadMapping()
	if err != nil {
		return nil, err
	}
	g := &report.Generator{Queries: readmodels.New(log.Pool), Log: log.Store, Checkpoint: log.Store.LatestCheckpoint, Mapping: m}
	if log.Personal != nil {
		g.Personal = log.Personal
	}
	return g, nil
}

// NewAnalyticsReportGenerator makes usage, chargeback and capacity reports from the log's usage
// read model; nodeStreamCapacity is the streams one node carries (0: the API's default).
func NewAnalyticsReportGenerator(log *Log, nodeStreamCapacity int64) *analyticsreport.Generator {
	if nodeStreamCapacity == 0 {
		nodeStreamCapacity = api.DefaultNodeStreamCapacity
	}
	return &analyticsreport.Generator{Queries: readmodels.New(log.Pool), Log: log.Store, Settings: analyticsreport.Settings{NodeStreamCapacity: nodeStreamCapacity}}
}

// GenerateAnalyticsReport is `tunnelplane report usage|chargeback|capacity`: it brings the usage
// and nodes read models up to the log's head (as GenerateReport does for compliance), then
// generates the report, which appends report.generated.
func GenerateAnalyticsReport(ctx context.Context, log *Log, req analyticsreport.Request, format render.Format, nodeStreamCapacity int64, maxWait time.Duration, logger *slog.Logger) (record.Result, error) {
	if err := req.Validate(); err != nil {
		return record.Result{}, err
	}
	if err := catchUp(ctx, log, maxWait, logger, projections.Usage, projections.Nodes); err != nil {
		return record.Result{}, err
	}
	return NewAnalyticsReportGenerator(log, nodeStreamCapacity).Generate(ctx, req, format)
}

// catchUp runs the named projections here until they reach the log's head (a control plane
// running at the same time applies the same positions at most once: the runner locks its state
// row).
func catchUp(ctx context.Context, log *Log, maxWait time.Duration, logger *slog.Logger, names ...string) error {
	var ps []projections.Projection
	for _, n := range names {
		ps = append(ps, projections.ByName(n))
	}
	runner, err := projections.New(projections.Config{Store: log.Store, Projections: ps, Logger: logger})
	if err != nil {
		return err
	}
	if err := runner.Start(ctx); err != nil {
		return err
	}
	defer runner.Stop()
	head, err := log.Store.Head(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	if err := runner.WaitFor(wctx, head-1, names...); err != nil {
		return fmt.Errorf("report: the read models %s did not reach position %d: %w", strings.Join(names, ", "), head-1, err)
	}
	return nil
}

// GenerateReport is `tunnelplane report`: it brings the compliance read model up to the log's
// head (running that one projection here; a control plane running at the same time applies the
// same positions at most once, the runner locks its state row), then generates the report,
// which appends report.generated.
func GenerateReport(ctx context.Context, log *Log, req report.Request, format render.Format, maxWait time.Duration, logger *slog.Logger) (report.Result, error) {
	gen, err := NewReportGenerator(log)
	if err != nil {
		return report.Result{}, err
	}
	if err := req.Validate(); err != nil {
		return report.Result{}, err
	}
	if _, err := gen.Mapping.Framework(req.Framework); err != nil {
		return report.Result{}, err
	}
	if err := catchUp(ctx, log, maxWait, logger, projections.Compliance); err != nil {
		return report.Result{}, err
	}
	return gen.Generate(ctx, req, format)
}
