package report_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/xuri/excelize/v2"
	"go.uber.org/goleak"
	"golang.org/x/net/html"

	"github.com/tunnelplane/tunnelplane/analytics/chargeback"
	"github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/internal/servicetest"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/report/render"
	"github.com/tunnelplane/tunnelplane/report/render/rendertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// fixture is a scratch log with one organization's scripted usage and prices: two tunnels, each
// called by one caller once an hour with 1,000 requests (900 at 20 ms, 100 at 400 ms), 1 GB in,
// 2 GB out and one streamed hour, over 13–17 and 27–30 March 2027 (UTC), in Europe/Berlin;
// prices from the start of March, doubled from local midnight of the 15th. Another
// organization's usage must not show.
type fixture struct {
	env      *servicetest.Env
	gen      *report.Generator
	org      string
	t1, t2   string
	hours    []time.Time
	change   time.Time
	position uint64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	e := servicetest.Start(t, nil)
	f := &fixture{env: e, t1: uuid.NewString(), t2: uuid.NewString(),
		gen: &report.Generator{Queries: readmodels.New(e.Pool), Log: e.Store, Settings: report.Settings{NodeStreamCapacity: 100}}}
	ctx := context.Background()
	sys := commands.WithActor(ctx, commands.Actor{ID: "root"})
	if _, err := e.Service.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	res, err := e.Service.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "acme", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	f.org = res.ID
	alice := commands.WithActor(ctx, commands.Actor{ID: "alice"})
	if err := e.Runner.WaitFor(ctx, res.Position, projections.RoleAssignments); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Service.Handlers.SetOrgTimeZone.Handle(alice, commands.SetOrgTimeZone{OrgID: f.org, TimeZone: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	f.change = time.Date(2027, 3, 15, 0, 0, 0, 0, berlin)
	for i, from := range []time.Time{time.Date(2027, 3, 1, 0, 0, 0, 0, berlin), f.change} {
		p := func(s string) string {
			r, _ := new(big.Rat).SetString(s)
			return r.Mul(r, big.NewRat(int64(i+1), 1)).FloatString(3)
		}
		if _, err := e.Service.Handlers.SetPriceSheet.Handle(alice, commands.SetPriceSheet{OrgID: f.org, EffectiveFrom: from, Currency: "EUR",
			PerGBIn: p("0.01"), PerGBOut: p("0.02"), Per1kRequests: p("0.001"), PerStreamedHour: p("0.1"), PerTunnelDay: p("1")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, span := range [][2]time.Time{{time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 17, 0, 0, 0, 0, time.UTC)},
		{time.Date(2027, 3, 27, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 30, 0, 0, 0, 0, time.UTC)}} {
		for h := span[0]; h.Before(span[1]); h = h.Add(time.Hour) {
			f.hours = append(f.hours, h)
		}
	}
	var evs []eventstore.EventData
	key := uuid.NewString()
	for _, h := range f.hours {
		for _, u := range []*domain.UsageRecorded{logtest.UsageWindow(f.org, f.t1, domain.CallerUser, "alice", h), logtest.UsageWindow(f.org, f.t2, domain.CallerAccessKey, key, h),
			logtest.UsageWindow(uuid.NewString(), uuid.NewString(), domain.CallerAnonymous, "", h)} {
			raw, err := json.Marshal(u)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: raw})
		}
	}
	ar, err := e.Store.Append(ctx, domain.NodeFactsStream(uuid.NewString()), eventstore.AnyVersion, evs...)
	if err != nil {
		t.Fatal(err)
	}
	f.position = ar.LastPosition
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.Runner.WaitFor(wctx, ar.LastPosition, projections.Usage); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) generate(t *testing.T, req report.Request, format render.Format) []byte {
	t.Helper()
	req.OrgID, req.Actor = f.org, "alice"
	res, err := f.gen.Generate(context.Background(), req, format)
	if err != nil {
		t.Fatalf("%s as %s: %v", req.Kind, format, err)
	}
	if res.Provenance.Position < int64(f.position) || res.EventPosition <= f.position || len(res.SHA256) != 64 {
		t.Errorf("%s as %s: position %d (usage at %d), recorded at %d", req.Kind, format, res.Provenance.Position, f.position, res.EventPosition)
	}
	return res.File
}

// jsonDoc is the JSON layout of a report (render.WriteJSON), numbers kept exact.
type jsonDoc struct {
	Title    string `json:"title"`
	Meta     []jsonFact
	Sections []struct {
		Heading string            `json:"heading"`
		Blocks  []json.RawMessage `json:"blocks"`
	} `json:"sections"`
}

type jsonFact struct {
	Label string `json:"label"`
	Kind  string `json:"kind"`
	Value any    `json:"value"`
}

// text is a JSON value as it was written: a number's literal, a string's text.
func text(v any) string {
	if n, ok := v.(json.Number); ok {
		return n.String()
	}
	s, _ := v.(string)
	return s
}

type jsonBlock struct {
	Type    string     `json:"type"`
	Text    string     `json:"text"`
	Caption string     `json:"caption"`
	Items   []jsonFact `json:"items"`
	Columns []struct {
		Name string `json:"name"`
		Kind string `json:"kind"`
	} `json:"columns"`
	Rows []struct {
		Cells []any `json:"cells"`
	} `json:"rows"`
	Series []struct {
		Name   string    `json:"name"`
		Values []float64 `json:"values"`
	} `json:"series"`
}

func decode(t *testing.T, file []byte) (jsonDoc, map[string][]jsonBlock) {
	t.Helper()
	var d jsonDoc
	dec := json.NewDecoder(bytes.NewReader(file))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]jsonBlock{}
	for _, s := range d.Sections {
		for _, raw := range s.Blocks {
			var b jsonBlock
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if err := dec.Decode(&b); err != nil {
				t.Fatal(err)
			}
			blocks[s.Heading] = append(blocks[s.Heading], b)
		}
	}
	return d, blocks
}

// facts are a section's facts by label.
func facts(blocks []jsonBlock) map[string]string {
	out := map[string]string{}
	for _, b := range blocks {
		for _, f := range b.Items {
			out[f.Label] = text(f.Value)
		}
	}
	return out
}

// column is a table's cells of one column, as JSON gives them.
func column(t *testing.T, b jsonBlock, name string) []any {
	t.Helper()
	for i, c := range b.Columns {
		if c.Name == name {
			var out []any
			for _, r := range b.Rows {
				out = append(out, r.Cells[i])
			}
			return out
		}
	}
	t.Fatalf("table %q has no column %q", b.Caption, name)
	return nil
}

func table(t *testing.T, blocks []jsonBlock, caption string) jsonBlock {
	t.Helper()
	for _, b := range blocks {
		if b.Type == "table" && strings.HasPrefix(b.Caption, caption) {
			return b
		}
	}
	t.Fatalf("no table %q", caption)
	return jsonBlock{}
}

func meta(d jsonDoc) map[string]string {
	out := map[string]string{}
	for _, f := range d.Meta {
		out[f.Label] = text(f.Value)
	}
	return out
}

// TestUsageReportJSONIsExact: the usage report's totals, per tunnel and per caller rows are the
// scripted windows' sums, exactly; the timeline is daily for a 17-day window in Berlin, the other
// organization's usage is absent, and the report names its window and read model position.
func TestUsageReportJSONIsExact(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	from, to := time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 30, 0, 0, 0, 0, time.UTC)
	d, blocks := decode(t, f.generate(t, report.Request{Kind: report.KindUsage, From: from, To: to}, render.JSON))
	n := int64(len(f.hours))
	sum := facts(blocks["Summary"])
	for label, want := range map[string]string{"Requests": itoa(2 * 1000 * n), "Errors": "0", "Bytes in": itoa(2 * 1_000_000_000 * n),
		"Bytes out": itoa(2 * 2_000_000_000 * n), "Streamed time (s)": itoa(2*3600*n) + ".000"} {
		if sum[label] != want {
			t.Errorf("summary %s = %q, want %q", label, sum[label], want)
		}
	}
	// p50 of 900 calls at 20 ms and 100 at 400 ms is 20 ms, p99 400 ms, within a bucket's 4.3%.
	if p50, p99 := parse(t, sum["Latency p50 (ms)"]), parse(t, sum["Latency p99 (ms)"]); p50 < 19 || p50 > 21 || p99 < 383 || p99 > 418 {
		t.Errorf("latency p50 %v p99 %v", p50, p99)
	}
	m := meta(d)
	// Widened to local days: 13 March 00:00 UTC is 01:00 in Berlin, so the window starts at the
	// local midnight before it.
	if m["Window start"] != "2027-03-12T23:00:00Z" || m["Window end (excluded)"] != "2027-03-30T22:00:00Z" || m["Time zone"] != "Europe/Berlin" ||
		!strings.Contains(m["Read model position"], "up to position") {
		t.Errorf("meta %v", m)
	}
	for _, tc := range []struct {
		caption string
		rows    int
	}{{"Usage per tunnel", 2}, {"Usage per tunnel and caller", 2}} {
		tb := table(t, blocks[map[bool]string{true: "Per caller", false: "Per tunnel"}[strings.Contains(tc.caption, "caller")]], tc.caption)
		if len(tb.Rows) != tc.rows {
			t.Fatalf("%s: %d rows, want %d", tc.caption, len(tb.Rows), tc.rows)
		}
		for i, v := range column(t, tb, "requests") {
			if v.(json.Number).String() != itoa(1000*n) {
				t.Errorf("%s row %d: requests %v, want %d", tc.caption, i, v, 1000*n)
			}
		}
		for i, v := range column(t, tb, "streamed s") {
			if v != itoa(3600*n)+".000" {
				t.Errorf("%s row %d: streamed %v (a decimal is its exact digits)", tc.caption, i, v)
			}
		}
		tunnels := column(t, tb, "tunnel")
		if !(tunnels[0] == f.t1 && tunnels[1] == f.t2 || tunnels[0] == f.t2 && tunnels[1] == f.t1) {
			t.Errorf("%s: tunnels %v", tc.caption, tunnels)
		}
	}
	days := table(t, blocks["Over time"], "The organization per day")
	var total int64
	for _, v := range column(t, days, "requests") {
		i, _ := v.(json.Number).Int64()
		total += i
	}
	if len(days.Rows) != 18 || total != 2000*n || days.Columns[0].Kind != "date" {
		t.Errorf("timeline: %d days holding %d requests (%s), want 18 holding %d", len(days.Rows), total, days.Columns[0].Kind, 2000*n)
	}
	var chart *jsonBlock
	for i, b := range blocks["Over time"] {
		if b.Type == "chart" {
			chart = &blocks["Over time"][i]
			break
		}
	}
	if chart == nil || len(chart.Series) != 2 || len(chart.Series[0].Values) != 18 {
		t.Errorf("no line chart over the 18 days: %+v", chart)
	}
}

