package report

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// ErrRequest: a report request that cannot be served as asked (window, format).
var ErrRequest = errors.New("invalid report request")

// ErrNotReady: the compliance read model has not applied the log yet, or no checkpoint covers
// what it applied.
var ErrNotReady = errors.New("the compliance read model is not ready")

// Appender appends report.generated (an *eventstore.Store).
type Appender interface {
	Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error)
}

// Generator makes reports: it reads the compliance views, renders, and records each report in
// the log.
type Generator struct {
	Queries    *readmodels.Queries
	Log        Appender
	Checkpoint Checkpointer
	Mapping    *Mapping
	Now        func() time.Time
}

// Result is a generated report: its file and what report.generated recorded.
type Result struct {
	ReportID   string
	File       []byte
	SHA256     string
	Format     render.Format
	Provenance Provenance
	// EventPosition is the position of the report.generated record.
	EventPosition uint64
}

// Prepared is a report rendered and hashed, with the report.generated event that records it,
// not yet appended.
type Prepared struct {
	Result
	Event domain.ReportGenerated
	// At is when it was made (the report says so, and so does the record's metadata).
	At time.Time
}

// Generate builds the report, renders it in format and appends report.generated (with the
// file's SHA-256) before returning the file: a report that was not recorded is not handed out.
func (g *Generator) Generate(ctx context.Context, req Request, format render.Format) (Result, error) {
	p, err := g.Prepare(ctx, req, format)
	if err != nil {
		return Result{}, err
	}
	payload, err := json.Marshal(p.Event)
	if err != nil {
		return Result{}, fmt.Errorf("report: %w", err)
	}
	meta, err := json.Marshal(domain.Metadata{Actor: req.Actor, OrgID: req.OrgID, Command: "GenerateReport",
		CorrelationID: uuid.Must(uuid.NewV7()).String(), OccurredAt: p.At})
	if err != nil {
		return Result{}, fmt.Errorf("report: %w", err)
	}
	ar, err := g.Log.Append(ctx, domain.ReportStream(p.ReportID), eventstore.NoStream,
		eventstore.EventData{Type: domain.TypeReportGenerated, Payload: payload, Metadata: meta})
	if err != nil {
		return Result{}, fmt.Errorf("report: record the report: %w", err)
	}
	res := p.Result
	res.EventPosition = ar.LastPosition
	return res, nil
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
	id := req.ReportID
	if id == "" {
		id = uuid.Must(uuid.NewV7()).String()
	}
	doc, prov, err := Build(ctx, g.Queries, g.Mapping, g.Checkpoint, req, id, at)
	if err != nil {
		return Prepared{}, err
	}
	var buf bytes.Buffer
	if err := render.Write(&buf, format, doc); err != nil {
		return Prepared{}, fmt.Errorf("report: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	res := Result{ReportID: id, File: buf.Bytes(), SHA256: hex.EncodeToString(sum[:]), Format: format, Provenance: prov}
	ev := domain.ReportGenerated{ReportID: id, Report: req.Framework, OrgID: req.OrgID, From: req.From.UTC().Format(time.RFC3339Nano),
		To: req.To.UTC().Format(time.RFC3339Nano), Format: string(format), Position: uint64(prov.Position), CheckpointSize: prov.CheckpointSize,
		SHA256: res.SHA256, Bytes: int64(buf.Len())}
	return Prepared{Result: res, Event: ev, At: at}, nil
}
