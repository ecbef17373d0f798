package api_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

func withReports(t *testing.T) func(*api.Config) {
	return func(cfg *api.Config) {
		m, err := report.LoadMapping()
		if err != nil {
			t.Fatal(err)
		}
		st := cfg.Log.(*eventstore.Store)
		cfg.Reports = &report.Generator{Queries: cfg.ReadModels.(*readmodels.Queries), Log: st, Checkpoint: st.LatestCheckpoint, Mapping: m}
	}
}

// TestReportsAreForAuditReaders: an organization's owners, admins and auditors get its reports,
// other roles do not, and only superadmins get the whole log's; each report is recorded with the
// hash of the file served.
func TestReportsAreForAuditReaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withReports(t))
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	e.grant(org, "aud", domain.RoleAuditor)
	e.grant(org, "op", domain.RoleOperator)
	e.grant(org, "admin2", domain.RoleAdmin)
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	path := func(name, org, format string) string {
		return "/api/v1/reports/" + name + "?" + url.Values{"from": {from}, "to": {to}, "org": {org}, "format": {format}}.Encode()
	}
	for _, user := range []string{"alice", "aud", "admin2"} {
		r := e.must(200, "GET", path("soc2", "acme", "json"), e.token(user), nil)
		sum := sha256.Sum256(r.body)
		if r.header.Get(api.HeaderReportSHA256) != hex.EncodeToString(sum[:]) || r.header.Get(api.HeaderReportID) == "" {
			t.Errorf("%s: headers %v do not name the file served", user, r.header)
		}
		var doc struct {
			Schema   string `json:"schema"`
			Sections []struct{ Heading string }
		}
		if err := json.Unmarshal(r.body, &doc); err != nil || doc.Schema != "tunnelplane.report.v1" || len(doc.Sections) < 7 {
			t.Errorf("%s: %v, %+v", user, err, doc)
		}
	}
	r := e.must(200, "GET", path("hipaa", "acme", "pdf"), e.token("aud"), nil)
	if ct := r.header.Get("Content-Type"); ct != "application/pdf" || !strings.HasPrefix(string(r.body), "%PDF-") {
		t.Errorf("pdf: %q, %q", ct, r.body[:min(len(r.body), 8)])
	}
	e.must(403, "GET", path("soc2", "acme", "json"), e.token("op"), nil).problem(t)
	e.must(403, "GET", path("soc2", "*", "json"), e.token("alice"), nil).problem(t)
	e.must(403, "GET", path("soc2", "*", "json"), e.token("aud"), nil).problem(t)
	whole := e.must(200, "GET", path("iso27001", "*", "html"), root, nil)
	if !strings.Contains(string(whole.body), "A.8.24 Use of cryptography") {
		t.Error("the whole log's report lacks a control")
	}
	e.must(404, "GET", path("pci", "acme", "json"), e.token("alice"), nil).problem(t)
	e.must(400, "GET", path("soc2", "acme", "docx"), e.token("alice"), nil).problem(t)
	e.must(422, "GET", "/api/v1/reports/soc2?org=acme&to="+url.QueryEscape(to), e.token("alice"), nil).problem(t)
	e.must(400, "GET", path("soc2", "acme", "json")+"&x=1", e.token("alice"), nil).problem(t)
	// Each report is in the log: who, which, the file's hash.
	recs := e.must(200, "GET", "/api/v1/audit?org=*&type=report.generated", root, nil)
	var page struct{ Items []api.AuditEntry }
	recs.decode(t, &page)
	if len(page.Items) != 5 {
		t.Errorf("%d report.generated records, want 5", len(page.Items))
	}
}