// TestChargebackReportTotalsAreExact: the chargeback report of March prices every line as the
// analytics API does (exact, one rounding per line), names both sheets and the rounding rule.
func TestChargebackReportTotalsAreExact(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, blocks := decode(t, f.generate(t, report.Request{Kind: report.KindChargeback, Month: "2027-03"}, render.JSON))
	total := f.wantTotal()
	if got := facts(blocks["Summary"])["Total EUR"]; got != total {
		t.Errorf("total %q, want %q", got, total)
	}
	lines := table(t, blocks["Lines"], "Lines")
	if len(lines.Rows) != 4 {
		t.Fatalf("%d lines, want 2 traffic and 2 tunnel-day lines", len(lines.Rows))
	}
	sum := new(big.Rat)
	for _, v := range column(t, lines, "amount") {
		r, ok := new(big.Rat).SetString(v.(string))
		if !ok {
			t.Fatalf("amount %v is not an exact decimal string", v)
		}
		sum.Add(sum, r)
	}
	if sum.FloatString(2) != total {
		t.Errorf("the lines add up to %s, the total is %s", sum.FloatString(2), total)
	}
	sheets := table(t, blocks["Price sheets in force"], "Price sheets")
	if len(sheets.Rows) != 2 || column(t, sheets, "per GB in")[1] != "0.02" || column(t, sheets, "set by")[0] != "alice" {
		t.Errorf("sheets %+v", sheets.Rows)
	}
	var rounding bool
	for _, b := range blocks["Summary"] {
		rounding = rounding || b.Type == "paragraph" && strings.Contains(b.Text, "Rounding: "+chargeback.Rounding)
	}
	if !rounding {
		t.Error("the summary does not state the rounding rule")
	}
}

