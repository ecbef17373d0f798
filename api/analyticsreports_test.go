package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

func withAnalyticsReports(cfg *api.Config) {
	cfg.AnalyticsReports = &analyticsreport.Generator{Queries: cfg.ReadModels.(*readmodels.Queries), Log: cfg.Log.(*eventstore.Store),
		Settings: analyticsreport.Settings{NodeStreamCapacity: 50}}
}

// TestAnalyticsReportsThroughTheReportsRoute: GET /api/v1/reports/usage|chargeback|capacity
// serves an organization's report to those who may read its analytics, with exact figures (the
// windows appended), the month form for chargeback, and the file's hash in the headers.
func TestAnalyticsReportsThroughTheReportsRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAnalyticsReports)
	root := e.superadmin()
	acme := e.createOrg(root, "acme", "alice")
	e.createOrg(root, "globex", "bob")
	e.grant(acme, "carol", domain.RoleAuditor)
	e.grant(acme, "victor", domain.RoleViewer)
	alice, carol := e.token("alice"), e.token("carol")
	e.write(201, "POST", "/api/v1/analytics/price-sheets?org=acme", alice, map[string]string{"effective_from": "2027-03-01T00:00:00Z", "currency": "EUR",
		"per_gb_in": "0.01", "per_gb_out": "0.02", "per_1k_requests": "0.001", "per_streamed_hour": "0.1", "per_tunnel_day": "1"})
	tunnel := uuid.NewString()
	var evs []eventstore.EventData
	for h := time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC); h.Before(time.Date(2027, 3, 14, 0, 0, 0, 0, time.UTC)); h = h.Add(time.Hour) {
		raw, err := json.Marshal(logtest.UsageWindow(acme, tunnel, domain.CallerUser, "alice", h))
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: raw})
	}
	if _, err := e.store.Append(context.Background(), domain.NodeFactsStream(uuid.NewString()), eventstore.AnyVersion, evs...); err != nil {
		t.Fatal(err)
	}
	path := func(kind, org, format, extra string) string {
		return "/api/v1/reports/" + kind + "?" + url.Values{"org": {org}, "format": {format}}.Encode() + extra
	}
	window := "&from=2027-03-13T00:00:00Z&to=2027-03-14T00:00:00Z"

	r := e.must(200, "GET", path("usage", "acme", "json", window), carol, nil)
	sum := sha256.Sum256(r.body)
	if r.header.Get(api.HeaderReportSHA256) != hex.EncodeToString(sum[:]) || r.header.Get(api.HeaderReportID) == "" ||
		!strings.Contains(r.header.Get("Content-Disposition"), "usage-") {
		t.Errorf("headers %v do not name the file served", r.header)
	}
	// 24 windows of 1,000 requests: the summary's exact figure.
	var doc struct {
		Sections []struct {
			Heading string
			Blocks  []struct {
				Items []struct {
					Label string
					Value json.RawMessage
				}
			}
		}
	}
	r.decode(t, &doc)
	requests := ""
	for _, b := range doc.Sections[0].Blocks {
		for _, f := range b.Items {
			if f.Label == "Requests" {
				requests = string(f.Value)
			}
		}
	}
	if doc.Sections[0].Heading != "Summary" || requests != "24000" {
		t.Errorf("usage report: %s requests in %q, want 24000", requests, doc.Sections[0].Heading)
	}
	// Chargeback by month: 24 windows at 0.151 EUR and one active tunnel-day at 1 EUR.
	cb := e.must(200, "GET", path("chargeback", "acme", "csv", "&month=2027-03"), alice, nil)
	if !strings.Contains(string(cb.body), "Total EUR,4.62") || cb.header.Get("Content-Type") != "text/csv; charset=utf-8" {
		t.Errorf("chargeback csv:\n%.3000s", cb.body)
	}
	pdf := e.must(200, "GET", path("capacity", "acme", "pdf", window), root, nil)
	if !strings.HasPrefix(string(pdf.body), "%PDF-") {
		t.Errorf("capacity pdf: %q", pdf.body[:min(len(pdf.body), 8)])
	}
	e.must(403, "GET", path("usage", "acme", "json", window), e.token("victor"), nil).problem(t)
	e.must(403, "GET", path("usage", "globex", "json", window), alice, nil).problem(t)
	e.must(400, "GET", path("usage", "acme", "json", window+"&month=2027-03"), alice, nil).problem(t)
	e.must(422, "GET", path("chargeback", "acme", "json", window+"&month=2027-03"), alice, nil).problem(t)
	e.must(400, "GET", path("chargeback", "acme", "json", "&month=March"), alice, nil).problem(t)
	e.must(422, "GET", path("capacity", "acme", "json", "&from=2027-03-13T00:00:00Z&to=2028-06-01T00:00:00Z"), alice, nil).problem(t)
	e.must(404, "GET", path("sales", "acme", "json", window), alice, nil).problem(t)
	// Each report is in the log, its Report field the kind.
	var page struct{ Items []api.AuditEntry }
	e.must(200, "GET", "/api/v1/audit?org=*&type=report.generated&wait_for=latest", root, nil).decode(t, &page)
	if len(page.Items) != 3 {
		t.Errorf("%d report.generated records, want 3", len(page.Items))
	}
}
