package render

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/go-pdf/fpdf"
)

// PDF layout in millimetres on A4 portrait.
const (
	pdfMargin     = 15.0
	pdfLine       = 4.6 // body line height
	pdfCellLine   = 4.0 // table line height
	pdfChartH     = 70.0
	pdfMaxXLabels = 8
	pdfMinCol     = 14.0
	pdfMeasure    = 200 // table rows measured to size the columns
)

// WritePDF writes the Document as a PDF drawn in process (go-pdf/fpdf): text in the standard
// Helvetica font, tables with their header repeated on each page, exception rows filled red and
// set in bold, charts as vector lines and rectangles (no image). Page footers number the pages.
//
// Text: the standard PDF fonts encode Windows-1252, which covers English and Western European
// text. A character outside it is written as its code point, "[U+4E2D]", never dropped or
// replaced by a look-alike, so the PDF says what the log holds; the HTML, CSV, JSON and XLSX of
// the same report carry the text as it is.
func WritePDF(w io.Writer, d *Document) error {
	if err := d.Validate(); err != nil {
		return err
	}
	f := fpdf.New("P", "mm", "A4", "")
	if !d.Generated.IsZero() {
		f.SetCreationDate(d.Generated)
		f.SetModificationDate(d.Generated)
	}
	f.SetCatalogSort(true)
	f.SetTitle(d.Title, true)
	f.SetCreator("tunnelplane", true)
	f.SetProducer("tunnelplane (go-pdf/fpdf)", true)
	f.SetMargins(pdfMargin, pdfMargin, pdfMargin)
	f.SetAutoPageBreak(true, pdfMargin+5)
	f.AliasNbPages("{nb}")
	footer := pdfText(d.Title)
	f.SetFooterFunc(func() {
		f.SetY(-pdfMargin)
		f.SetFont("Helvetica", "", 8)
		f.SetTextColor(110, 110, 110)
		f.CellFormat(0, 5, footer, "", 0, "L", false, 0, "")
		f.CellFormat(0, 5, fmt.Sprintf("Page %d of {nb}", f.PageNo()), "", 0, "R", false, 0, "")
		f.SetTextColor(0, 0, 0)
	})
	f.AddPage()
	p := &pdfWriter{f: f}
	p.write(d)
	if err := f.Output(w); err != nil {
		return fmt.Errorf("render pdf: %w", err)
	}
	return nil
}

type pdfWriter struct{ f *fpdf.Fpdf }

func (p *pdfWriter) width() float64 {
	w, _ := p.f.GetPageSize()
	return w - 2*pdfMargin
}

func (p *pdfWriter) bottom() float64 {
	_, h := p.f.GetPageSize()
	return h - pdfMargin - 5
}

// room starts a new page unless h millimetres fit on this one.
func (p *pdfWriter) room(h float64) {
	if p.f.GetY()+h > p.bottom() {
		p.f.AddPage()
	}
}

func (p *pdfWriter) write(d *Document) {
	f := p.f
	f.SetFont("Helvetica", "B", 18)
	f.MultiCell(0, 8, pdfText(d.Title), "", "L", false)
	if d.Subtitle != "" {
		f.SetFont("Helvetica", "", 12)
		f.SetTextColor(80, 80, 80)
		f.MultiCell(0, 6, pdfText(d.Subtitle), "", "L", false)
		f.SetTextColor(0, 0, 0)
	}
	f.Ln(2)
	p.facts(d.Meta, 8.5)
	for _, s := range d.Sections {
		f.Ln(4)
		p.room(30)
		f.SetFont("Helvetica", "B", 13)
		f.SetTextColor(0x1f, 0x4e, 0x79)
		f.MultiCell(0, 6.5, pdfText(s.Heading), "", "L", false)
		f.SetTextColor(0, 0, 0)
		y := f.GetY()
		f.SetDrawColor(0x1f, 0x77, 0xb4)
		f.SetLineWidth(0.5)
		f.Line(pdfMargin, y, pdfMargin+p.width(), y)
		f.SetLineWidth(0.2)
		f.Ln(2)
		for _, b := range s.Blocks {
			switch b := b.(type) {
			case Paragraph:
				f.SetFont("Helvetica", "", 10)
				f.MultiCell(0, pdfLine, pdfText(b.Text), "", "L", false)
				f.Ln(1.5)
			case Facts:
				p.facts(b.Items, 9.5)
			case *Table:
				p.table(b)
			case *Chart:
				p.chart(b)
			}
		}
	}
}

