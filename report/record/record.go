package record

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// Appender appends report.generated (an *eventstore.Store).
type Appender interface {
	Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error)
}

// Provenance is what a report was computed from: the read model's position and, where the report
// names one, the signed checkpoint that covers it.
type Provenance struct {
	// Position is the last log position the report's read model had applied.
	Position int64
	// Events, First and Last: the window's indexed events and their first and last positions
	// (compliance reports; 0 elsewhere).
	Events, First, Last int64
	// CheckpointSize is the size of the newest signed checkpoint, read after the snapshot (so it
	// covers positions 0..Position); CheckpointRoot its root hash (base64). 0 and "" when the
	// report names no checkpoint.
	CheckpointSize uint64
	CheckpointRoot string
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

// Entry is what report.generated records besides the file.
type Entry struct {
	// ReportID is the report's id; its stream (domain.ReportStream) must not exist yet, so a
	// second report with the same id is refused.
	ReportID string
	// Report names the report: "soc2", "usage", "chargeback", …
	Report   string
	OrgID    string
	From, To time.Time
	Actor    string
	// At is when the report was generated.
	At time.Time
}

// NewID is id when it is set (a caller that derives ids, such as a schedule, so that a second
// run is refused), else a fresh UUIDv7.
func NewID(id string) string {
	if id != "" {
		return id
	}
	return uuid.Must(uuid.NewV7()).String()
}

// Prepared is a report rendered and hashed, with the report.generated event that records it,
// not yet appended (a scheduler stores the file first, then appends the event).
type Prepared struct {
	Result
	Event domain.ReportGenerated
	// Actor is who asked; At is when it was made (the report says so, and so does the record's
	// metadata).
	Actor string
	At    time.Time
}

// Prepare renders doc in format, hashes the file and makes the report.generated event that
// records it; it records nothing.
func Prepare(e Entry, prov Provenance, doc *render.Document, format render.Format) (Prepared, error) {
	var buf bytes.Buffer
	if err := render.Write(&buf, format, doc); err != nil {
		return Prepared{}, fmt.Errorf("report: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	res := Result{ReportID: e.ReportID, File: buf.Bytes(), SHA256: hex.EncodeToString(sum[:]), Format: format, Provenance: prov}
	ev := domain.ReportGenerated{ReportID: e.ReportID, Report: e.Report, OrgID: e.OrgID, From: e.From.UTC().Format(time.RFC3339Nano),
		To: e.To.UTC().Format(time.RFC3339Nano), Format: string(format), Position: uint64(max(prov.Position, 0)), CheckpointSize: prov.CheckpointSize,
		SHA256: res.SHA256, Bytes: int64(buf.Len())}
	return Prepared{Result: res, Event: ev, Actor: e.Actor, At: e.At}, nil
}

// Append appends a prepared report's report.generated to the report's own stream (which must not
// exist yet) and returns the result with the record's position.
func Append(ctx context.Context, log Appender, p Prepared) (Result, error) {
	payload, err := json.Marshal(p.Event)
	if err != nil {
		return Result{}, fmt.Errorf("report: %w", err)
	}
	meta, err := json.Marshal(domain.Metadata{Actor: p.Actor, OrgID: p.Event.OrgID, Command: "GenerateReport",
		CorrelationID: uuid.Must(uuid.NewV7()).String(), OccurredAt: p.At})
	if err != nil {
		return Result{}, fmt.Errorf("report: %w", err)
	}
	ar, err := log.Append(ctx, domain.ReportStream(p.ReportID), eventstore.NoStream,
		eventstore.EventData{Type: domain.TypeReportGenerated, Payload: payload, Metadata: meta})
	if err != nil {
		return Result{}, fmt.Errorf("report: record the report: %w", err)
	}
	res := p.Result
	res.EventPosition = ar.LastPosition
	return res, nil
}

// Publish renders doc in format, hashes the file and appends report.generated to the report's
// own stream (which must not exist) before returning the file: a report that was not recorded is
// not handed out.
func Publish(ctx context.Context, log Appender, e Entry, prov Provenance, doc *render.Document, format render.Format) (Result, error) {
	p, err := Prepare(e, prov, doc, format)
	if err != nil {
		return Result{}, err
	}
	return Append(ctx, log, p)
}
