package report

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/record"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// Request is one report to build.
type Request struct {
	// Framework is a framework id of controls.json ("soc2", "hipaa", "iso27001").
	Framework string
	// From and To bound the window: events recorded in [From, To).
	From, To time.Time
	// OrgID scopes the report to an organization; "" is the whole log.
	OrgID string
	// Actor is who asked (named in the report and in report.generated).
	Actor string
	// ReportID, when set (a UUID), is the report's id instead of a new one: a caller that derives
	// it (the scheduler, from a schedule and a run's due time) has a second append of the same
	// report refused by its stream's NoStream expectation.
	ReportID string
}

// MaxWindow is the longest window a report covers.
const MaxWindow = 5 * 366 * 24 * time.Hour

// Validate checks the request's own fields.
func (r Request) Validate() error {
	switch {
	case r.From.IsZero() || r.To.IsZero():
		return fmt.Errorf("%w: from and to are required", ErrRequest)
	case !r.From.Before(r.To):
		return fmt.Errorf("%w: from must be before to", ErrRequest)
	case r.To.Sub(r.From) > MaxWindow:
		return fmt.Errorf("%w: a window of at most %d days", ErrRequest, int(MaxWindow.Hours()/24))
	}
	return nil
}

// Provenance is what a report was computed from: the compliance read model's position, the
// window's span and the signed checkpoint that covers it.
type Provenance = record.Provenance

// Checkpointer returns the newest signed checkpoint (an *eventstore.Store's LatestCheckpoint).
type Checkpointer func(ctx context.Context) (size uint64, note string, err error)

// builder holds a report's snapshot and caches each rule's finding (several controls share one).
type builder struct {
	m     *Mapping
	snap  *readmodels.ComplianceSnapshot
	found map[string]found
}

// Build reads the compliance views once (one snapshot) and lays out the report's document.
func Build(ctx context.Context, q *readmodels.Queries, m *Mapping, cp Checkpointer, req Request, reportID string, now time.Time) (*render.Document, Provenance, error) {
	if err := req.Validate(); err != nil {
		return nil, Provenance{}, err
	}
	fw, err := m.Framework(req.Framework)
	if err != nil {
		return nil, Provenance{}, err
	}
	var doc *render.Document
	var prov Provenance
	err = q.ReadCompliance(ctx, readmodels.ComplianceScope{OrgID: req.OrgID, From: req.From, To: req.To},
		func(ctx context.Context, s *readmodels.ComplianceSnapshot) error {
			if s.Position < 0 {
				return ErrNotReady
			}
			prov.Position = s.Position
			var err error
			if prov.Events, prov.First, prov.Last, err = s.Span(ctx); err != nil {
				return err
			}
			size, note, err := cp(ctx)
			if err != nil {
				return fmt.Errorf("report: checkpoint: %w", err)
			}
			if size < uint64(s.Position)+1 {
				return fmt.Errorf("report: %w: the newest checkpoint (size %d) does not cover position %d", ErrNotReady, size, s.Position)
			}
			prov.CheckpointSize, prov.CheckpointRoot = size, noteRoot(note)
			b := &builder{m: m, snap: s, found: map[string]found{}}
			doc, err = b.document(ctx, fw, req, prov, reportID, now)
			return err
		})
	return doc, prov, err
}

// noteRoot is the root hash line of a C2SP checkpoint note (origin, size, root).
func noteRoot(note string) string {
	lines := strings.SplitN(note, "\n", 4)
	if len(lines) < 3 {
		return ""
	}
	return lines[2]
}

func (b *builder) rule(ctx context.Context, name string) (found, error) {
	if f, ok := b.found[name]; ok {
		return f, nil
	}
	f, err := rules[name](ctx, b.snap, b.m.Policy)
	if err != nil {
		return found{}, fmt.Errorf("report: rule %s: %w", name, err)
	}
	b.found[name] = f
	return f, nil
}

