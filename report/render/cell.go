package render

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the type of a cell. Its String is the name JSON and CSV use.
type Kind int

const (
	// Empty is a cell with no value (any column may hold one).
	Empty Kind = iota
	// Text is a string.
	Text
	// Integer is an int64.
	Integer
	// Decimal is an exact decimal number, given as its digits and scale (never a float).
	Decimal
	// Time is an instant, rendered in UTC to the second.
	Time
	// Date is a calendar day, rendered as YYYY-MM-DD.
	Date
)

var kindNames = [...]string{Empty: "empty", Text: "text", Integer: "integer", Decimal: "decimal", Time: "time", Date: "date"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "kind(" + strconv.Itoa(int(k)) + ")"
	}
	return kindNames[k]
}

// Cell is one typed value. Build it with Str, Int, Dec, At, Day or leave it zero (Empty).
type Cell struct {
	kind Kind
	s    string // Text: the text; Decimal: the canonical digits ("-12.50")
	n    int64  // Integer: the value; Decimal: the scale
	t    time.Time
}

// Str is a text cell.
func Str(s string) Cell { return Cell{kind: Text, s: s} }

// Int is an integer cell.
func Int(n int64) Cell { return Cell{kind: Integer, n: n} }

// Dec is an exact decimal cell: digits is the number as text with exactly scale digits after the
// point ("12.50" with scale 2, "-3" with scale 0). Validate refuses anything else.
func Dec(digits string, scale int) Cell { return Cell{kind: Decimal, s: digits, n: int64(scale)} }

// At is an instant (rendered in UTC).
func At(t time.Time) Cell { return Cell{kind: Time, t: t.UTC()} }

// Day is a calendar date (the time of day is dropped).
func Day(t time.Time) Cell {
	y, m, d := t.Date()
	return Cell{kind: Date, t: time.Date(y, m, d, 0, 0, 0, 0, time.UTC)}
}

// Kind is the cell's type.
func (c Cell) Kind() Kind { return c.kind }

// Scale is a Decimal cell's digits after the point (0 for other kinds).
func (c Cell) Scale() int {
	if c.kind != Decimal {
		return 0
	}
	return int(c.n)
}

// String is the cell as text, the same in every format: integers in decimal, decimals as given,
// times as RFC 3339 in UTC, dates as YYYY-MM-DD.
func (c Cell) String() string {
	switch c.kind {
	case Text, Decimal:
		return c.s
	case Integer:
		return strconv.FormatInt(c.n, 10)
	case Time:
		return c.t.Format(time.RFC3339)
	case Date:
		return c.t.Format(time.DateOnly)
	}
	return ""
}

var errDecimal = errors.New("decimal is not [-]digits[.digits] with its scale")

func (c Cell) validate() error {
	switch c.kind {
	case Empty, Integer:
		return nil
	case Text:
		if !utf8.ValidString(c.s) {
			return errors.New("text is not UTF-8")
		}
		if len(c.s) > MaxTextLen {
			return fmt.Errorf("text longer than %d bytes", MaxTextLen)
		}
		return nil
	case Decimal:
		return checkDecimal(c.s, int(c.n))
	case Time, Date:
		if y := c.t.Year(); y < 1900 || y > 9999 {
			return fmt.Errorf("%s outside years 1900-9999", c.kind)
		}
		return nil
	}
	return fmt.Errorf("unknown cell kind %d", c.kind)
}

func checkDecimal(s string, scale int) error {
	if scale < 0 || scale > 18 || len(s) > 40 {
		return errDecimal
	}
	body := strings.TrimPrefix(s, "-")
	whole, frac, hasPoint := strings.Cut(body, ".")
	if whole == "" || (hasPoint && frac == "") || len(frac) != scale || (scale == 0 && hasPoint) {
		return errDecimal
	}
	for _, part := range []string{whole, frac} {
		for _, r := range part {
			if r < '0' || r > '9' {
				return errDecimal
			}
		}
	}
	if len(whole) > 1 && whole[0] == '0' {
		return errDecimal
	}
	return nil
}
