package report

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// found is what a rule found: its rows (exception rows, at most the policy's MaxRows) and how
// many there are in all.
type found struct {
	table *render.Table
	total int64
}

type ruleFunc func(ctx context.Context, s *readmodels.ComplianceSnapshot, p Policy) (found, error)

// rules implements each rule controls.json describes, by the same name.
var rules = map[string]ruleFunc{
	"access_after_withdrawal": afterWithdrawal,
	"repeated_auth_failures":  authBursts,
	"access_denied":           eventRule(domain.TypeAccessDenied),
	"credential_lifetime":     longLived,
	"credential_rotation_age": overAge,
	"unapproved_cipher":       sessionRule(unapproved),
	"deprecated_protocol":     sessionRule(deprecated),
	"audit_gaps":              eventRule(domain.TypeAuditOverflowed, domain.TypeSIEMDeliverySkipped),
	"ingest_rejected":         eventRule(domain.TypeIngestRejected),
	"node_lost":               eventRule(domain.TypeNodeLost),
}

// indexedTypes are the event types a mapping may name: the domain's and the log's own, less
// those the compliance read model does not index.
func indexedTypes() map[string]bool {
	out := map[string]bool{}
	for _, et := range domain.EventTypes() {
		if projections.ComplianceIndexes(et.Name) {
			out[et.Name] = true
		}
	}
	for _, t := range []string{eventstore.TypeGenesis, eventstore.TypeKeyAdded, eventstore.TypeKeyRotated, eventstore.TypeKeyRevoked} {
		out[t] = true
	}
	return out
}

func str(p *string) render.Cell {
	if p == nil {
		return render.Cell{}
	}
	return render.Str(*p)
}

func at(t *time.Time) render.Cell {
	if t == nil {
		return render.Cell{}
	}
	return render.At(*t)
}

var eventColumns = []render.Column{
	{Name: "recorded", Kind: render.Time}, {Name: "position", Kind: render.Integer}, {Name: "type", Kind: render.Text},
	{Name: "organization", Kind: render.Text}, {Name: "actor", Kind: render.Text}, {Name: "subject", Kind: render.Text},
	{Name: "detail", Kind: render.Text}, {Name: "requests", Kind: render.Integer},
}

func eventRows(evs []readmodels.ComplianceEvent, exception bool) []render.Row {
	rows := make([]render.Row, len(evs))
	for i, e := range evs {
		rows[i] = render.Row{Exception: exception, Cells: []render.Cell{render.At(e.RecordedAt), render.Int(e.Position), render.Str(e.Type),
			str(e.OrgID), str(e.Actor), render.Str(e.Subject), str(e.Detail), render.Int(e.Weight)}}
	}
	return rows
}

// eventRule: every event of the types in the window is an exception.
func eventRule(types ...string) ruleFunc {
	return func(ctx context.Context, s *readmodels.ComplianceSnapshot, p Policy) (found, error) {
		counts, err := s.Counts(ctx)
		if err != nil {
			return found{}, err
		}
		var total int64
		for _, t := range types {
			total += counts[t].Events
		}
		evs, err := s.Events(ctx, types, p.MaxRows)
		if err != nil {
			return found{}, err
		}
		return found{table: &render.Table{Columns: eventColumns, Rows: eventRows(evs, true)}, total: total}, nil
	}
}

func afterWithdrawal(ctx context.Context, s *readmodels.ComplianceSnapshot, p Policy) (found, error) {
	exs, total, err := s.Exceptions(ctx, projections.RuleAccessAfterWithdrawal, p.MaxRows)
	if err != nil {
		return found{}, err
	}
	t := &render.Table{Columns: []render.Column{
		{Name: "recorded", Kind: render.Time}, {Name: "position", Kind: render.Integer}, {Name: "organization", Kind: render.Text},
		{Name: "user", Kind: render.Text}, {Name: "what happened", Kind: render.Text}, {Name: "requests", Kind: render.Integer},
		{Name: "withdrawn", Kind: render.Time}, {Name: "withdrawn at position", Kind: render.Integer},
	}}
	for _, e := range exs {
		withdrawnAt := render.Cell{}
		if e.SincePosition != nil {
			withdrawnAt = render.Int(*e.SincePosition)
		}
		t.Rows = append(t.Rows, render.Row{Exception: true, Cells: []render.Cell{render.At(e.RecordedAt), render.Int(e.Position), str(e.OrgID),
			render.Str(e.Subject), render.Str(e.Detail), render.Int(e.Weight), at(e.Since), withdrawnAt}})
	}
	return found{table: t, total: total}, nil
}