func (b *builder) document(ctx context.Context, fw *Framework, req Request, prov Provenance, reportID string, now time.Time) (*render.Document, error) {
	scope := "the whole log (every organization and the platform)"
	if req.OrgID != "" {
		scope = "organization " + req.OrgID + " (its events; platform events such as signing keys and nodes are in the whole-log report)"
	}
	doc := &render.Document{
		Title:     fw.Title + " — evidence report",
		Subtitle:  "Events recorded from " + req.From.UTC().Format(time.RFC3339) + " to " + req.To.UTC().Format(time.RFC3339) + ", " + scope,
		Generated: now,
		Meta: []render.Fact{
			{Label: "Report", Value: render.Str(fw.ID + " " + reportID)},
			{Label: "Window start", Value: render.At(req.From)},
			{Label: "Window end (excluded)", Value: render.At(req.To)},
			{Label: "Scope", Value: render.Str(scope)},
			{Label: "Log positions", Value: render.Str(fmt.Sprintf("0–%d: the compliance read model had applied the log up to position %d", prov.Position, prov.Position))},
			{Label: "Window's evidence", Value: render.Str(spanText(prov))},
			{Label: "Checkpoint", Value: render.Str(fmt.Sprintf("size %d (covers positions 0–%d), root %s", prov.CheckpointSize, prov.CheckpointSize-1, prov.CheckpointRoot))},
			{Label: "Generated", Value: render.At(now)},
			{Label: "Generated by", Value: render.Str(req.Actor)},
		},
	}
	summary := &render.Table{Caption: "Exceptions by control", Columns: []render.Column{
		{Name: "control", Kind: render.Text}, {Name: "title", Kind: render.Text}, {Name: "exceptions", Kind: render.Integer}, {Name: "rules", Kind: render.Text},
	}}
	var sections []render.Section
	for _, c := range fw.Controls {
		sec, total, err := b.control(ctx, c)
		if err != nil {
			return nil, err
		}
		sections = append(sections, sec)
		ruleNames := strings.Join(c.Exceptions, ", ")
		if ruleNames == "" {
			ruleNames = "none: evidence only"
		}
		summary.Rows = append(summary.Rows, render.Row{Exception: total > 0, Cells: []render.Cell{render.Str(c.ID), render.Str(c.Title), render.Int(total), render.Str(ruleNames)}})
	}
	doc.Sections = append(doc.Sections, render.Section{Heading: "Summary", Blocks: []render.Block{
		render.Paragraph{Text: "Each section below states a control, then its exceptions (what an auditor reads first), the counts of the events that evidence it, and tables of those events. " +
			"Where the log of this version does not carry the data a check needs, the section says \"not recorded by this version\" instead of showing zero. " +
			"Reproduce the figures from an evidence bundle of the same window (tunnelplane export) holding the checkpoint named above."},
		summary,
	}})
	doc.Sections = append(doc.Sections, sections...)
	doc.Sections = append(doc.Sections, b.method())
	return doc, nil
}

func spanText(p Provenance) string {
	if p.Events == 0 {
		return "no indexed events in the window"
	}
	return fmt.Sprintf("%d indexed events, positions %d–%d", p.Events, p.First, p.Last)
}

// control lays out one control's section, exceptions first; total is its exceptions.
func (b *builder) control(ctx context.Context, c Control) (render.Section, int64, error) {
	sec := render.Section{Heading: c.ID + " " + c.Title}
	sec.Blocks = append(sec.Blocks, render.Paragraph{Text: "Control: " + c.Statement},
		render.Paragraph{Text: "Evidence from: " + strings.Join(c.Events, ", ") + "."})
	var total int64
	if len(c.Exceptions) == 0 {
		sec.Blocks = append(sec.Blocks, render.Paragraph{Text: "Exceptions: no exception rule tests this control; its evidence follows."})
	}
	for _, name := range c.Exceptions {
		f, err := b.rule(ctx, name)
		if err != nil {
			return render.Section{}, 0, err
		}
		total += f.total
		r := b.m.Rules[name]
		if f.total == 0 {
			sec.Blocks = append(sec.Blocks, render.Paragraph{Text: "No exceptions: " + r.Title + " (" + name + ")."})
			continue
		}
		t := *f.table
		t.Caption = fmt.Sprintf("Exceptions: %s (%s) — %d", r.Title, name, f.total)
		if int64(len(t.Rows)) < f.total && name != "unapproved_cipher" && name != "deprecated_protocol" {
			t.Caption += fmt.Sprintf(", the newest %d shown", len(t.Rows))
		}
		sec.Blocks = append(sec.Blocks, &t)
	}
	counts, err := b.snap.Counts(ctx)
	if err != nil {
		return render.Section{}, 0, err
	}
	ct := &render.Table{Caption: "Event counts in the window", Columns: []render.Column{
		{Name: "event type", Kind: render.Text}, {Name: "events", Kind: render.Integer}, {Name: "requests", Kind: render.Integer},
	}}
	for _, t := range c.Events {
		n := counts[t]
		ct.Rows = append(ct.Rows, render.Row{Cells: []render.Cell{render.Str(t), render.Int(n.Events), render.Int(n.Weight)}})
	}
	sec.Blocks = append(sec.Blocks, ct)
	for _, e := range c.Evidence {
		blk, err := b.evidence(ctx, e)
		if err != nil {
			return render.Section{}, 0, err
		}
		sec.Blocks = append(sec.Blocks, blk)
	}
	for _, nr := range c.NotRecorded {
		sec.Blocks = append(sec.Blocks, render.Paragraph{Text: "Not recorded by this version: " + nr})
	}
	return sec, total, nil
}

