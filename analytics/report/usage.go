package report

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// usage is the usage report: the organization's totals and timeline, then per tunnel and per
// caller tables over the window.
func (b *builder) usage(ctx context.Context) (Built, error) {
	g := Granularity(b.req.From, b.req.To)
	from, to, err := rollup.Widen(b.req.From, b.req.To, g, b.loc)
	if err != nil {
		return Built{}, err
	}
	orgRows, err := b.orgHours(ctx, from, to)
	if err != nil {
		return Built{}, err
	}
	buckets, err := rollup.Aggregate(orgRows, g, b.loc)
	if err != nil {
		return Built{}, err
	}
	timeline := fill(buckets, from, to, g, b.loc)
	total := rollup.Bucket{Start: from, End: to}
	if t := rollup.Totals(orgRows, from, to); len(t) == 1 {
		total = t[0]
	}
	tunnels, tTrunc, err := totals(ctx, b.q, b.req.OrgID, readmodels.UsageScopeTunnel, from, to)
	if err != nil {
		return Built{}, err
	}
	callers, cTrunc, err := totals(ctx, b.q, b.req.OrgID, readmodels.UsageScopeCaller, from, to)
	if err != nil {
		return Built{}, err
	}
	doc := b.document("Usage report", fmt.Sprintf("by %s", g), from, to)
	summary := render.Section{Heading: "Summary", Blocks: []render.Block{
		render.Paragraph{Text: fmt.Sprintf("The organization's calls through its tunnels in the window: %d tunnels and %d callers with usage.", len(tunnels), len(callers))},
		render.Facts{Items: []render.Fact{
			{Label: "Requests", Value: render.Int(total.Requests)},
			{Label: "Errors", Value: render.Int(total.Errors)},
			{Label: "Bytes in", Value: render.Int(total.BytesIn)},
			{Label: "Bytes out", Value: render.Int(total.BytesOut)},
			{Label: "Latency p50 (ms)", Value: ms(total.Latency.P50)},
			{Label: "Latency p95 (ms)", Value: ms(total.Latency.P95)},
			{Label: "Latency p99 (ms)", Value: ms(total.Latency.P99)},
			{Label: "Streamed time (s)", Value: seconds(total.StreamedMS())},
		}},
	}}
	over := render.Section{Heading: "Over time"}
	if len(buckets) == 0 {
		over.Blocks = append(over.Blocks, render.Paragraph{Text: "No usage in the window."})
	} else {
		over.Blocks = append(over.Blocks, timelineChart(timeline, g, b.loc), bytesChart(timeline, g, b.loc), timelineTable(timeline, g))
	}
	perTunnel := render.Section{Heading: "Per tunnel", Blocks: []render.Block{
		usageTable("Usage per tunnel"+shown(tTrunc, "tunnels"), false, tunnels)}}
	perCaller := render.Section{Heading: "Per caller", Blocks: []render.Block{
		usageTable("Usage per tunnel and caller"+shown(cTrunc, "callers"), true, callers)}}
	doc.Sections = []render.Section{summary, over, perTunnel, perCaller, b.method()}
	return Built{Doc: doc, From: from, To: to}, nil
}

// fill is every bucket of [from, to), those without usage as zero.
func fill(buckets []rollup.Bucket, from, to time.Time, g rollup.Granularity, loc *time.Location) []rollup.Bucket {
	var out []rollup.Bucket
	i := 0
	for start := from; start.Before(to); start = rollup.BucketEnd(start, g, loc) {
		if i < len(buckets) && buckets[i].Start.Equal(start) {
			out = append(out, buckets[i])
			i++
			continue
		}
		out = append(out, rollup.Bucket{Start: start, End: rollup.BucketEnd(start, g, loc)})
	}
	return out
}