func (p *pdfWriter) facts(items []Fact, size float64) {
	f := p.f
	labelW := 0.0
	f.SetFont("Helvetica", "B", size)
	for _, it := range items {
		labelW = math.Max(labelW, f.GetStringWidth(pdfText(it.Label))+3)
	}
	labelW = math.Min(labelW, p.width()*0.4)
	for _, it := range items {
		f.SetFont("Helvetica", "", size)
		lines := f.SplitLines([]byte(pdfText(it.Value.String())), p.width()-labelW)
		h := float64(max(len(lines), 1)) * pdfLine
		p.room(h)
		y := f.GetY()
		f.SetFont("Helvetica", "B", size)
		f.CellFormat(labelW, pdfLine, pdfText(it.Label), "", 0, "L", false, 0, "")
		f.SetFont("Helvetica", "", size)
		f.SetXY(pdfMargin+labelW, y)
		f.MultiCell(p.width()-labelW, pdfLine, pdfText(it.Value.String()), "", "L", false)
	}
	f.Ln(1.5)
}

func (p *pdfWriter) table(t *Table) {
	f := p.f
	if t.Caption != "" {
		p.room(3 * pdfCellLine)
		f.SetFont("Helvetica", "B", 10)
		f.MultiCell(0, pdfLine+0.6, pdfText(t.Caption), "", "L", false)
	}
	widths := p.columnWidths(t)
	header := func() {
		f.SetFont("Helvetica", "B", 8.5)
		f.SetFillColor(0xee, 0xf3, 0xf8)
		f.SetDrawColor(0xcc, 0xcc, 0xcc)
		p.row(widths, cellsOf(t.Columns), nil, true)
	}
	p.room(3 * pdfCellLine)
	header()
	for _, r := range t.Rows {
		texts := make([]string, len(r.Cells))
		for i, c := range r.Cells {
			texts[i] = pdfText(c.String())
		}
		style := ""
		if r.Exception {
			style = "B"
			f.SetFillColor(0xfd, 0xe8, 0xe8)
		}
		f.SetFont("Helvetica", style, 8.5)
		if h := p.rowHeight(widths, texts); f.GetY()+h > p.bottom() {
			f.AddPage()
			header()
			f.SetFont("Helvetica", style, 8.5)
			if r.Exception {
				f.SetFillColor(0xfd, 0xe8, 0xe8)
			}
		}
		aligns := make([]string, len(r.Cells))
		for i, c := range r.Cells {
			aligns[i] = "L"
			if c.kind == Integer || c.kind == Decimal {
				aligns[i] = "R"
			}
		}
		p.row(widths, texts, aligns, r.Exception)
	}
	f.Ln(3)
}

func cellsOf(cols []Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = pdfText(c.Name)
	}
	return out
}

// columnWidths sizes columns by their widest text among the header and the first rows, then fits
// them to the page: a narrower page shrinks the columns with room to spare, never a column below
// its header's longest word (so headers do not break inside words) unless even those do not fit.
func (p *pdfWriter) columnWidths(t *Table) []float64 {
	f := p.f
	w := make([]float64, len(t.Columns))
	floor := make([]float64, len(t.Columns))
	f.SetFont("Helvetica", "B", 8.5)
	for i, c := range t.Columns {
		floor[i] = pdfMinCol
		for _, word := range strings.Fields(pdfText(c.Name)) {
			floor[i] = math.Max(floor[i], f.GetStringWidth(word)+3)
		}
	}
	f.SetFont("Helvetica", "", 8.5)
	for i, c := range t.Columns {
		// Times and dates are short and unbreakable: they keep their width too.
		switch c.Kind {
		case Time:
			floor[i] = math.Max(floor[i], f.GetStringWidth("2006-01-02T15:04:05Z")+3)
		case Date:
			floor[i] = math.Max(floor[i], f.GetStringWidth("2006-01-02")+3)
		}
		w[i] = floor[i]
	}
	for ri, r := range t.Rows {
		if ri == pdfMeasure {
			break
		}
		for i, c := range r.Cells {
			w[i] = math.Max(w[i], math.Min(f.GetStringWidth(pdfText(c.String()))+3, 80))
		}
	}
	total, floors := 0.0, 0.0
	for i := range w {
		total += w[i]
		floors += floor[i]
	}
	avail := p.width()
	switch {
	case total <= avail:
		for i := range w {
			w[i] *= avail / total
		}
	case floors <= avail:
		// Take the excess from each column's room above its floor, in proportion.
		room := total - floors
		for i := range w {
			w[i] -= (w[i] - floor[i]) * (total - avail) / room
		}
	default:
		for i := range w {
			w[i] = floor[i] * avail / floors
		}
	}
	return w
}

func (p *pdfWriter) rowHeight(widths []float64, texts []string) float64 {
	n := 1
	for i, s := range texts {
		n = max(n, len(p.f.SplitLines([]byte(s), widths[i])))
	}
	return float64(n)*pdfCellLine + 1
}

// row draws one table row: every cell framed at the row's full height, its text wrapped.
func (p *pdfWriter) row(widths []float64, texts, aligns []string, fill bool) {
	f := p.f
	h := p.rowHeight(widths, texts)
	x, y := pdfMargin, f.GetY()
	for i, s := range texts {
		style := "D"
		if fill {
			style = "FD"
		}
		f.Rect(x, y, widths[i], h, style)
		align := "L"
		if aligns != nil {
			align = aligns[i]
		}
		for li, line := range f.SplitLines([]byte(s), widths[i]) {
			f.SetXY(x, y+0.5+float64(li)*pdfCellLine)
			f.CellFormat(widths[i], pdfCellLine, string(line), "", 0, align, false, 0, "")
		}
		x += widths[i]
	}
	f.SetXY(pdfMargin, y+h)
}