// wantTotal is March's total computed by hand: 0.151 EUR per window (1 GB in, 2 GB out, 1,000
// requests, one streamed hour) at the first prices, twice that after the change, per tunnel;
// plus 16.00 EUR of active tunnel-days per tunnel (13, 14 March at 1; 15–17, 27–30 at 2).
func (f *fixture) wantTotal() string {
	var before, after int64
	for _, h := range f.hours {
		if h.Before(f.change) {
			before++
		} else {
			after++
		}
	}
	perWindow, _ := new(big.Rat).SetString("0.151")
	line := new(big.Rat).Mul(perWindow, big.NewRat(before+2*after, 1))
	total := new(big.Rat).Mul(chargeback.RoundHalfEven(line, 2), big.NewRat(2, 1))
	return total.Add(total, big.NewRat(32, 1)).FloatString(2)
}

// TestCapacityReport: the peak hour (the first of the busiest), the p95 of hourly concurrency
// over every hour of the window, and the headroom against no nodes in service (negative).
func TestCapacityReport(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	from, to := time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 30, 0, 0, 0, 0, time.UTC)
	_, blocks := decode(t, f.generate(t, report.Request{Kind: report.KindCapacity, From: from, To: to}, render.JSON))
	sum := facts(blocks["Summary"])
	// 168 of 408 hours have usage (41%): the p95 by nearest rank is a busy hour's 3 streams.
	for label, want := range map[string]string{"Hours in the window": "408", "Peak hour (most requests)": "2027-03-13T00:00:00Z",
		"Requests in the peak hour": "2000", "p95 of hourly concurrency (streams)": "3", "Nodes in service": "0", "Capacity (streams)": "0",
		"Headroom (streams)": "-3"} {
		if sum[label] != want {
			t.Errorf("%s = %q, want %q", label, sum[label], want)
		}
	}
	tb := table(t, blocks["Per tunnel"], "Capacity per tunnel")
	if len(tb.Rows) != 2 {
		t.Errorf("%d tunnels", len(tb.Rows))
	}
	if len(blocks["Concurrency over time"]) != 1 || blocks["Concurrency over time"][0].Type != "chart" || len(blocks["Concurrency over time"][0].Series[0].Values) != 408 {
		t.Errorf("concurrency chart: %+v", blocks["Concurrency over time"])
	}
}

