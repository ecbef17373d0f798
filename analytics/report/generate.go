package report

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/record"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// Generator makes analytics reports: it reads the usage read model, renders, and records each
// report in the log (report.generated, its Report field the kind).
type Generator struct {
	Queries  *readmodels.Queries
	Log      record.Appender
	Settings Settings
	Now      func() time.Time
}

// Generate builds the report, renders it in format and appends report.generated (with the
// file's SHA-256 and the window the report covered) before returning the file. A request with a
// ReportID that was used before is refused by the log (its stream exists).
func (g *Generator) Generate(ctx context.Context, req Request, format render.Format) (record.Result, error) {
	p, err := g.Prepare(ctx, req, format)
	if err != nil {
		return record.Result{}, err
	}
	return record.Append(ctx, g.Log, p)
}

// Prepare builds and renders the report and the report.generated event that would record it,
// and records nothing (a scheduler stores the file before it appends the event).
func (g *Generator) Prepare(ctx context.Context, req Request, format render.Format) (record.Prepared, error) {
	if !slices.Contains(render.Formats(), format) {
		return record.Prepared{}, fmt.Errorf("%w: format %q", ErrRequest, truncate(string(format), 16))
	}
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	at := now().UTC().Truncate(time.Second)
	id := record.NewID(req.ReportID)
	b, err := Build(ctx, g.Queries, g.Settings, req, id, at)
	if err != nil {
		return record.Prepared{}, err
	}
	return record.Prepare(record.Entry{ReportID: id, Report: req.Kind, OrgID: req.OrgID, From: b.From, To: b.To, Actor: req.Actor, At: at},
		b.Provenance, b.Doc, format)
}