// chart draws the chart with lines and rectangles, the same geometry as the SVG.
func (p *pdfWriter) chart(c *Chart) {
	f := p.f
	p.room(pdfChartH + 22)
	f.SetFont("Helvetica", "B", 10)
	f.MultiCell(0, pdfLine+0.6, pdfText(c.Title), "", "L", false)
	plot := c.plan(pdfMaxXLabels)
	left, top := pdfMargin+16, f.GetY()+2
	pw, ph := p.width()-18, pdfChartH-18
	py := func(v float64) float64 { return top + ph*(1-plot.y(v)) }
	f.SetFont("Helvetica", "", 7)
	f.SetLineWidth(0.1)
	for _, t := range plot.ticks {
		f.SetDrawColor(0xdd, 0xdd, 0xdd)
		f.Line(left, py(t), left+pw, py(t))
		label := tickLabel(t)
		f.Text(left-1.5-f.GetStringWidth(label), py(t)+1, label)
	}
	n := len(c.Categories)
	slot := pw / float64(n)
	cx := func(i int) float64 { return left + slot*(float64(i)+0.5) }
	for _, i := range plot.xShown {
		label := pdfText(c.Categories[i])
		f.Text(cx(i)-f.GetStringWidth(label)/2, top+ph+4, label)
	}
	zero := py(math.Max(plot.lo, 0))
	switch c.Kind {
	case Bar:
		bw := slot * 0.8 / float64(len(c.Series))
		for si, s := range c.Series {
			col := seriesColor(si)
			f.SetFillColor(int(col[0]), int(col[1]), int(col[2]))
			for i, v := range s.Values {
				x := left + slot*float64(i) + slot*0.1 + bw*float64(si)
				y0, y1 := math.Min(zero, py(v)), math.Max(zero, py(v))
				f.Rect(x, y0, bw, y1-y0, "F")
			}
		}
	case Line:
		f.SetLineWidth(0.5)
		for si, s := range c.Series {
			col := seriesColor(si)
			f.SetDrawColor(int(col[0]), int(col[1]), int(col[2]))
			for i := 1; i < len(s.Values); i++ {
				f.Line(cx(i-1), py(s.Values[i-1]), cx(i), py(s.Values[i]))
			}
		}
	}
	f.SetLineWidth(0.3)
	f.SetDrawColor(0x33, 0x33, 0x33)
	f.Line(left, top, left, top+ph)
	f.Line(left, zero, left+pw, zero)
	f.SetFont("Helvetica", "", 8)
	xl := pdfText(c.XLabel)
	f.Text(left+pw/2-f.GetStringWidth(xl)/2, top+ph+9, xl)
	yl := pdfText(c.YLabel)
	f.TransformBegin()
	f.TransformRotate(90, pdfMargin+3, top+ph/2)
	f.Text(pdfMargin+3-f.GetStringWidth(yl)/2, top+ph/2, yl)
	f.TransformEnd()
	ly := top + ph + 14
	lx := left
	for si, s := range c.Series {
		col := seriesColor(si)
		f.SetFillColor(int(col[0]), int(col[1]), int(col[2]))
		f.Rect(lx, ly-2.5, 3, 3, "F")
		name := pdfText(s.Name)
		f.Text(lx+4.5, ly, name)
		lx += 4.5 + f.GetStringWidth(name) + 8
	}
	f.SetLineWidth(0.2)
	f.SetXY(pdfMargin, top+pdfChartH)
}

// cp1252High maps the Unicode characters Windows-1252 places at 0x80-0x9F to those bytes.
var cp1252High = map[rune]byte{
	'€': 0x80, '‚': 0x82, 'ƒ': 0x83, '„': 0x84, '…': 0x85, '†': 0x86, '‡': 0x87, 'ˆ': 0x88,
	'‰': 0x89, 'Š': 0x8a, '‹': 0x8b, 'Œ': 0x8c, 'Ž': 0x8e, '‘': 0x91, '’': 0x92, '“': 0x93,
	'”': 0x94, '•': 0x95, '–': 0x96, '—': 0x97, '˜': 0x98, '™': 0x99, 'š': 0x9a, '›': 0x9b,
	'œ': 0x9c, 'ž': 0x9e, 'Ÿ': 0x9f,
}

// pdfText encodes UTF-8 text in Windows-1252 for the standard fonts: a character outside it
// becomes "[U+XXXX]", a control character a space.
func pdfText(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteByte('\n')
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		case r < 0x80 || (r >= 0xa0 && r <= 0xff):
			b.WriteByte(byte(r))
		default:
			if c, ok := cp1252High[r]; ok {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "[U+%04X]", r)
			}
		}
	}
	return b.String()
}