func authBursts(ctx context.Context, s *readmodels.ComplianceSnapshot, p Policy) (found, error) {
	window := time.Duration(p.AuthFailures.WindowMinutes) * time.Minute
	// One more than shown: the total is exact up to the bound, and said to be at least it beyond.
	bursts, err := s.AuthFailureBursts(ctx, p.AuthFailures.Threshold, window, p.MaxRows+1)
	if err != nil {
		return found{}, err
	}
	total := int64(len(bursts))
	bursts = bursts[:min(len(bursts), p.MaxRows)]
	t := &render.Table{Columns: []render.Column{
		{Name: "subject", Kind: render.Text}, {Name: "window start", Kind: render.Time}, {Name: "failures", Kind: render.Integer},
		{Name: "reasons", Kind: render.Text}, {Name: "last position", Kind: render.Integer},
	}}
	for _, b := range bursts {
		t.Rows = append(t.Rows, render.Row{Exception: true, Cells: []render.Cell{render.Str(b.Subject), render.At(b.WindowStart),
			render.Int(b.Failures), render.Str(b.Reasons), render.Int(b.Last)}})
	}
	return found{table: t, total: total}, nil
}

var credentialColumns = []render.Column{
	{Name: "kind", Kind: render.Text}, {Name: "id", Kind: render.Text}, {Name: "organization", Kind: render.Text},
	{Name: "issued by", Kind: render.Text}, {Name: "issued", Kind: render.Time}, {Name: "expires", Kind: render.Time},
	{Name: "days", Kind: render.Integer}, {Name: "position", Kind: render.Integer},
}

func credentialRow(c readmodels.Credential, days int64) render.Row {
	return render.Row{Exception: true, Cells: []render.Cell{render.Str(c.Kind), render.Str(c.ID), str(c.OrgID), str(c.IssuedBy),
		render.At(c.IssuedAt), at(c.ExpiresAt), render.Int(days), render.Int(c.Position)}}
}

// longLived: tokens and keys issued for longer than the policy allows (days: their lifetime).
func longLived(ctx context.Context, s *readmodels.ComplianceSnapshot, p Policy) (found, error) {
	t := &render.Table{Columns: credentialColumns}
	for _, kind := range sortedKeys(p.MaxLifetimeDays) {
		cs, err := s.LongLivedCredentials(ctx, kind, days(p.MaxLifetimeDays[kind]), p.MaxRows)
		if err != nil {
			return found{}, err
		}
		for _, c := range cs {
			t.Rows = append(t.Rows, credentialRow(c, wholeDays(c.ExpiresAt.Sub(c.IssuedAt))))
		}
	}
	return found{table: t, total: int64(len(t.Rows))}, nil
}

// overAge: credentials and keys valid at the window's end and older than their rotation age
// (days: their age then).
func overAge(ctx context.Context, s *readmodels.ComplianceSnapshot, p Policy) (found, error) {
	t := &render.Table{Columns: credentialColumns}
	for _, kind := range sortedKeys(p.RotationAgeDays) {
		cs, err := s.OverAgeCredentials(ctx, kind, days(p.RotationAgeDays[kind]), p.MaxRows)
		if err != nil {
			return found{}, err
		}
		for _, c := range cs {
			t.Rows = append(t.Rows, credentialRow(c, wholeDays(s.To().Sub(c.IssuedAt))))
		}
	}
	return found{table: t, total: int64(len(t.Rows))}, nil
}

var sessionColumns = []render.Column{
	{Name: "node", Kind: render.Text}, {Name: "protocol", Kind: render.Text}, {Name: "cipher", Kind: render.Text},
	{Name: "key exchange", Kind: render.Text}, {Name: "sessions", Kind: render.Integer}, {Name: "last (hour)", Kind: render.Time},
}

func sessionRow(a readmodels.SessionAlgorithms, exception bool) render.Row {
	return render.Row{Exception: exception, Cells: []render.Cell{render.Str(a.NodeID), render.Str(a.Protocol), render.Str(a.Cipher),
		render.Str(a.Kex), render.Int(a.Sessions), render.At(a.Last)}}
}

func unapproved(p Policy, a readmodels.SessionAlgorithms) bool {
	return !slices.Contains(p.ApprovedCiphers, a.Cipher) || !slices.Contains(p.ApprovedKex, a.Kex)
}

func deprecated(p Policy, a readmodels.SessionAlgorithms) bool {
	return slices.Contains(p.DeprecatedProtocols, a.Protocol)
}

// sessionRule: session groups (node, protocol, cipher, key exchange) the test picks; the total
// is their sessions.
func sessionRule(test func(Policy, readmodels.SessionAlgorithms) bool) ruleFunc {
	return func(ctx context.Context, s *readmodels.ComplianceSnapshot, p Policy) (found, error) {
		groups, err := s.Sessions(ctx)
		if err != nil {
			return found{}, err
		}
		t := &render.Table{Columns: sessionColumns}
		var total int64
		for _, g := range groups {
			if test(p, g) {
				total += g.Sessions
				if len(t.Rows) < p.MaxRows {
					t.Rows = append(t.Rows, sessionRow(g, true))
				}
			}
		}
		return found{table: t, total: total}, nil
	}
}

// wholeDays rounds to days: an expiry computed a moment before the record's time is still 200 days.
func wholeDays(d time.Duration) int64 { return int64(math.Round(d.Hours() / 24)) }

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
