package render

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// ErrInvalid is returned for a Document a renderer refuses (see Document.Validate).
var ErrInvalid = errors.New("render: invalid document")

// Bounds on what a Document may hold: a report is built from the log, whose strings come from
// callers, so a renderer must not be asked to lay out unbounded text.
const (
	MaxTextLen    = 4096
	MaxSections   = 1000
	MaxTableRows  = 1_000_000
	MaxColumns    = 64
	MaxChartPoint = 10_000
)

// Document is one report: a title, metadata lines (log positions, checkpoint, window) and
// sections in order.
type Document struct {
	Title    string
	Subtitle string
	// Generated is when the report was made; the PDF and XLSX files carry it as their creation
	// date (so the same Document renders to the same bytes).
	Generated time.Time
	Meta      []Fact
	Sections  []Section
}

// Fact is a labelled value: a metadata line or one item of a key-value list.
type Fact struct {
	Label string
	Value Cell
}

// Section is a heading and its blocks, in order.
type Section struct {
	Heading string
	Blocks  []Block
}

// Block is a Paragraph, Facts, *Table or *Chart.
type Block interface{ block() }

// Paragraph is a run of text.
type Paragraph struct{ Text string }

// Facts is a key-value list.
type Facts struct{ Items []Fact }

// Column is a table column: its name and the kind every cell in it has (or Empty).
type Column struct {
	Name string
	Kind Kind
}

// Row is one table row. An Exception row is one an auditor reads first: renderers mark it.
type Row struct {
	Cells     []Cell
	Exception bool
}

// Table is a captioned table of typed cells.
type Table struct {
	Caption string
	Columns []Column
	Rows    []Row
}

// ChartKind is how a chart draws its series.
type ChartKind int

const (
	// Line draws each series as a polyline over the categories.
	Line ChartKind = iota + 1
	// Bar draws each category as a group of bars, one per series.
	Bar
)

// Chart plots series of values over labelled categories (the x axis).
type Chart struct {
	Title      string
	Kind       ChartKind
	XLabel     string
	YLabel     string
	Categories []string
	Series     []Series
}

// Series is one named line or bar group; Values has one value per category.
type Series struct {
	Name   string
	Values []float64
}

func (Paragraph) block() {}
func (Facts) block()     {}
func (*Table) block()    {}
func (*Chart) block()    {}

// Validate reports every problem of the Document, joined: a renderer refuses to write half a file.
func (d *Document) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	checkText := func(where, s string) {
		if !utf8.ValidString(s) {
			bad("%s: text is not UTF-8", where)
		}
		if len(s) > MaxTextLen {
			bad("%s: text longer than %d bytes", where, MaxTextLen)
		}
	}
	checkFact := func(where string, f Fact) {
		checkText(where, f.Label)
		if err := f.Value.validate(); err != nil {
			bad("%s: %w", where, err)
		}
	}
	checkText("title", d.Title)
	checkText("subtitle", d.Subtitle)
	for i, f := range d.Meta {
		checkFact(fmt.Sprintf("meta %d", i), f)
	}
	if len(d.Sections) > MaxSections {
		bad("more than %d sections", MaxSections)
	}
	for si, s := range d.Sections {
		where := fmt.Sprintf("section %d", si)
		checkText(where, s.Heading)
		for bi, b := range s.Blocks {
			w := fmt.Sprintf("%s block %d", where, bi)
			switch b := b.(type) {
			case Paragraph:
				checkText(w, b.Text)
			case Facts:
				for i, f := range b.Items {
					checkFact(fmt.Sprintf("%s fact %d", w, i), f)
				}
			case *Table:
				if b == nil {
					bad("%s: nil table", w)
					continue
				}
				errs = append(errs, b.validate(w)...)
			case *Chart:
				if b == nil {
					bad("%s: nil chart", w)
					continue
				}
				errs = append(errs, b.validate(w)...)
			default:
				bad("%s: unknown block %T", w, b)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

func (t *Table) validate(where string) []error {
	var errs []error
	if len(t.Columns) == 0 || len(t.Columns) > MaxColumns {
		errs = append(errs, fmt.Errorf("%s: a table has 1 to %d columns", where, MaxColumns))
	}
	if len(t.Rows) > MaxTableRows {
		errs = append(errs, fmt.Errorf("%s: more than %d rows", where, MaxTableRows))
	}
	if !utf8.ValidString(t.Caption) || len(t.Caption) > MaxTextLen {
		errs = append(errs, fmt.Errorf("%s: caption not UTF-8 or too long", where))
	}
	for _, c := range t.Columns {
		if !utf8.ValidString(c.Name) || len(c.Name) > MaxTextLen {
			errs = append(errs, fmt.Errorf("%s: column name not UTF-8 or too long", where))
		}
	}
	for ri, r := range t.Rows {
		if len(r.Cells) != len(t.Columns) {
			errs = append(errs, fmt.Errorf("%s row %d: %d cells for %d columns", where, ri, len(r.Cells), len(t.Columns)))
			continue
		}
		for ci, c := range r.Cells {
			if err := c.validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s row %d column %d: %w", where, ri, ci, err))
			} else if c.kind != Empty && c.kind != t.Columns[ci].Kind {
				errs = append(errs, fmt.Errorf("%s row %d column %d: a %s cell in a %s column", where, ri, ci, c.kind, t.Columns[ci].Kind))
			}
		}
		if len(errs) > 20 {
			break
		}
	}
	return errs
}

func (c *Chart) validate(where string) []error {
	var errs []error
	if c.Kind != Line && c.Kind != Bar {
		errs = append(errs, fmt.Errorf("%s: unknown chart kind %d", where, c.Kind))
	}
	if len(c.Categories) == 0 || len(c.Categories) > MaxChartPoint {
		errs = append(errs, fmt.Errorf("%s: a chart has 1 to %d categories", where, MaxChartPoint))
	}
	if len(c.Series) == 0 || len(c.Series) > 16 {
		errs = append(errs, fmt.Errorf("%s: a chart has 1 to 16 series", where))
	}
	for _, s := range []string{c.Title, c.XLabel, c.YLabel} {
		if !utf8.ValidString(s) || len(s) > MaxTextLen {
			errs = append(errs, fmt.Errorf("%s: a label is not UTF-8 or too long", where))
		}
	}
	for _, s := range c.Categories {
		if !utf8.ValidString(s) || len(s) > MaxTextLen {
			errs = append(errs, fmt.Errorf("%s: a category is not UTF-8 or too long", where))
			break
		}
	}
	for i, s := range c.Series {
		if len(s.Values) != len(c.Categories) {
			errs = append(errs, fmt.Errorf("%s series %d: %d values for %d categories", where, i, len(s.Values), len(c.Categories)))
		}
		for _, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				errs = append(errs, fmt.Errorf("%s series %d: a value is not finite", where, i))
				break
			}
		}
	}
	return errs
}
