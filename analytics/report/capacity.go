package report

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/rollup"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// capacity is the capacity report: the organization's peak hour, the p95 of its hourly
// concurrency and the headroom against the nodes in service, with a chart; then per tunnel.
func (b *builder) capacity(ctx context.Context) (Built, error) {
	from, to, err := rollup.Widen(b.req.From, b.req.To, rollup.Hour, b.loc)
	if err != nil {
		return Built{}, err
	}
	nodes, err := NodesInService(ctx, b.q)
	if err != nil {
		return Built{}, err
	}
	nodeCap := b.set.NodeStreamCapacity
	orgRows, err := b.orgHours(ctx, from, to)
	if err != nil {
		return Built{}, err
	}
	org := rollup.Capacity{Hours: int(to.Sub(from) / time.Hour), NodeCapacity: nodeCap, Nodes: nodes, TotalCapacity: nodeCap * int64(nodes)}
	if cs := rollup.Capacities(orgRows, from, to, nodeCap, nodes); len(cs) == 1 {
		org = cs[0]
	} else {
		org.Headroom = org.TotalCapacity
		if org.TotalCapacity > 0 {
			org.HeadroomFraction = 1
		}
	}
	var tunnels []rollup.Capacity
	truncated, err := eachPage(ctx, b.q, b.req.OrgID, readmodels.UsageScopeTunnel, from, to, func(rows []readmodels.UsageHour) error {
		tunnels = append(tunnels, rollup.Capacities(rows, from, to, nodeCap, nodes)...)
		return nil
	})
	if err != nil {
		return Built{}, err
	}
	doc := b.document("Capacity report", "by hour", from, to)
	peak := render.Cell{}
	if org.PeakHour != nil {
		peak = render.At(*org.PeakHour)
	}
	summary := render.Section{Heading: "Summary", Blocks: []render.Block{
		render.Paragraph{Text: "Concurrency is the calls a node had open at once for a tunnel and caller (the most in each hour); the p95 is taken over " +
			"every hour of the window, idle hours as 0. Headroom is the nodes in service times the streams one node is configured to carry, less that p95."},
		render.Facts{Items: []render.Fact{
			{Label: "Hours in the window", Value: render.Int(int64(org.Hours))},
			{Label: "Peak hour (most requests)", Value: peak},
			{Label: "Requests in the peak hour", Value: render.Int(org.PeakRequests)},
			{Label: "Most streams open at once", Value: render.Int(org.PeakStreamsMax)},
			{Label: "p95 of hourly concurrency (streams)", Value: render.Int(org.P95StreamsMax)},
			{Label: "p95 of hourly mean streams", Value: render.Dec(strconv.FormatFloat(org.P95StreamsMean, 'f', 3, 64), 3)},
			{Label: "Nodes in service", Value: render.Int(int64(org.Nodes))},
			{Label: "Streams per node (configured)", Value: render.Int(org.NodeCapacity)},
			{Label: "Capacity (streams)", Value: render.Int(org.TotalCapacity)},
			{Label: "Headroom (streams)", Value: render.Int(org.Headroom)},
			{Label: "Headroom (fraction of capacity)", Value: render.Dec(strconv.FormatFloat(org.HeadroomFraction, 'f', 4, 64), 4)},
		}},
	}}
	over := render.Section{Heading: "Concurrency over time"}
	if len(orgRows) == 0 {
		over.Blocks = append(over.Blocks, render.Paragraph{Text: "No usage in the window."})
	} else {
		over.Blocks = append(over.Blocks, concurrencyChart(orgRows, from, to, b.loc, org.TotalCapacity))
	}
	t := &render.Table{Caption: "Capacity per tunnel" + shown(truncated, "tunnels"), Columns: []render.Column{
		{Name: "tunnel", Kind: render.Text}, {Name: "peak hour", Kind: render.Time}, {Name: "peak requests", Kind: render.Integer},
		{Name: "most streams", Kind: render.Integer}, {Name: "p95 hourly streams", Kind: render.Integer}, {Name: "headroom", Kind: render.Integer},
	}}
	for _, c := range tunnels {
		peak := render.Cell{}
		if c.PeakHour != nil {
			peak = render.At(*c.PeakHour)
		}
		t.Rows = append(t.Rows, render.Row{Cells: []render.Cell{render.Str(c.TunnelID), peak, render.Int(c.PeakRequests), render.Int(c.PeakStreamsMax),
			render.Int(c.P95StreamsMax), render.Int(c.Headroom)}, Exception: c.Headroom < 0})
	}
	perTunnel := render.Section{Heading: "Per tunnel", Blocks: []render.Block{
		render.Paragraph{Text: "A tunnel whose p95 alone exceeds the capacity is marked."}, t}}
	doc.Sections = []render.Section{summary, over, perTunnel, b.method()}
	return Built{Doc: doc, From: from, To: to}, nil
}

// concurrencyChart draws the organization's most streams open per hour (per local day, its
// busiest hour, beyond 31 days) against the capacity.
func concurrencyChart(rows []readmodels.UsageHour, from, to time.Time, loc *time.Location, capacity int64) *render.Chart {
	g := rollup.Hour
	if to.Sub(from) > 31*24*time.Hour {
		g = rollup.Day
	}
	c := &render.Chart{Title: fmt.Sprintf("Most streams open per %s, and the capacity", g), Kind: render.Line, XLabel: string(g), YLabel: "streams",
		Series: []render.Series{{Name: "streams (most open)"}, {Name: "capacity"}}}
	index := map[time.Time]int{}
	for start := from; start.Before(to); {
		s, err := rollup.BucketStart(start, g, loc)
		if err != nil {
			break
		}
		index[s] = len(c.Categories)
		c.Categories = append(c.Categories, label(s, g, loc))
		start = rollup.BucketEnd(s, g, loc)
	}
	c.Series[0].Values = make([]float64, len(c.Categories))
	c.Series[1].Values = make([]float64, len(c.Categories))
	for i := range c.Series[1].Values {
		c.Series[1].Values[i] = float64(capacity)
	}
	for _, h := range rows {
		s, err := rollup.BucketStart(h.Hour, g, loc)
		if err != nil {
			continue
		}
		if i, ok := index[s]; ok {
			c.Series[0].Values[i] = max(c.Series[0].Values[i], float64(h.StreamsMax))
		}
	}
	if len(c.Categories) == 1 {
		c.Kind = render.Bar
	}
	return c
}
