// Package render owns the report document model and its renderers: HTML (self-contained, inline
// CSS and SVG charts), PDF (vector, in process), XLSX (typed cells), CSV and JSON. Every report of
// tunnelplane (compliance now, usage and chargeback later) builds a Document and hands it here,
// so the formats look and behave alike.
//
// It must not know where a report's numbers come from: no database, no event types, no
// authorization. A renderer writes only what the Document holds, escapes every string for its
// format (HTML/SVG text, CSV formula prefixes) and refers to nothing outside the file it writes.
package render
