package render

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/xuri/excelize/v2"
)

// xlsx number formats: dates and times are date cells (a serial number with a date format), in
// UTC, which the column names say.
const (
	xlsxTimeFormat = "yyyy-mm-dd hh:mm:ss"
	xlsxDateFormat = "yyyy-mm-dd"
	xlsxSheetMax   = 31
)

// WriteXLSX writes the Document as an Excel workbook: a sheet "Report" with the title and
// metadata, then one sheet per section holding its paragraphs, facts, tables and the data of its
// charts (as tables; the workbook draws no chart). Cells are typed: integers and decimals are
// number cells (a decimal keeps its exact digits in the file and shows its scale), times and
// dates are date cells with a date format, text is a string cell (never a formula, so a leading
// "=" is inert). Exception rows are filled red.
func WriteXLSX(w io.Writer, d *Document) error {
	if err := d.Validate(); err != nil {
		return err
	}
	x := &xlsxWriter{f: excelize.NewFile(), styles: map[xlsxStyleKey]int{}}
	defer x.f.Close()
	if err := x.f.SetSheetName("Sheet1", "Report"); err != nil {
		return fmt.Errorf("render xlsx: %w", err)
	}
	props := &excelize.DocProperties{Title: d.Title, Subject: d.Subtitle, Creator: "tunnelplane"}
	if !d.Generated.IsZero() {
		props.Created = d.Generated.UTC().Format(time.RFC3339)
		props.Modified = props.Created
	}
	if err := x.f.SetDocProps(props); err != nil {
		return fmt.Errorf("render xlsx: %w", err)
	}
	x.sheet, x.row = "Report", 1
	x.put(1, Str(d.Title), xlsxStyleKey{title: true})
	x.row++
	if d.Subtitle != "" {
		x.put(1, Str(d.Subtitle), xlsxStyleKey{})
		x.row++
	}
	x.row++
	for _, f := range d.Meta {
		x.put(1, Str(f.Label), xlsxStyleKey{bold: true})
		x.put(2, f.Value, xlsxStyleKey{})
		x.row++
	}
	x.width(1, 28)
	x.width(2, 70)
	used := map[string]bool{"report": true}
	for i, s := range d.Sections {
		x.sheet, x.row = sheetName(i+1, s.Heading, used), 1
		if _, err := x.f.NewSheet(x.sheet); err != nil {
			return fmt.Errorf("render xlsx: %w", err)
		}
		x.put(1, Str(s.Heading), xlsxStyleKey{title: true})
		x.row += 2
		cols := 2
		for _, b := range s.Blocks {
			switch b := b.(type) {
			case Paragraph:
				x.put(1, Str(b.Text), xlsxStyleKey{})
				x.row += 2
			case Facts:
				for _, f := range b.Items {
					x.put(1, Str(f.Label), xlsxStyleKey{bold: true})
					x.put(2, f.Value, xlsxStyleKey{})
					x.row++
				}
				x.row++
			case *Table:
				cols = max(cols, len(b.Columns))
				if b.Caption != "" {
					x.put(1, Str(b.Caption), xlsxStyleKey{bold: true})
					x.row++
				}
				for i, c := range b.Columns {
					name := c.Name
					if c.Kind == Time {
						name += " (UTC)"
					}
					x.put(i+1, Str(name), xlsxStyleKey{header: true})
				}
				x.row++
				for _, r := range b.Rows {
					for i, c := range r.Cells {
						x.put(i+1, c, xlsxStyleKey{exception: r.Exception})
					}
					x.row++
				}
				x.row++
			case *Chart:
				cols = max(cols, len(b.Series)+1)
				x.put(1, Str(b.Title+" (chart data)"), xlsxStyleKey{bold: true})
				x.row++
				x.put(1, Str(b.XLabel), xlsxStyleKey{header: true})
				for i, s := range b.Series {
					x.put(i+2, Str(s.Name), xlsxStyleKey{header: true})
				}
				x.row++
				for ci, cat := range b.Categories {
					x.put(1, Str(cat), xlsxStyleKey{})
					for i, s := range b.Series {
						x.putFloat(i+2, s.Values[ci])
					}
					x.row++
				}
				x.row++
			}
		}
		for c := 1; c <= cols; c++ {
			x.width(c, 22)
		}
	}
	if x.err != nil {
		return fmt.Errorf("render xlsx: %w", x.err)
	}
	if _, err := x.f.WriteTo(w); err != nil {
		return fmt.Errorf("render xlsx: %w", err)
	}
	return nil
}

