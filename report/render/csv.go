package render

import (
	"encoding/csv"
	"io"
	"strconv"
)

// WriteCSV writes the Document as one CSV file (RFC 4180). Every line has the same first four
// columns, so one file holds every table:
//
//	record,section,caption,exception,values...
//
// record is "meta" (values: label, value), "paragraph" (text), "fact" (label, value), "header"
// (a table's column names, each as name:kind), "row" (a table row; exception is "yes" or ""),
// or "chart" (a chart's data: a header line of the category label and series names, then one
// "row" line per category). Title and subtitle are meta lines. Times are RFC 3339 UTC, dates
// YYYY-MM-DD, decimals exactly as given.
//
// Spreadsheet safety: a text value that begins with = + - @, a tab or a carriage return would run
// as a formula in Excel, LibreOffice or Google Sheets; it is written with a leading apostrophe
// ('=1+1), which those programs show as text. Integer and decimal cells are numbers and written as
// they are (a negative number stays "-5").
func WriteCSV(w io.Writer, d *Document) error {
	if err := d.Validate(); err != nil {
		return err
	}
	cw := csv.NewWriter(w)
	line := func(record, section, caption string, exception bool, values ...string) {
		ex := ""
		if exception {
			ex = "yes"
		}
		_ = cw.Write(append([]string{record, safeCSV(section), safeCSV(caption), ex}, values...))
	}
	line("meta", "", "", false, "title", safeCSV(d.Title))
	if d.Subtitle != "" {
		line("meta", "", "", false, "subtitle", safeCSV(d.Subtitle))
	}
	for _, f := range d.Meta {
		line("meta", "", "", false, safeCSV(f.Label), csvCell(f.Value))
	}
	for _, s := range d.Sections {
		for _, b := range s.Blocks {
			switch b := b.(type) {
			case Paragraph:
				line("paragraph", s.Heading, "", false, safeCSV(b.Text))
			case Facts:
				for _, f := range b.Items {
					line("fact", s.Heading, "", false, safeCSV(f.Label), csvCell(f.Value))
				}
			case *Table:
				head := make([]string, len(b.Columns))
				for i, c := range b.Columns {
					head[i] = safeCSV(c.Name + ":" + c.Kind.String())
				}
				line("header", s.Heading, b.Caption, false, head...)
				for _, r := range b.Rows {
					vals := make([]string, len(r.Cells))
					for i, c := range r.Cells {
						vals[i] = csvCell(c)
					}
					line("row", s.Heading, b.Caption, r.Exception, vals...)
				}
			case *Chart:
				head := []string{safeCSV(b.XLabel)}
				for _, se := range b.Series {
					head = append(head, safeCSV(se.Name))
				}
				line("chart", s.Heading, b.Title, false, head...)
				for i, cat := range b.Categories {
					vals := []string{safeCSV(cat)}
					for _, se := range b.Series {
						vals = append(vals, strconv.FormatFloat(se.Values[i], 'f', -1, 64))
					}
					line("row", s.Heading, b.Title, false, vals...)
				}
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

func csvCell(c Cell) string {
	if c.kind == Text {
		return safeCSV(c.s)
	}
	return c.String()
}

// safeCSV neutralises a text value a spreadsheet would evaluate as a formula (OWASP "CSV
// injection"): a leading = + - @ tab or carriage return gets an apostrophe in front.
func safeCSV(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
