package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/record"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// ErrRequest: a report request that cannot be served as asked (window, format).
var ErrRequest = errors.New("invalid report request")

// ErrNotReady: the compliance read model has not applied the log yet, or no checkpoint covers
// what it applied.
var ErrNotReady = errors.New("the compliance read model is not ready")

// Appender appends report.generated (an *eventstore.Store).
type Appender = record.Appender

// Generator makes reports: it reads the compliance views, renders, and records each report in
// the log.
type Generator struct {
	Queries    *readmodels.Queries
	Log        Appender
	Checkpoint Checkpointer
	Mapping    *Mapping
	Now        func() time.Time
	// Personal opens sealed personal data in the report's text; nil leaves it sealed.
	Personal TextOpener
}

// Result is a generated report: its file and what report.generated recorded.
type Result = record.Result

// Prepared is a report rendered and hashed, with the report.generated event that records it,
// not yet appended.
type Prepared = record.Prepared

// Generate builds the report, renders it in format and appends report.generated (with the
// file's SHA-256) before returning the file: a report that was not recorded is not handed out.
// A request with a ReportID that was used before is refused by the log (its stream exists).
func (g *Generator) Generate(ctx context.Context, req Request, format render.Format) (Result, error) {
	p, err := g.Prepare(ctx, req, format)
	if err != nil {
		return Result{}, err
	}
	return record.Append(ctx, g.Log, p)
}

// Prepare builds and renders the report and the report.generated event that would record it,
// and records nothing (the scheduler stores the file before it appends the event).
func (g *Generator) Prepare(ctx context.Context, req Request, format render.Format) (Prepared, error) {
	if !slices.Contains(render.Formats(), format) {
		return Prepared{}, fmt.Errorf("%w: format %q", ErrRequest, truncate(string(format), 16))
	}
	if req.ReportID != "" && !domain.ValidID(req.ReportID) {
		return Prepared{}, fmt.Errorf("%w: report id must be a UUID", ErrRequest)
	}
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	at := now().UTC().Truncate(time.Second)
	id := record.NewID(req.ReportID)
	doc, prov, err := Build(ctx, g.Queries, g.Mapping, g.Checkpoint, req, id, at)
	if err != nil {
		return Prepared{}, err
	}
	if err := openDocument(ctx, doc, g.Personal); err != nil {
		return Prepared{}, err
	}
	return record.Prepare(record.Entry{ReportID: id, Report: req.Framework, OrgID: req.OrgID, From: req.From, To: req.To,
		Actor: req.Actor, At: at}, prov, doc, format)
}