type xlsxStyleKey struct {
	kind                                 Kind
	scale                                int
	title, bold, header, exception, plot bool
}

type xlsxWriter struct {
	f      *excelize.File
	sheet  string
	row    int
	styles map[xlsxStyleKey]int
	err    error
}

func (x *xlsxWriter) keep(err error) {
	if err != nil && x.err == nil {
		x.err = err
	}
}

func (x *xlsxWriter) ref(col int) string {
	name, err := excelize.CoordinatesToCellName(col, x.row)
	x.keep(err)
	return name
}

func (x *xlsxWriter) width(col int, w float64) {
	name, err := excelize.ColumnNumberToName(col)
	x.keep(err)
	if err == nil {
		x.keep(x.f.SetColWidth(x.sheet, name, name, w))
	}
}

func (x *xlsxWriter) put(col int, c Cell, k xlsxStyleKey) {
	if x.err != nil {
		return
	}
	ref := x.ref(col)
	switch c.kind {
	case Text:
		x.keep(x.f.SetCellStr(x.sheet, ref, c.s))
	case Integer:
		x.keep(x.f.SetCellInt(x.sheet, ref, c.n))
	case Decimal:
		// Written as the number's own digits: no float conversion on the way into the file.
		x.keep(x.f.SetCellDefault(x.sheet, ref, c.s))
	case Time, Date:
		x.keep(x.f.SetCellValue(x.sheet, ref, c.t))
	}
	k.kind, k.scale = c.kind, c.Scale()
	x.keep(x.f.SetCellStyle(x.sheet, ref, ref, x.style(k)))
}

func (x *xlsxWriter) putFloat(col int, v float64) {
	ref := x.ref(col)
	x.keep(x.f.SetCellFloat(x.sheet, ref, v, -1, 64))
	x.keep(x.f.SetCellStyle(x.sheet, ref, ref, x.style(xlsxStyleKey{plot: true})))
}

func (x *xlsxWriter) style(k xlsxStyleKey) int {
	if id, ok := x.styles[k]; ok {
		return id
	}
	s := &excelize.Style{Alignment: &excelize.Alignment{Vertical: "top"}}
	switch k.kind {
	case Time:
		f := xlsxTimeFormat
		s.CustomNumFmt = &f
	case Date:
		f := xlsxDateFormat
		s.CustomNumFmt = &f
	case Decimal:
		f := "0"
		if k.scale > 0 {
			f += "." + strings.Repeat("0", k.scale)
		}
		s.CustomNumFmt = &f
	case Integer:
		s.NumFmt = 1 // "0"
	case Text:
		s.Alignment.WrapText = true
	}
	switch {
	case k.title:
		s.Font = &excelize.Font{Bold: true, Size: 14}
		s.Alignment.WrapText = false
	case k.bold:
		s.Font = &excelize.Font{Bold: true}
		s.Alignment.WrapText = false
	case k.header:
		s.Font = &excelize.Font{Bold: true}
		s.Fill = excelize.Fill{Type: "pattern", Pattern: 1, Color: []string{"EEF3F8"}}
	case k.exception:
		s.Fill = excelize.Fill{Type: "pattern", Pattern: 1, Color: []string{"FDE8E8"}}
	}
	id, err := x.f.NewStyle(s)
	x.keep(err)
	x.styles[k] = id
	return id
}

// sheetName makes a valid, unique sheet name from a section heading: Excel allows 31 characters
// and none of []:*?/\ .
func sheetName(n int, heading string, used map[string]bool) string {
	clean := strings.Map(func(r rune) rune {
		if strings.ContainsRune(`[]:*?/\'`, r) || r < 0x20 {
			return ' '
		}
		return r
	}, heading)
	name := strconv.Itoa(n) + " " + strings.TrimSpace(clean)
	for r := []rune(name); len(r) > xlsxSheetMax; r = r[:xlsxSheetMax] {
		name = strings.TrimSpace(string(r[:xlsxSheetMax]))
	}
	for used[strings.ToLower(name)] {
		name = strconv.Itoa(n) + "-" + name
		if r := []rune(name); len(r) > xlsxSheetMax {
			name = string(r[:xlsxSheetMax])
		}
	}
	used[strings.ToLower(name)] = true
	return name
}
