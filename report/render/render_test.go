package render

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
	"golang.org/x/net/html"

	"github.com/tunnelplane/tunnelplane/report/render/rendertest"
)

const (
	hostileName = `<script>alert("x")</script>`
	hostileAttr = `"><img src="https://evil.example/x.png" onerror=alert(1)>`
	formulaText = `=HYPERLINK("https://evil.example","click")`
)

var generated = time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)

func sampleDoc() *Document {
	return &Document{
		Title:     "SOC 2 report " + hostileName,
		Subtitle:  "Window 2026-01-01 to 2026-03-01",
		Generated: generated,
		Meta: []Fact{
			{Label: "Log positions", Value: Str("1-5000")},
			{Label: "Checkpoint", Value: Str("size 5000 root abcd")},
			{Label: "Generated", Value: At(generated)},
		},
		Sections: []Section{
			{Heading: "CC6.1 Logical access", Blocks: []Block{
				Paragraph{Text: "Access is granted through roles. Café costs €3, in Chinese 中文."},
				Facts{Items: []Fact{{Label: "Role grants", Value: Int(12)}, {Label: "Spend", Value: Dec("1234.50", 2)}}},
				&Table{Caption: "Tunnels " + hostileAttr, Columns: []Column{
					{Name: "tunnel", Kind: Text}, {Name: "requests", Kind: Integer}, {Name: "cost", Kind: Decimal},
					{Name: "last seen", Kind: Time}, {Name: "day", Kind: Date},
				}, Rows: []Row{
					{Cells: []Cell{Str(hostileName), Int(-5), Dec("-0.75", 2), At(generated), Day(generated)}},
					{Cells: []Cell{Str(formulaText), Int(42), Dec("12.50", 2), At(generated.Add(-time.Hour)), Day(generated)}, Exception: true},
					{Cells: []Cell{Str("plain-tunnel"), Int(7), {}, {}, {}}},
				}},
			}},
			{Heading: "CC7.2 Monitoring", Blocks: []Block{
				&Chart{Title: "Denials per day " + hostileName, Kind: Bar, XLabel: "day", YLabel: "denials",
					Categories: []string{"03-01", "03-02", hostileName},
					Series:     []Series{{Name: "denied", Values: []float64{3, 0, 5}}, {Name: "failed " + hostileName, Values: []float64{1, 2.5, 0}}}},
				&Chart{Title: "Sessions", Kind: Line, XLabel: "hour", YLabel: "sessions",
					Categories: []string{"00", "01", "02", "03"},
					Series:     []Series{{Name: "open", Values: []float64{1, 4, 2, -1}}}},
			}},
		},
	}
}

func render(t *testing.T, f Format, d *Document) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, f, d); err != nil {
		t.Fatalf("write %s: %v", f, err)
	}
	return b.Bytes()
}

