package render

import (
	"errors"
	"fmt"
	"io"
)

// ErrFormat is returned for a format name this package does not write.
var ErrFormat = errors.New("render: unknown format")

// Format is an output format.
type Format string

// The formats, by the names the CLI and the API accept.
const (
	HTML Format = "html"
	PDF  Format = "pdf"
	XLSX Format = "xlsx"
	CSV  Format = "csv"
	JSON Format = "json"
)

// Formats lists every format, in the order help texts show them.
func Formats() []Format { return []Format{HTML, PDF, XLSX, CSV, JSON} }

// ParseFormat accepts a format name.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats() {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("%w: %q (want html, pdf, xlsx, csv or json)", ErrFormat, truncate(s, 16))
}

// ContentType is the format's media type.
func (f Format) ContentType() string {
	switch f {
	case HTML:
		return "text/html; charset=utf-8"
	case PDF:
		return "application/pdf"
	case XLSX:
		return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	case CSV:
		return "text/csv; charset=utf-8"
	case JSON:
		return "application/json"
	}
	return "application/octet-stream"
}

// Write renders d in format f.
func Write(w io.Writer, f Format, d *Document) error {
	switch f {
	case HTML:
		return WriteHTML(w, d)
	case PDF:
		return WritePDF(w, d)
	case XLSX:
		return WriteXLSX(w, d)
	case CSV:
		return WriteCSV(w, d)
	case JSON:
		return WriteJSON(w, d)
	}
	return fmt.Errorf("%w: %q", ErrFormat, truncate(string(f), 16))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