// timelineChart draws the organization's requests and errors per bucket.
func timelineChart(buckets []rollup.Bucket, g rollup.Granularity, loc *time.Location) *render.Chart {
	return chart("Requests and errors per "+string(g), g, loc, "calls", buckets, []string{"requests", "errors"},
		func(bk rollup.Bucket) []float64 { return []float64{float64(bk.Requests), float64(bk.Errors)} })
}

// bytesChart draws the organization's bytes each way per bucket, in GB (10^9 bytes).
func bytesChart(buckets []rollup.Bucket, g rollup.Granularity, loc *time.Location) *render.Chart {
	return chart("Traffic per "+string(g), g, loc, "GB", buckets, []string{"bytes in", "bytes out"},
		func(bk rollup.Bucket) []float64 {
			return []float64{float64(bk.BytesIn) / 1e9, float64(bk.BytesOut) / 1e9}
		})
}

func chart(title string, g rollup.Granularity, loc *time.Location, yLabel string, buckets []rollup.Bucket, names []string, values func(rollup.Bucket) []float64) *render.Chart {
	c := &render.Chart{Title: title, Kind: render.Line, XLabel: string(g), YLabel: yLabel}
	for _, n := range names {
		c.Series = append(c.Series, render.Series{Name: n})
	}
	for _, bk := range buckets {
		c.Categories = append(c.Categories, label(bk.Start, g, loc))
		for i, v := range values(bk) {
			c.Series[i].Values = append(c.Series[i].Values, v)
		}
	}
	if len(c.Categories) == 1 {
		c.Kind = render.Bar
	}
	return c
}

var measureColumns = []render.Column{
	{Name: "requests", Kind: render.Integer}, {Name: "errors", Kind: render.Integer}, {Name: "bytes in", Kind: render.Integer},
	{Name: "bytes out", Kind: render.Integer}, {Name: "p50 ms", Kind: render.Decimal}, {Name: "p95 ms", Kind: render.Decimal},
	{Name: "p99 ms", Kind: render.Decimal}, {Name: "streamed s", Kind: render.Decimal},
}

func measures(bk rollup.Bucket) []render.Cell {
	return []render.Cell{render.Int(bk.Requests), render.Int(bk.Errors), render.Int(bk.BytesIn), render.Int(bk.BytesOut),
		ms(bk.Latency.P50), ms(bk.Latency.P95), ms(bk.Latency.P99), seconds(bk.StreamedMS())}
}

// timelineTable lists the organization's buckets: hours as instants, longer buckets as the local
// date they start on.
func timelineTable(buckets []rollup.Bucket, g rollup.Granularity) *render.Table {
	kind := render.Date
	if g == rollup.Hour {
		kind = render.Time
	}
	t := &render.Table{Caption: "The organization per " + string(g), Columns: append([]render.Column{{Name: string(g) + " start", Kind: kind}}, measureColumns...)}
	for _, bk := range buckets {
		start := render.Day(bk.Start)
		if g == rollup.Hour {
			start = render.At(bk.Start)
		}
		t.Rows = append(t.Rows, render.Row{Cells: append([]render.Cell{start}, measures(bk)...)})
	}
	return t
}

// usageTable lists each tunnel's (or tunnel and caller's) totals over the window.
func usageTable(caption string, perCaller bool, buckets []rollup.Bucket) *render.Table {
	cols := []render.Column{{Name: "tunnel", Kind: render.Text}}
	if perCaller {
		cols = append(cols, render.Column{Name: "caller kind", Kind: render.Text}, render.Column{Name: "caller", Kind: render.Text})
	}
	t := &render.Table{Caption: caption, Columns: append(cols, measureColumns...)}
	for _, bk := range buckets {
		cells := []render.Cell{render.Str(bk.TunnelID)}
		if perCaller {
			cells = append(cells, render.Str(bk.CallerKind), render.Str(bk.CallerID))
		}
		t.Rows = append(t.Rows, render.Row{Cells: append(cells, measures(bk)...)})
	}
	return t
}
