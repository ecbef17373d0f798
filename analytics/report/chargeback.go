package report

import (
	"context"
	"fmt"
	"math/big"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/chargeback"
	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// chargeback is the chargeback report: the window's (or month's) statement with its lines, the
// price sheets in force and the rounding rule.
func (b *builder) chargeback(ctx context.Context) (Built, error) {
	var from, to time.Time
	var err error
	window := "whole local days"
	if b.req.Month != "" {
		from, to, err = chargeback.MonthRange(b.req.Month, b.loc)
		window = "the month " + b.req.Month
	} else {
		from, to, err = rollup.Widen(b.req.From, b.req.To, rollup.Day, b.loc)
	}
	if err != nil {
		return Built{}, fmt.Errorf("%w: %w", ErrRequest, err)
	}
	st, sheets, err := Statement(ctx, b.q, b.req.OrgID, b.tz, b.loc, from, to)
	if err != nil {
		return Built{}, err
	}
	doc := b.document("Chargeback report", window, from, to)
	totals := render.Facts{}
	for _, t := range st.Totals {
		totals.Items = append(totals.Items, render.Fact{Label: "Total " + t.Currency, Value: decimal(t.Amount)})
	}
	summary := render.Section{Heading: "Summary", Blocks: []render.Block{
		render.Paragraph{Text: fmt.Sprintf("%d priced lines: one per tunnel and caller for traffic, one per tunnel for active tunnel-days. "+
			"Amounts are exact decimals in each line's currency.", len(st.Lines))},
	}}
	if len(totals.Items) == 0 {
		summary.Blocks = append(summary.Blocks, render.Paragraph{Text: "Nothing was priced in the window: no usage, or no price sheet in force."})
	} else {
		summary.Blocks = append(summary.Blocks, totals)
	}
	if c := amountChart(st); c != nil {
		summary.Blocks = append(summary.Blocks, c)
	}
	summary.Blocks = append(summary.Blocks, render.Paragraph{Text: "Rounding: " + chargeback.Rounding})
	doc.Sections = []render.Section{summary, sheetSection(st, sheets), linesSection(st), b.method()}
	return Built{Doc: doc, From: from, To: to}, nil
}

// sheetSection names the price sheets in force: when each applied, who set it, at which log
// position, and its prices.
func sheetSection(st chargeback.Statement, sheets []readmodels.PriceSheet) render.Section {
	sec := render.Section{Heading: "Price sheets in force"}
	if len(st.Sheets) == 0 {
		sec.Blocks = append(sec.Blocks, render.Paragraph{Text: "No price sheet was in force in the window: usage is listed at 0."})
		return sec
	}
	t := &render.Table{Caption: "Price sheets (prices per GB = 10^9 bytes, per 1,000 requests, per streamed hour, per active tunnel-day)", Columns: []render.Column{
		{Name: "in force from", Kind: render.Time}, {Name: "until", Kind: render.Time}, {Name: "effective from", Kind: render.Time},
		{Name: "set by", Kind: render.Text}, {Name: "log position", Kind: render.Integer}, {Name: "currency", Kind: render.Text},
		{Name: "per GB in", Kind: render.Decimal}, {Name: "per GB out", Kind: render.Decimal}, {Name: "per 1k requests", Kind: render.Decimal},
		{Name: "per streamed hour", Kind: render.Decimal}, {Name: "per tunnel-day", Kind: render.Decimal},
	}}
	for _, s := range st.Sheets {
		// The sheet in force over the span is the last one effective at its start.
		var src readmodels.PriceSheet
		for _, rs := range sheets {
			if !rs.EffectiveFrom.After(s.From) {
				src = rs
			}
		}
		t.Rows = append(t.Rows, render.Row{Cells: []render.Cell{render.At(s.From), render.At(s.To), render.At(src.EffectiveFrom),
			render.Str(src.SetBy), render.Int(src.Position), render.Str(s.Currency), decimal(s.PerGBIn), decimal(s.PerGBOut),
			decimal(s.Per1kRequests), decimal(s.PerStreamedHour), decimal(s.PerTunnelDay)}})
	}
	sec.Blocks = append(sec.Blocks, t)
	return sec
}

// linesSection lists the statement's lines with their usage summed over their periods.
func linesSection(st chargeback.Statement) render.Section {
	t := &render.Table{Caption: "Lines", Columns: []render.Column{
		{Name: "tunnel", Kind: render.Text}, {Name: "caller kind", Kind: render.Text}, {Name: "caller", Kind: render.Text},
		{Name: "item", Kind: render.Text}, {Name: "currency", Kind: render.Text}, {Name: "periods", Kind: render.Integer},
		{Name: "requests", Kind: render.Decimal}, {Name: "bytes in", Kind: render.Decimal}, {Name: "bytes out", Kind: render.Decimal},
		{Name: "streamed ms", Kind: render.Decimal}, {Name: "tunnel-days", Kind: render.Integer}, {Name: "amount", Kind: render.Decimal},
	}}
	for _, l := range st.Lines {
		var req, in, out, streamed big.Int
		days := 0
		for _, p := range l.Periods {
			add(&req, p.Requests)
			add(&in, p.BytesIn)
			add(&out, p.BytesOut)
			add(&streamed, p.StreamedMS)
			days += p.TunnelDays
		}
		currency := l.Currency
		if currency == "" {
			currency = "(unpriced)"
		}
		t.Rows = append(t.Rows, render.Row{Cells: []render.Cell{render.Str(l.TunnelID), render.Str(l.CallerKind), render.Str(l.CallerID),
			render.Str(l.Item), render.Str(currency), render.Int(int64(len(l.Periods))), render.Dec(req.String(), 0), render.Dec(in.String(), 0),
			render.Dec(out.String(), 0), render.Dec(streamed.String(), 0), render.Int(int64(days)), decimal(l.Amount)}})
	}
	sec := render.Section{Heading: "Lines", Blocks: []render.Block{t}}
	if len(st.Lines) == 0 {
		sec.Blocks = []render.Block{render.Paragraph{Text: "No usage in the window."}}
	}
	return sec
}

func add(sum *big.Int, s string) {
	if n, ok := new(big.Int).SetString(s, 10); ok {
		sum.Add(sum, n)
	}
}

// amountChart draws each tunnel's amount per currency (its rounded lines summed; the chart's
// values are floats, the tables hold the exact amounts). Nil when nothing was priced.
func amountChart(st chargeback.Statement) *render.Chart {
	c := &render.Chart{Title: "Amount per tunnel", Kind: render.Bar, XLabel: "tunnel", YLabel: "amount"}
	tunnels, currencies := map[string]int{}, map[string]int{}
	var sums [][]*big.Rat // [currency][tunnel]
	for _, l := range st.Lines {
		if l.Currency == "" {
			continue
		}
		if _, ok := currencies[l.Currency]; !ok {
			if len(currencies) == 16 {
				continue
			}
			currencies[l.Currency] = len(c.Series)
			c.Series = append(c.Series, render.Series{Name: l.Currency})
			sums = append(sums, nil)
		}
		if _, ok := tunnels[l.TunnelID]; !ok {
			if len(tunnels) == render.MaxChartPoint {
				continue
			}
			tunnels[l.TunnelID] = len(c.Categories)
			c.Categories = append(c.Categories, l.TunnelID)
		}
		ci, ti := currencies[l.Currency], tunnels[l.TunnelID]
		for len(sums[ci]) <= ti {
			sums[ci] = append(sums[ci], new(big.Rat))
		}
		if r, ok := new(big.Rat).SetString(l.Amount); ok {
			sums[ci][ti].Add(sums[ci][ti], r)
		}
	}
	if len(c.Series) == 0 {
		return nil
	}
	for ci := range c.Series {
		c.Series[ci].Values = make([]float64, len(c.Categories))
		for ti, r := range sums[ci] {
			c.Series[ci].Values[ti], _ = r.Float64()
		}
	}
	return c
}
