package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/xuri/excelize/v2"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
)

// report usage|chargeback|capacity: from a log holding an organization, a price sheet and a day
// of usage windows, the report command brings the usage read model up itself, writes the file
// with exact figures and records it (the log still verifies); an organization is required.
func TestAnalyticsReportCommands(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	dir := t.TempDir()
	if r := tp(t, "init", "--database-url", u, "--data-dir", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	org := uuid.Must(uuid.NewV7()).String()
	day := time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC)
	appendEvents(t, u, dir, domain.OrgStream(org), eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: mustJSON(t, domain.OrganizationCreated{OrgID: org, Name: "acme", CreatedBy: "root"})})
	appendEvents(t, u, dir, domain.PriceSheetStream(org), eventstore.EventData{Type: domain.TypePriceSheetSet, Payload: mustJSON(t, domain.PriceSheetSet{OrgID: org,
		EffectiveFrom: day.AddDate(0, 0, -12), Currency: "EUR", PerGBIn: "0", PerGBOut: "0.125", Per1kRequests: "0.5", PerStreamedHour: "0", PerTunnelDay: "0"})})
	tunnel := uuid.NewString()
	var evs []eventstore.EventData
	for h := range 24 {
		start := day.Add(time.Duration(h) * time.Hour)
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: mustJSON(t, domain.UsageRecorded{NodeID: "n", OrgID: org, TunnelID: tunnel,
			CallerKind: domain.CallerUser, CallerID: "alice", WindowStart: start, WindowEnd: start.Add(10 * time.Second), Requests: 1000, BytesOut: 1_000_000_000, StreamsMax: 2})})
	}
	appendEvents(t, u, dir, domain.NodeFactsStream(uuid.NewString()), evs...)
	db := []string{"--database-url", u, "--data-dir", dir}
	window := []string{"--org", org, "--from", "2027-03-13", "--to", "2027-03-14"}

	out := filepath.Join(t.TempDir(), "usage.xlsx")
	r := tp(t, append(append([]string{"report", "usage", "--out", out}, window...), db...)...)
	if r.code != 0 {
		t.Fatalf("report usage: %d %s", r.code, r.stderr)
	}
	file, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(file)
	if !strings.Contains(r.stdout, "usage report ") || !strings.Contains(r.stdout, "sha256 "+hex.EncodeToString(sum[:])) {
		t.Errorf("summary:\n%s", r.stdout)
	}
	x, err := excelize.OpenReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	rows, _ := x.GetRows(x.GetSheetList()[1])
	var requests string
	for _, row := range rows {
		if len(row) > 1 && row[0] == "Requests" {
			requests = row[1]
		}
	}
	if requests != "24000" {
		t.Errorf("usage.xlsx: requests %q, want 24000 (%q)", requests, rows)
	}

	// 24,000 requests at 0.5 per 1,000 and 24 GB out at 0.125: 12 + 3.
	cb := tp(t, append([]string{"report", "chargeback", "--org", org, "--month", "2027-03", "--format", "csv"}, db...)...)
	if cb.code != 0 || !strings.Contains(cb.stdout, "Total EUR,15.00") || !strings.Contains(cb.stdout, "half to even") {
		t.Errorf("chargeback csv: %d\n%s\n%s", cb.code, cb.stdout, cb.stderr)
	}
	capJSON := tp(t, append(append([]string{"report", "capacity", "--json", "--format", "json", "--node-stream-capacity", "10"}, window...), db...)...)
	var summary struct {
		Report   string `json:"report"`
		Position int64  `json:"position"`
	}
	if err := json.Unmarshal([]byte(capJSON.stderr[strings.Index(capJSON.stderr, "{"):]), &summary); capJSON.code != 0 || err != nil ||
		summary.Report != "capacity" || summary.Position <= 0 || !strings.Contains(capJSON.stdout, `"Requests in the peak hour"`) {
		t.Errorf("capacity: %d %v %+v\n%s", capJSON.code, err, summary, capJSON.stderr)
	}
	if v := tp(t, append([]string{"verify"}, db...)...); v.code != 0 {
		t.Errorf("verify after three reports: %d %s %s", v.code, v.stdout, v.stderr)
	}
	if bad := tp(t, append([]string{"report", "usage", "--from", "2027-03-13", "--to", "2027-03-14"}, db...)...); bad.code == 0 || !strings.Contains(bad.stderr, "organization id is required") {
		t.Errorf("usage without --org: %d %s", bad.code, bad.stderr)
	}
}

// appendEvents appends to a stream, signed with the data dir's log key, and returns the log's
// size after them.
func appendEvents(t *testing.T, u, dir, stream string, evs ...eventstore.EventData) uint64 {
	t.Helper()
	ctx := context.Background()
	h, err := controlapp.OpenLog(ctx, u, controlapp.Keys{DataDir: dir}, 4, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	res, err := h.Store.Append(ctx, stream, eventstore.AnyVersion, evs...)
	if err != nil {
		t.Fatal(err)
	}
	return res.LastPosition + 1
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
