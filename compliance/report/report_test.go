package report_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/servicetest"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
	"github.com/tunnelplane/tunnelplane/report/render/rendertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

type harness struct {
	url    string
	store  *eventstore.Store
	runner *projections.Runner
	svc    *commands.Service
	gen    *report.Generator
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	e := servicetest.Start(t, nil)
	u, pool, st, runner, svc := e.URL, e.Pool, e.Store, e.Runner, e.Service
	m, err := report.LoadMapping()
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := func(ctx context.Context) (uint64, string, error) { return st.LatestCheckpoint(ctx) }
	return &harness{url: u, store: st, runner: runner, svc: svc,
		gen: &report.Generator{Queries: readmodels.New(pool), Log: st, Checkpoint: checkpoint, Mapping: m}}
}

func as(user string) context.Context {
	return commands.WithActor(context.Background(), commands.Actor{ID: user, ClientIP: "203.0.113.7", UserAgent: "test", RequestID: "req-1", CorrelationID: "corr-1"})
}

// caughtUp waits until the compliance read model holds everything the log does.
func (h *harness) caughtUp(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	head, err := h.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.runner.WaitFor(ctx, head-1, projections.Compliance, projections.RoleAssignments); err != nil {
		t.Fatal(err)
	}
}

// script is the history the test reports on: bob acts as an operator, loses the role and tries
// again (denied); mallory fails to log in six times; alice issues a token for longer than the
// policy allows and an access key that will be past its rotation age at the window's end.
func (h *harness) script(t *testing.T) (org string) {
	t.Helper()
	ctx := context.Background()
	sys := commands.WithActor(ctx, commands.Actor{ID: "root"})
	if _, err := h.svc.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	res, err := h.svc.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "acme", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	org = res.ID
	alice := as("alice")
	if _, err := h.svc.Handlers.AssignRole.Handle(alice, commands.AssignRole{OrgID: org, UserID: "bob", Role: domain.RoleOperator}); err != nil {
		t.Fatal(err)
	}
	tun, err := h.svc.Handlers.CreateTunnel.Handle(as("bob"), commands.CreateTunnel{OrgID: org, Name: "billing", Upstream: "http://127.0.0.1:9"})
	if err != nil {
		t.Fatalf("bob, an operator, creates a tunnel: %v", err)
	}
	if _, err := h.svc.Handlers.UnassignRole.Handle(alice, commands.UnassignRole{OrgID: org, UserID: "bob", Role: domain.RoleOperator}); err != nil {
		t.Fatal(err)
	}
	// The authorizer decides on the RBAC view; until it has applied the withdrawal an allow is
	// possible (the report would show it as "succeeded"). Here bob tries once it has.
	h.caughtUp(t)
	_, err = h.svc.Handlers.CreateTunnel.Handle(as("bob"), commands.CreateTunnel{OrgID: org, Name: "after-withdrawal", Upstream: "http://127.0.0.1:9"})
	if !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("bob after withdrawal: %v, want forbidden", err)
	}
	for range 6 {
		h.svc.Auditor.AuthFailed("bad_signature", "mallory", "198.51.100.9", "curl/8")
	}
	h.svc.Auditor.AuthFailed("expired", "carol", "198.51.100.10", "curl/8") // one failure: no exception
	if _, err := h.svc.Handlers.IssueAgentToken.Handle(alice, commands.IssueAgentToken{OrgID: org, TunnelID: tun.ID, TTL: 200 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.IssueAccessKey.Handle(alice, commands.IssueAccessKey{OrgID: org, TunnelID: tun.ID, TTL: 300 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Auditor.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	h.caughtUp(t)
	return org
}

// jsonReport is the part of render's JSON layout the test reads.
type jsonReport struct {
	Meta []struct {
		Label string
		Value any
	}
	Sections []struct {
		Heading string
		Blocks  []struct {
			Type    string
			Text    string
			Caption string
			Rows    []struct {
				Exception bool
				Cells     []any
			}
		}
	}
}

// section returns the text of a section's blocks: paragraphs, captions, and exception rows
// (marked "!").
func (r jsonReport) section(t *testing.T, prefix string) string {
	t.Helper()
	for _, s := range r.Sections {
		if !strings.HasPrefix(s.Heading, prefix+" ") {
			continue
		}
		var b strings.Builder
		for _, blk := range s.Blocks {
			b.WriteString(blk.Text + "\n" + blk.Caption + "\n")
			for _, row := range blk.Rows {
				if row.Exception {
					b.WriteString("! ")
				}
				for _, c := range row.Cells {
					b.WriteString(strings.TrimSpace(strings.ReplaceAll(jsonText(c), "\n", " ")) + " | ")
				}
				b.WriteString("\n")
			}
		}
		return b.String()
	}
	t.Fatalf("no section %q", prefix)
	return ""
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

func mustContain(t *testing.T, where, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", where, w, text)
		}
	}
}

// TestScriptedHistoryShowsItsExceptions is the end-to-end test: real commands, the real auditor
// and authorizer, the compliance projection on PostgreSQL, and the reports in JSON and PDF.
func TestScriptedHistoryShowsItsExceptions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.script(t)
	ctx := context.Background()
	now := time.Now().UTC()
	// The window ends 100 days ahead: the access key (rotation age 90 days) is over age by then.
	req := report.Request{Framework: "soc2", From: now.Add(-time.Hour), To: now.Add(100 * 24 * time.Hour), Actor: "auditor-1"}
	res, err := h.gen.Generate(ctx, req, render.JSON)
	if err != nil {
		t.Fatal(err)
	}
	var doc jsonReport
	if err := json.Unmarshal(res.File, &doc); err != nil {
		t.Fatal(err)
	}
	cc62 := doc.section(t, "CC6.2")
	mustContain(t, "CC6.2", cc62, "Exceptions: Access after a role was withdrawn (access_after_withdrawal) — 1",
		"! ", "bob | denied: create on tunnels ×1 (last role operator withdrawn)", "Not recorded by this version:")
	if strings.Contains(cc62, "succeeded") {
		t.Errorf("bob's tunnel, created while he was an operator, is flagged:\n%s", cc62)
	}
	mustContain(t, "CC6.3", doc.section(t, "CC6.3"), "Exceptions: Denied requests (access_denied) — 1", "create on tunnels")
	cc61 := doc.section(t, "CC6.1")
	mustContain(t, "CC6.1", cc61, "(credential_lifetime) — 1", "agent_token", "| 200 |", "(credential_rotation_age)", "access_key")
	cc72 := doc.section(t, "CC7.2")
	mustContain(t, "CC7.2", cc72, "(repeated_auth_failures) — 1", "! mallory |", "| 6 | bad_signature", "No exceptions: Nodes lost (node_lost).")
	if strings.Contains(cc72, "carol") && strings.Contains(cc72, "! carol") {
		t.Errorf("a single failure is reported as repeated:\n%s", cc72)
	}
	mustContain(t, "CC6.7", doc.section(t, "CC6.7"), "No exceptions: Agent sessions with a non-approved cipher")
	var metaText strings.Builder
	for _, m := range doc.Meta {
		metaText.WriteString(m.Label + ": " + jsonText(m.Value) + "\n")
	}
	mustContain(t, "meta", metaText.String(), "Log positions: 0–", "Checkpoint: size ", "Generated by: auditor-1")

	// The log remembers the report, with the file's hash.
	recs, err := h.store.ReadStream(ctx, domain.ReportStream(res.ReportID), 1, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("report.generated: %v, %d records", err, len(recs))
	}
	var ev domain.ReportGenerated
	if err := json.Unmarshal(recs[0].Payload, &ev); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(res.File)
	if ev.SHA256 != hex.EncodeToString(sum[:]) || ev.Report != "soc2" || ev.Format != "json" || ev.Position != uint64(res.Provenance.Position) {
		t.Errorf("report.generated %+v does not match the file", ev)
	}

	// HIPAA as PDF: every control's heading and the exceptions are in the text pdftotext finds.
	pdf, err := h.gen.Generate(ctx, report.Request{Framework: "hipaa", From: req.From, To: req.To, Actor: "auditor-1"}, render.PDF)
	if err != nil {
		t.Fatal(err)
	}
	text := rendertest.PDFToText(t, pdf.File)
	m, _ := report.LoadMapping()
	fw, _ := m.Framework("hipaa")
	for _, c := range fw.Controls {
		mustContain(t, "pdf", text, c.ID+" "+c.Title)
	}
	mustContain(t, "pdf", text, "access_after_withdrawal", "repeated_auth_failures", "denied:", "mallory", "Not recorded by this version", "Log positions")

	// Scoped to the organization: bob's exception is there, the platform's authentication
	// failures (no organization) are not.
	scoped, err := h.gen.Generate(ctx, report.Request{Framework: "iso27001", OrgID: org, From: req.From, To: req.To, Actor: "auditor-1"}, render.JSON)
	if err != nil {
		t.Fatal(err)
	}
	var sdoc jsonReport
	if err := json.Unmarshal(scoped.File, &sdoc); err != nil {
		t.Fatal(err)
	}
	mustContain(t, "A.5.18", sdoc.section(t, "A.5.18"), "bob | denied: create on tunnels")
	if a816 := sdoc.section(t, "A.8.16"); strings.Contains(a816, "mallory") {
		t.Errorf("an organization's report shows the platform's login failures:\n%s", a816)
	}
}

func TestRequestsRefused(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for name, r := range map[string]report.Request{
		"no window":   {Framework: "soc2"},
		"backwards":   {Framework: "soc2", From: now, To: now.Add(-time.Hour)},
		"six years":   {Framework: "soc2", From: now.Add(-6 * 366 * 24 * time.Hour), To: now},
		"empty equal": {Framework: "soc2", From: now, To: now},
	} {
		if err := r.Validate(); !errors.Is(err, report.ErrRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	m, err := report.LoadMapping()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Framework("pci"); !errors.Is(err, report.ErrUnknownFramework) {
		t.Errorf("unknown framework: %v", err)
	}
}

// TestHourlyRollupCountsLikeTheEvents: counts read from the hourly rollup (whole hours) and the
// events (partial hours) equal the events counted one by one, for windows on and off the hour.
func TestHourlyRollupCountsLikeTheEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.script(t)
	ctx := context.Background()
	now := time.Now().UTC()
	var types []string
	for _, et := range domain.EventTypes() {
		types = append(types, et.Name)
	}
	types = append(types, eventstore.TypeGenesis, eventstore.TypeKeyAdded)
	for _, w := range []struct{ from, to time.Time }{
		{now.Add(-time.Hour), now.Add(time.Hour)},
		{now.Truncate(time.Hour), now.Truncate(time.Hour).Add(time.Hour)},
		{now.Add(-time.Minute), now.Add(time.Minute)},
		{now.Add(-2 * time.Hour).Truncate(time.Hour), now.Add(3 * time.Hour)},
		{now.Add(time.Minute), now.Add(2 * time.Hour)}, // after everything: nothing
	} {
		err := h.gen.Queries.ReadCompliance(ctx, readmodels.ComplianceScope{From: w.from, To: w.to}, func(ctx context.Context, s *readmodels.ComplianceSnapshot) error {
			counts, err := s.Counts(ctx)
			if err != nil {
				return err
			}
			evs, err := s.Events(ctx, types, 10_000)
			if err != nil {
				return err
			}
			byType := map[string]int64{}
			for _, e := range evs {
				byType[e.Type]++
			}
			for _, typ := range types {
				if counts[typ].Events != byType[typ] {
					t.Errorf("window %s..%s: %s counted %d, listed %d", w.from.Format(time.TimeOnly), w.to.Format(time.TimeOnly), typ, counts[typ].Events, byType[typ])
				}
			}
			n, _, _, err := s.Span(ctx)
			if err == nil && n != int64(len(evs)) {
				t.Errorf("window %s..%s: span %d, listed %d", w.from.Format(time.TimeOnly), w.to.Format(time.TimeOnly), n, len(evs))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