func (b *builder) evidence(ctx context.Context, e Evidence) (render.Block, error) {
	p := b.m.Policy
	switch e.Kind {
	case EvidenceSessions:
		groups, err := b.snap.Sessions(ctx)
		if err != nil {
			return nil, err
		}
		t := &render.Table{Caption: e.Title, Columns: sessionColumns}
		for _, g := range groups[:min(len(groups), p.MaxRows)] {
			t.Rows = append(t.Rows, sessionRow(g, unapproved(p, g) || deprecated(p, g)))
		}
		if len(groups) == 0 {
			return render.Paragraph{Text: e.Title + ": none in the window."}, nil
		}
		return t, nil
	case EvidenceDaily:
		daily, err := b.snap.Daily(ctx, e.Types)
		if err != nil {
			return nil, err
		}
		if len(daily) == 0 {
			return render.Paragraph{Text: e.Title + ": none in the window."}, nil
		}
		return dailyChart(e, daily), nil
	}
	evs, err := b.snap.Events(ctx, e.Types, p.MaxRows)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return render.Paragraph{Text: e.Title + ": none in the window."}, nil
	}
	caption := e.Title
	if len(evs) == p.MaxRows {
		caption += fmt.Sprintf(" (the newest %d)", p.MaxRows)
	}
	return &render.Table{Caption: caption, Columns: eventColumns, Rows: eventRows(evs, false)}, nil
}

// dailyChart is a bar chart of requests per day and type (days without any are left out).
func dailyChart(e Evidence, daily []readmodels.DailyCount) *render.Chart {
	c := &render.Chart{Title: e.Title, Kind: render.Bar, XLabel: "day (UTC)", YLabel: "requests"}
	dayIndex := map[time.Time]int{}
	for _, d := range daily {
		if _, ok := dayIndex[d.Day]; !ok {
			dayIndex[d.Day] = len(c.Categories)
			c.Categories = append(c.Categories, d.Day.UTC().Format(time.DateOnly))
		}
	}
	if len(c.Categories) > 1 {
		c.Kind = render.Line
	}
	for _, t := range e.Types {
		s := render.Series{Name: t, Values: make([]float64, len(c.Categories))}
		for _, d := range daily {
			if d.Type == t {
				s.Values[dayIndex[d.Day]] = float64(d.Weight)
			}
		}
		c.Series = append(c.Series, s)
	}
	return c
}

// method states the policy the rules applied and the rules themselves.
func (b *builder) method() render.Section {
	p := b.m.Policy
	var facts []render.Fact
	for _, k := range sortedKeys(p.MaxLifetimeDays) {
		facts = append(facts, render.Fact{Label: "Longest lifetime, " + k + " (days)", Value: render.Int(int64(p.MaxLifetimeDays[k]))})
	}
	for _, k := range sortedKeys(p.RotationAgeDays) {
		facts = append(facts, render.Fact{Label: "Rotation age, " + k + " (days)", Value: render.Int(int64(p.RotationAgeDays[k]))})
	}
	facts = append(facts,
		render.Fact{Label: "Repeated authentication failures", Value: render.Str(strconv.FormatInt(p.AuthFailures.Threshold, 10) + " or more within " + strconv.Itoa(p.AuthFailures.WindowMinutes) + " minutes")},
		render.Fact{Label: "Approved ciphers", Value: render.Str(strings.Join(p.ApprovedCiphers, ", "))},
		render.Fact{Label: "Approved key exchanges", Value: render.Str(strings.Join(p.ApprovedKex, ", "))},
		render.Fact{Label: "Deprecated protocols", Value: render.Str(strings.Join(p.DeprecatedProtocols, ", "))},
		render.Fact{Label: "Rows per table", Value: render.Int(int64(p.MaxRows))},
	)
	rt := &render.Table{Caption: "Exception rules", Columns: []render.Column{{Name: "rule", Kind: render.Text}, {Name: "title", Kind: render.Text}, {Name: "rule", Kind: render.Text}}}
	for _, name := range sortedRuleNames(b.m.Rules) {
		r := b.m.Rules[name]
		rt.Rows = append(rt.Rows, render.Row{Cells: []render.Cell{render.Str(name), render.Str(r.Title), render.Str(r.Rule)}})
	}
	return render.Section{Heading: "Method and policy", Blocks: []render.Block{
		render.Paragraph{Text: "The control-to-event mapping, the rules and this policy are one file, compliance/report/controls.json, reviewed in docs/compliance.md. " +
			"Figures come from the compliance read model (projection \"compliance\"), fed by the log; times are UTC."},
		render.Facts{Items: facts}, rt,
	}}
}

func sortedRuleNames(m map[string]Rule) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ParseBound reads a window bound: an RFC 3339 time, or a date (YYYY-MM-DD, midnight UTC).
func ParseBound(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%w: want an RFC 3339 time or a date (YYYY-MM-DD)", ErrRequest)
}