// TestHTMLIsSelfContainedAndEscaped parses the page: no script, no attribute that loads or links
// anything, the hostile strings come back as the text they were, every inline SVG is XML.
func TestHTMLIsSelfContainedAndEscaped(t *testing.T) {
	t.Parallel()
	page := render(t, HTML, sampleDoc())
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script", "img", "iframe", "object", "embed", "link", "image", "use", "foreignobject":
				t.Errorf("element <%s> in the page", n.Data)
			}
			for _, a := range n.Attr {
				key := strings.ToLower(a.Key)
				if key == "src" || key == "href" || key == "srcset" || key == "action" || key == "poster" || strings.HasPrefix(key, "on") {
					t.Errorf("<%s %s=%q>: the page must refer to nothing", n.Data, a.Key, a.Val)
				}
				if strings.Contains(strings.ToLower(a.Val), "url(") {
					t.Errorf("<%s %s> loads a url", n.Data, a.Key)
				}
			}
		}
		if n.Type == html.TextNode {
			texts = append(texts, n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	all := strings.Join(texts, "\n")
	for _, want := range []string{hostileName, hostileAttr, formulaText, "CC6.1 Logical access", "中文", "1234.50", "2026-03-02T10:30:00Z"} {
		if !strings.Contains(all, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
	if strings.Contains(string(page), "@import") || strings.Contains(string(page), "url(") {
		t.Error("the style loads something")
	}
	for i, svg := range svgElements(page) {
		if err := wellFormed(svg); err != nil {
			t.Errorf("inline svg %d: %v", i, err)
		}
	}
	if n := len(svgElements(page)); n != 2 {
		t.Errorf("%d inline svg charts, want 2", n)
	}
	if !bytes.Contains(page, []byte(`<tr class="exception">`)) {
		t.Error("the exception row is not marked")
	}
}

func svgElements(page []byte) []string {
	var out []string
	s := string(page)
	for {
		i := strings.Index(s, "<svg")
		if i < 0 {
			return out
		}
		j := strings.Index(s[i:], "</svg>")
		out = append(out, s[i:i+j+len("</svg>")])
		s = s[i+j:]
	}
}

func wellFormed(s string) error {
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = true
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestSVGIsWellFormedAndEscaped(t *testing.T) {
	t.Parallel()
	for _, c := range sampleDoc().Sections[1].Blocks {
		var b bytes.Buffer
		if err := WriteSVG(&b, c.(*Chart)); err != nil {
			t.Fatal(err)
		}
		if err := wellFormed(b.String()); err != nil {
			t.Fatalf("svg: %v\n%s", err, b.String())
		}
		if strings.Contains(b.String(), "<script") {
			t.Fatal("a chart label reached the svg unescaped")
		}
	}
	var texts []string
	d := xml.NewDecoder(strings.NewReader(svgString(sampleDoc().Sections[1].Blocks[0].(*Chart))))
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if cd, ok := tok.(xml.CharData); ok {
			texts = append(texts, string(cd))
		}
	}
	if !strings.Contains(strings.Join(texts, "|"), hostileName) {
		t.Error("the hostile category does not come back as its text")
	}
}

// TestPDFTextHasEverySection extracts the PDF's text with pdftotext (poppler-utils).
func TestPDFTextHasEverySection(t *testing.T) {
	t.Parallel()
	pdf := render(t, PDF, sampleDoc())
	text := rendertest.PDFToText(t, pdf)
	for _, want := range []string{"SOC 2 report", "Log positions", "CC6.1 Logical access", "CC7.2 Monitoring", "plain-tunnel", "1234.50", "-0.75",
		"2026-03-02T10:30:00Z", "Café costs €3", "[U+4E2D][U+6587]", "Denials per day", "Page 1 of"} {
		if !strings.Contains(text, want) {
			t.Errorf("pdftotext output lacks %q", want)
		}
	}
	if bytes.Contains(pdf, []byte("/Subtype /Image")) {
		t.Error("the PDF holds an image; charts must be vector")
	}
	if again := render(t, PDF, sampleDoc()); !bytes.Equal(pdf, again) {
		t.Error("the same document rendered to different PDF bytes")
	}
}

// TestXLSXCellsAreTyped reads the workbook back: numbers are number cells, dates date cells with
// a date format, text strings (a formula-looking text too).
func TestXLSXCellsAreTyped(t *testing.T) {
	t.Parallel()
	f, err := excelize.OpenReader(bytes.NewReader(render(t, XLSX, sampleDoc())))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sheets := f.GetSheetList()
	if len(sheets) != 3 || sheets[0] != "Report" || sheets[1] != "1 CC6.1 Logical access" {
		t.Fatalf("sheets %q", sheets)
	}
	rows, err := f.GetRows(sheets[1])
	if err != nil {
		t.Fatal(err)
	}
	header := -1
	for i, r := range rows {
		if len(r) > 0 && r[0] == "tunnel" {
			header = i + 1
		}
	}
	if header < 0 {
		t.Fatalf("no table header in %q", rows)
	}
	cell := func(col string, row int) string { return col + itoa(row) }
	r1, r2 := header+1, header+2
	type want struct {
		ref     string
		numeric bool
		raw     string
		shown   string
		format  string
	}
	for _, w := range []want{
		{ref: cell("A", r1), raw: hostileName, shown: hostileName},
		{ref: cell("A", r2), raw: formulaText, shown: formulaText},
		{ref: cell("B", r1), numeric: true, raw: "-5", shown: "-5"},
		{ref: cell("C", r2), numeric: true, raw: "12.50", shown: "12.50", format: "0.00"},
		{ref: cell("D", r1), numeric: true, shown: "2026-03-02 10:30:00", format: xlsxTimeFormat},
		{ref: cell("E", r1), numeric: true, shown: "2026-03-02", format: xlsxDateFormat},
	} {
		typ, err := f.GetCellType(sheets[1], w.ref)
		if err != nil {
			t.Fatal(err)
		}
		isNum := typ == excelize.CellTypeNumber || typ == excelize.CellTypeUnset
		if isNum != w.numeric {
			t.Errorf("%s: cell type %v, want numeric %v", w.ref, typ, w.numeric)
		}
		raw, _ := f.GetCellValue(sheets[1], w.ref, excelize.Options{RawCellValue: true})
		if w.raw != "" && raw != w.raw {
			t.Errorf("%s: raw value %q, want %q", w.ref, raw, w.raw)
		}
		if w.numeric && w.raw == "" {
			serial, err := excelize.ExcelDateToTime(parseFloat(t, raw), false)
			if err != nil || !serial.Equal(generated) && !serial.Equal(Day(generated).t) {
				t.Errorf("%s: raw %q is not the date serial of %v", w.ref, raw, generated)
			}
		}
		if shown, _ := f.GetCellValue(sheets[1], w.ref); shown != w.shown {
			t.Errorf("%s: shown %q, want %q", w.ref, shown, w.shown)
		}
		if formula, _ := f.GetCellFormula(sheets[1], w.ref); formula != "" {
			t.Errorf("%s holds a formula %q", w.ref, formula)
		}
		if w.format != "" {
			id, _ := f.GetCellStyle(sheets[1], w.ref)
			st, err := f.GetStyle(id)
			if err != nil || st.CustomNumFmt == nil || *st.CustomNumFmt != w.format {
				t.Errorf("%s: number format %v, want %q", w.ref, st, w.format)
			}
		}
	}
}

func itoa(n int) string { return Int(int64(n)).String() }

func parseFloat(t *testing.T, s string) float64 {
	var v float64
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return v
}

// TestCSVNeutralisesFormulas: a text cell a spreadsheet would evaluate gets an apostrophe; numbers
// stay numbers; every table is in the one file under its section.
func TestCSVNeutralisesFormulas(t *testing.T) {
	t.Parallel()
	recs, err := csv.NewReader(bytes.NewReader(render(t, CSV, sampleDoc()))).ReadAll()
	if err != nil && !errors.Is(err, csv.ErrFieldCount) {
		t.Fatal(err)
	}
	r := csv.NewReader(bytes.NewReader(render(t, CSV, sampleDoc())))
	r.FieldsPerRecord = -1
	if recs, err = r.ReadAll(); err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for _, rec := range recs {
		for _, v := range rec {
			if v != "" && strings.ContainsRune("=+@\t\r", rune(v[0])) {
				t.Errorf("value %q would run as a formula", v)
			}
		}
		if rec[0] == "row" && rec[1] == "CC6.1 Logical access" {
			rows = append(rows, rec)
		}
	}
	if len(rows) != 3 {
		t.Fatalf("%d table rows, want 3: %q", len(rows), rows)
	}
	if got := rows[1]; got[3] != "yes" || got[4] != "'"+formulaText || got[6] != "12.50" {
		t.Errorf("exception row %q", got)
	}
	if got := rows[0]; got[3] != "" || got[4] != hostileName || got[5] != "-5" || got[6] != "-0.75" || got[7] != "2026-03-02T10:30:00Z" || got[8] != "2026-03-02" {
		t.Errorf("first row %q", got)
	}
	if got := safeCSV("-2+3"); got != "'-2+3" {
		t.Errorf("safeCSV(-2+3) = %q", got)
	}
}

func TestJSONSchema(t *testing.T) {
	t.Parallel()
	var doc struct {
		Schema   string `json:"schema"`
		Meta     []struct{ Label, Kind string }
		Sections []struct {
			Heading string
			Blocks  []json.RawMessage
		}
	}
	if err := json.Unmarshal(render(t, JSON, sampleDoc()), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Schema != JSONSchema || len(doc.Sections) != 2 || doc.Meta[2].Kind != "time" {
		t.Fatalf("document %+v", doc)
	}
	var table struct {
		Type    string
		Columns []struct{ Name, Kind string }
		Rows    []struct {
			Exception bool
			Cells     []any
		}
	}
	if err := json.Unmarshal(doc.Sections[0].Blocks[2], &table); err != nil {
		t.Fatal(err)
	}
	if table.Type != "table" || table.Columns[2].Kind != "decimal" || !table.Rows[1].Exception || table.Rows[0].Exception {
		t.Fatalf("table %+v", table)
	}
	if c := table.Rows[1].Cells; c[1] != 42.0 || c[2] != "12.50" || c[3] != "2026-03-02T09:30:00Z" || c[4] != "2026-03-02" {
		t.Errorf("cells %#v", c)
	}
	if c := table.Rows[2].Cells; c[2] != nil {
		t.Errorf("an empty cell is %#v, want null", c[2])
	}
}

func TestValidateRefuses(t *testing.T) {
	t.Parallel()
	one := func(b Block) *Document {
		return &Document{Title: "t", Sections: []Section{{Heading: "h", Blocks: []Block{b}}}}
	}
	col := []Column{{Name: "n", Kind: Decimal}}
	for name, d := range map[string]*Document{
		"decimal scale":    one(&Table{Columns: col, Rows: []Row{{Cells: []Cell{Dec("1.5", 2)}}}}),
		"decimal float":    one(&Table{Columns: col, Rows: []Row{{Cells: []Cell{Dec("1e3", 0)}}}}),
		"decimal leading0": one(&Table{Columns: col, Rows: []Row{{Cells: []Cell{Dec("01.50", 2)}}}}),
		"kind mismatch":    one(&Table{Columns: col, Rows: []Row{{Cells: []Cell{Int(1)}}}}),
		"cell count":       one(&Table{Columns: col, Rows: []Row{{Cells: []Cell{Dec("1", 0), Dec("2", 0)}}}}),
		"no columns":       one(&Table{}),
		"chart nan":        one(&Chart{Kind: Line, Categories: []string{"a"}, Series: []Series{{Values: []float64{math.NaN()}}}}),
		"chart length":     one(&Chart{Kind: Bar, Categories: []string{"a", "b"}, Series: []Series{{Values: []float64{1}}}}),
		"not utf-8":        {Title: "\xff"},
		"year":             {Meta: []Fact{{Label: "x", Value: At(time.Time{})}}},
		"nil table":        one((*Table)(nil)),
	} {
		for _, f := range Formats() {
			if err := Write(io.Discard, f, d); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s as %s: %v, want ErrInvalid", name, f, err)
			}
		}
	}
	if err := Write(io.Discard, Format("docx"), sampleDoc()); !errors.Is(err, ErrFormat) {
		t.Errorf("unknown format: %v", err)
	}
	if err := checkDecimal("-0.75", 2); err != nil {
		t.Errorf("-0.75: %v", err)
	}
}
