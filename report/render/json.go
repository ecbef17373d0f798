package render

import (
	"encoding/json"
	"io"
	"time"
)

// JSONSchema names the layout WriteJSON writes; it changes only when the layout does.
const JSONSchema = "tunnelplane.report.v1"

// WriteJSON writes the Document in this layout (field order fixed, no other fields):
//
//	{"schema": "tunnelplane.report.v1", "title": s, "subtitle": s, "generated": RFC 3339,
//	 "meta": [{"label": s, "kind": k, "value": v}],
//	 "sections": [{"heading": s, "blocks": [
//	   {"type": "paragraph", "text": s}
//	   {"type": "facts", "items": [{"label": s, "kind": k, "value": v}]}
//	   {"type": "table", "caption": s, "columns": [{"name": s, "kind": k}],
//	    "rows": [{"exception": bool, "cells": [v]}]}
//	   {"type": "chart", "kind": "line"|"bar", "title": s, "x_label": s, "y_label": s,
//	    "categories": [s], "series": [{"name": s, "values": [number]}]}]}]}
//
// A value v is by its kind k: "integer" a JSON number, "decimal" a string of its exact digits,
// "time" an RFC 3339 string in UTC, "date" "YYYY-MM-DD", "text" a string, "empty" null. A
// table cell's kind is its column's (or empty).
func WriteJSON(w io.Writer, d *Document) error {
	if err := d.Validate(); err != nil {
		return err
	}
	out := jsonDoc{Schema: JSONSchema, Title: d.Title, Subtitle: d.Subtitle, Meta: jsonFacts(d.Meta), Sections: []jsonSection{}}
	if !d.Generated.IsZero() {
		out.Generated = d.Generated.UTC().Format(time.RFC3339)
	}
	for _, s := range d.Sections {
		js := jsonSection{Heading: s.Heading, Blocks: []any{}}
		for _, b := range s.Blocks {
			switch b := b.(type) {
			case Paragraph:
				js.Blocks = append(js.Blocks, jsonParagraph{Type: "paragraph", Text: b.Text})
			case Facts:
				js.Blocks = append(js.Blocks, jsonFactList{Type: "facts", Items: jsonFacts(b.Items)})
			case *Table:
				jt := jsonTable{Type: "table", Caption: b.Caption, Columns: make([]jsonColumn, len(b.Columns)), Rows: make([]jsonRow, len(b.Rows))}
				for i, c := range b.Columns {
					jt.Columns[i] = jsonColumn{Name: c.Name, Kind: c.Kind.String()}
				}
				for i, r := range b.Rows {
					cells := make([]any, len(r.Cells))
					for j, c := range r.Cells {
						cells[j] = jsonValue(c)
					}
					jt.Rows[i] = jsonRow{Exception: r.Exception, Cells: cells}
				}
				js.Blocks = append(js.Blocks, jt)
			case *Chart:
				jc := jsonChart{Type: "chart", Kind: "line", Title: b.Title, XLabel: b.XLabel, YLabel: b.YLabel, Categories: b.Categories}
				if b.Kind == Bar {
					jc.Kind = "bar"
				}
				for _, s := range b.Series {
					jc.Series = append(jc.Series, jsonSeries(s))
				}
				js.Blocks = append(js.Blocks, jc)
			}
		}
		out.Sections = append(out.Sections, js)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

type jsonDoc struct {
	Schema    string        `json:"schema"`
	Title     string        `json:"title"`
	Subtitle  string        `json:"subtitle,omitempty"`
	Generated string        `json:"generated,omitempty"`
	Meta      []jsonFact    `json:"meta"`
	Sections  []jsonSection `json:"sections"`
}

type jsonFact struct {
	Label string `json:"label"`
	Kind  string `json:"kind"`
	Value any    `json:"value"`
}

type jsonSection struct {
	Heading string `json:"heading"`
	Blocks  []any  `json:"blocks"`
}

type jsonParagraph struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type jsonFactList struct {
	Type  string     `json:"type"`
	Items []jsonFact `json:"items"`
}

type jsonColumn struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

type jsonRow struct {
	Exception bool  `json:"exception"`
	Cells     []any `json:"cells"`
}

type jsonTable struct {
	Type    string       `json:"type"`
	Caption string       `json:"caption"`
	Columns []jsonColumn `json:"columns"`
	Rows    []jsonRow    `json:"rows"`
}

type jsonSeries struct {
	Name   string    `json:"name"`
	Values []float64 `json:"values"`
}

type jsonChart struct {
	Type       string       `json:"type"`
	Kind       string       `json:"kind"`
	Title      string       `json:"title"`
	XLabel     string       `json:"x_label"`
	YLabel     string       `json:"y_label"`
	Categories []string     `json:"categories"`
	Series     []jsonSeries `json:"series"`
}

func jsonFacts(fs []Fact) []jsonFact {
	out := make([]jsonFact, len(fs))
	for i, f := range fs {
		out[i] = jsonFact{Label: f.Label, Kind: f.Value.kind.String(), Value: jsonValue(f.Value)}
	}
	return out
}

func jsonValue(c Cell) any {
	switch c.kind {
	case Empty:
		return nil
	case Integer:
		return c.n
	}
	return c.String()
}