// TestEveryReportInEveryFormat: PDF text holds every section and a known total; XLSX cells are
// typed numbers and dates; HTML refers to nothing outside itself; CSV and JSON are written.
func TestEveryReportInEveryFormat(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	from, to := time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 30, 0, 0, 0, 0, time.UTC)
	reqs := map[string]report.Request{
		report.KindUsage:      {Kind: report.KindUsage, From: from, To: to},
		report.KindChargeback: {Kind: report.KindChargeback, From: time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2027, 4, 1, 0, 0, 0, 0, time.UTC)},
		report.KindCapacity:   {Kind: report.KindCapacity, From: from, To: to},
	}
	sections := map[string][]string{
		report.KindUsage:      {"Usage report", "Summary", "Over time", "Per tunnel", "Per caller", "Method", "Read model position"},
		report.KindChargeback: {"Chargeback report", "Summary", "Price sheets in force", "Lines", "Method", "half to even"},
		report.KindCapacity:   {"Capacity report", "Summary", "Concurrency over time", "Per tunnel", "Method", "Headroom"},
	}
	n := int64(len(f.hours))
	known := map[string]string{report.KindUsage: itoa(2 * 1000 * n), report.KindChargeback: f.wantTotal(), report.KindCapacity: "408"}
	for kind, req := range reqs {
		t.Run(kind, func(t *testing.T) {
			text := rendertest.PDFToText(t, f.generate(t, req, render.PDF))
			for _, want := range append(sections[kind], known[kind]) {
				if !strings.Contains(text, want) {
					t.Errorf("PDF text lacks %q", want)
				}
			}
			checkHTML(t, f.generate(t, req, render.HTML))
			checkXLSX(t, kind, f.generate(t, req, render.XLSX))
			if csv := f.generate(t, req, render.CSV); !bytes.Contains(csv, []byte(known[kind])) {
				t.Errorf("CSV lacks %s", known[kind])
			}
		})
	}
}

