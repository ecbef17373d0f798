package render

import (
	"fmt"
	"html"
	"io"
	"strconv"
	"strings"
)

// SVG geometry (user units): the plot area sits inside margins for the axis labels and legend.
const (
	svgW, svgH                    = 720.0, 320.0
	svgLeft, svgRight             = 70.0, 20.0
	svgTop, svgBottom             = 40.0, 70.0
	svgMaxXLabels                 = 12
	svgPlotW, svgPlotH            = svgW - svgLeft - svgRight, svgH - svgTop - svgBottom
	svgLegendY                    = svgH - 12
	svgFont                       = `font-family="Helvetica, Arial, sans-serif"`
	svgAxisColor, svgGridColor    = "#333", "#ddd"
	svgTitleSize, svgLabelSize    = 14, 11
	svgLegendSwatch, svgLegendGap = 10.0, 130.0
)

// esc escapes text for XML and HTML alike (& < > ' ").
func esc(s string) string { return html.EscapeString(s) }

func num(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func rgb(c [3]uint8) string { return fmt.Sprintf("#%02x%02x%02x", c[0], c[1], c[2]) }

// WriteSVG writes the chart as a standalone SVG element (no external reference, no script).
func WriteSVG(w io.Writer, c *Chart) error {
	if errs := c.validate("chart"); len(errs) > 0 {
		return fmt.Errorf("%w: %v", ErrInvalid, errs[0])
	}
	_, err := io.WriteString(w, svgString(c))
	return err
}

func svgString(c *Chart) string {
	p := c.plan(svgMaxXLabels)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="%s">`,
		num(svgW), num(svgH), num(svgW), num(svgH), esc(c.Title))
	fmt.Fprintf(&b, `<title>%s</title>`, esc(c.Title))
	fmt.Fprintf(&b, `<text x="%s" y="20" font-size="%d" font-weight="bold" %s>%s</text>`, num(svgLeft), svgTitleSize, svgFont, esc(c.Title))
	py := func(v float64) float64 { return svgTop + svgPlotH*(1-p.y(v)) }
	for _, t := range p.ticks {
		y := py(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, num(svgLeft), num(y), num(svgLeft+svgPlotW), num(y), svgGridColor)
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="%d" text-anchor="end" %s>%s</text>`, num(svgLeft-6), num(y+4), svgLabelSize, svgFont, esc(tickLabel(t)))
	}
	n := len(c.Categories)
	slot := svgPlotW / float64(n)
	cx := func(i int) float64 { return svgLeft + slot*(float64(i)+0.5) }
	for _, i := range p.xShown {
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="%d" text-anchor="middle" %s>%s</text>`, num(cx(i)), num(svgTop+svgPlotH+16), svgLabelSize, svgFont, esc(c.Categories[i]))
	}
	zero := py(max(p.lo, 0))
	switch c.Kind {
	case Bar:
		bw := slot * 0.8 / float64(len(c.Series))
		for si, s := range c.Series {
			for i, v := range s.Values {
				x := svgLeft + slot*float64(i) + slot*0.1 + bw*float64(si)
				y0, y1 := min(zero, py(v)), max(zero, py(v))
				fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s: %s</title></rect>`,
					num(x), num(y0), num(bw), num(y1-y0), rgb(seriesColor(si)), esc(s.Name+" "+c.Categories[i]), esc(tickLabel(v)))
			}
		}
	case Line:
		for si, s := range c.Series {
			pts := make([]string, len(s.Values))
			for i, v := range s.Values {
				pts[i] = num(cx(i)) + "," + num(py(v))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, rgb(seriesColor(si)), strings.Join(pts, " "))
		}
	}
	// Axes last, over the bars.
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, num(svgLeft), num(svgTop), num(svgLeft), num(svgTop+svgPlotH), svgAxisColor)
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, num(svgLeft), num(zero), num(svgLeft+svgPlotW), num(zero), svgAxisColor)
	fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="%d" text-anchor="middle" %s>%s</text>`, num(svgLeft+svgPlotW/2), num(svgTop+svgPlotH+34), svgLabelSize, svgFont, esc(c.XLabel))
	fmt.Fprintf(&b, `<text x="14" y="%s" font-size="%d" text-anchor="middle" transform="rotate(-90 14 %s)" %s>%s</text>`,
		num(svgTop+svgPlotH/2), svgLabelSize, num(svgTop+svgPlotH/2), svgFont, esc(c.YLabel))
	for si, s := range c.Series {
		x := svgLeft + svgLegendGap*float64(si)
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>`, num(x), num(svgLegendY-svgLegendSwatch+1), num(svgLegendSwatch), num(svgLegendSwatch), rgb(seriesColor(si)))
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="%d" %s>%s</text>`, num(x+svgLegendSwatch+4), num(svgLegendY), svgLabelSize, svgFont, esc(s.Name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}
