package controlapp

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
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
	runner, err := projections.New(projections.Config{Store: log.Store, Projections: []projections.Projection{projections.ByName(projections.Compliance)}, Logger: logger})
	if err != nil {
		return report.Result{}, err
	}
	if err := runner.Start(ctx); err != nil {
		return report.Result{}, err
	}
	defer runner.Stop()
	head, err := log.Store.Head(ctx)
	if err != nil {
		return report.Result{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	if err := runner.WaitFor(wctx, head-1, projections.Compliance); err != nil {
		return report.Result{}, fmt.Errorf("report: the compliance read model did not reach position %d: %w", head-1, err)
	}
	return gen.Generate(ctx, req, format)
}