// checkHTML: one document with inline style and SVG charts, nothing loaded from elsewhere.
func checkHTML(t *testing.T, file []byte) {
	t.Helper()
	z := html.NewTokenizer(bytes.NewReader(file))
	svg := 0
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		tok := z.Token()
		if tok.Data == "svg" && tt == html.StartTagToken {
			svg++
		}
		if tok.Data == "script" || tok.Data == "link" || tok.Data == "img" || tok.Data == "iframe" {
			t.Errorf("HTML holds a <%s>", tok.Data)
		}
		for _, a := range tok.Attr {
			if a.Key == "src" || (a.Key == "href" && !strings.HasPrefix(a.Val, "#")) {
				t.Errorf("HTML refers outside itself: %s=%q", a.Key, a.Val)
			}
		}
	}
	if svg == 0 {
		t.Error("HTML has no inline SVG chart")
	}
}

// checkXLSX: the per-tunnel table's counts are number cells, and the first table's dates and
// times are numeric cells with a date format.
func checkXLSX(t *testing.T, kind string, file []byte) {
	t.Helper()
	x, err := excelize.OpenReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	numbers, dates := 0, 0
	for _, sheet := range x.GetSheetList() {
		rows, err := x.GetRows(sheet)
		if err != nil {
			t.Fatal(err)
		}
		for r, row := range rows {
			for c, v := range row {
				ref, _ := excelize.CoordinatesToCellName(c+1, r+1)
				typ, _ := x.GetCellType(sheet, ref)
				isNum := typ == excelize.CellTypeNumber || typ == excelize.CellTypeUnset
				if v == "" || !isNum {
					continue
				}
				numbers++
				if len(v) >= 10 && v[4] == '-' && v[7] == '-' {
					dates++
				}
			}
		}
	}
	if numbers < 10 || dates == 0 {
		t.Errorf("%s: %d number cells, %d of them dates", kind, numbers, dates)
	}
}

// TestReportIDIsUsedOnce: a given report id is the report's id, and a second report with it is
// refused by the log (a scheduled run cannot be made twice); bad requests are refused before
// anything is read.
func TestReportIDIsUsedOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := uuid.NewString()
	req := report.Request{Kind: report.KindUsage, From: time.Date(2027, 3, 13, 0, 0, 0, 0, time.UTC), To: time.Date(2027, 3, 14, 0, 0, 0, 0, time.UTC),
		OrgID: f.org, Actor: "scheduler", ReportID: id}
	res, err := f.gen.Generate(context.Background(), req, render.CSV)
	if err != nil || res.ReportID != id {
		t.Fatalf("first run: %v %q", err, res.ReportID)
	}
	recs, err := f.env.Store.ReadStream(context.Background(), domain.ReportStream(id), 0, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("report stream: %d records, %v", len(recs), err)
	}
	var ev domain.ReportGenerated
	if err := json.Unmarshal(recs[0].Payload, &ev); err != nil || ev.Report != "usage" || ev.SHA256 != res.SHA256 || ev.From != "2027-03-13T00:00:00Z" {
		t.Errorf("report.generated %+v %v", ev, err)
	}
	if _, err := f.gen.Generate(context.Background(), req, render.CSV); !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		t.Errorf("second run with the same id: %v, want refused", err)
	}
	for _, bad := range []report.Request{
		{Kind: "sales", From: req.From, To: req.To, OrgID: f.org},
		{Kind: report.KindUsage, From: req.To, To: req.From, OrgID: f.org},
		{Kind: report.KindUsage, From: req.From, To: req.To},
		{Kind: report.KindUsage, Month: "2027-03", OrgID: f.org},
		{Kind: report.KindChargeback, Month: "March", OrgID: f.org},
		{Kind: report.KindCapacity, From: req.From, To: req.From.Add(400 * 24 * time.Hour), OrgID: f.org},
	} {
		if _, err := f.gen.Generate(context.Background(), bad, render.JSON); !errors.Is(err, report.ErrRequest) && !errors.Is(err, report.ErrUnknownKind) {
			t.Errorf("%+v: %v, want refused", bad, err)
		}
	}
}

func itoa(n int64) string { return big.NewInt(n).String() }

func parse(t *testing.T, s string) float64 {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatalf("%q is not a decimal", s)
	}
	v, _ := r.Float64()
	return v
}
