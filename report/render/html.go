package render

import (
	"bufio"
	"io"
)

// htmlCSS is the page's only style; nothing is loaded from anywhere.
const htmlCSS = `body{font-family:Helvetica,Arial,sans-serif;margin:2em auto;max-width:60em;color:#222;line-height:1.4}
h1{margin-bottom:.1em}.subtitle{color:#555;margin-top:0}
dl.meta,dl.facts{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
dl dt{font-weight:bold}dl dd{margin:0;font-family:monospace;word-break:break-all}
h2{border-bottom:2px solid #1f77b4;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em;width:100%}
caption{text-align:left;font-weight:bold;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.exception td{background:#fde8e8}tr.exception td:first-child{border-left:4px solid #d62728}
figure{margin:1em 0}svg{max-width:100%;height:auto}`

// WriteHTML writes the Document as one self-contained HTML page: inline CSS, charts as inline
// SVG, no script, no reference to anything outside the page (its Content-Security-Policy also
// forbids loading any). Every string is escaped.
func WriteHTML(w io.Writer, d *Document) error {
	if err := d.Validate(); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	p := func(ss ...string) {
		for _, s := range ss {
			_, _ = bw.WriteString(s)
		}
	}
	p(`<!DOCTYPE html>`, "\n", `<html lang="en"><head><meta charset="utf-8">`,
		`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`,
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		`<title>`, esc(d.Title), `</title><style>`, htmlCSS, `</style></head><body>`, "\n")
	p(`<h1>`, esc(d.Title), `</h1>`)
	if d.Subtitle != "" {
		p(`<p class="subtitle">`, esc(d.Subtitle), `</p>`)
	}
	if len(d.Meta) > 0 {
		p(`<dl class="meta">`)
		for _, f := range d.Meta {
			p(`<dt>`, esc(f.Label), `</dt><dd>`, esc(f.Value.String()), `</dd>`)
		}
		p(`</dl>`)
	}
	p("\n")
	for _, s := range d.Sections {
		p(`<section><h2>`, esc(s.Heading), `</h2>`, "\n")
		for _, b := range s.Blocks {
			switch b := b.(type) {
			case Paragraph:
				p(`<p>`, esc(b.Text), `</p>`, "\n")
			case Facts:
				p(`<dl class="facts">`)
				for _, f := range b.Items {
					p(`<dt>`, esc(f.Label), `</dt><dd>`, esc(f.Value.String()), `</dd>`)
				}
				p(`</dl>`, "\n")
			case *Table:
				p(`<table>`)
				if b.Caption != "" {
					p(`<caption>`, esc(b.Caption), `</caption>`)
				}
				p(`<thead><tr>`)
				for _, c := range b.Columns {
					p(`<th>`, esc(c.Name), `</th>`)
				}
				p(`</tr></thead><tbody>`, "\n")
				for _, r := range b.Rows {
					if r.Exception {
						p(`<tr class="exception">`)
					} else {
						p(`<tr>`)
					}
					for _, c := range r.Cells {
						if c.kind == Integer || c.kind == Decimal {
							p(`<td class="num">`)
						} else {
							p(`<td>`)
						}
						p(esc(c.String()), `</td>`)
					}
					p(`</tr>`, "\n")
				}
				p(`</tbody></table>`, "\n")
			case *Chart:
				p(`<figure>`, svgString(b), `</figure>`, "\n")
			}
		}
		p(`</section>`, "\n")
	}
	p(`</body></html>`, "\n")
	return bw.Flush()
}
