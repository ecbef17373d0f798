package render

import (
	"math"
	"strconv"
)

// chartPlot is a chart's geometry in abstract units, shared by the SVG and PDF renderers so both
// draw the same picture: the plot area, the y scale and its ticks, the x labels shown.
type chartPlot struct {
	lo, hi float64   // y range of the plot area
	ticks  []float64 // y values with a grid line and a label
	xShown []int     // category indices whose label is drawn (thinned so labels do not overlap)
}

// palette is the series colours (RGB), distinguishable in print and for common colour blindness.
var palette = [][3]uint8{
	{0x1f, 0x77, 0xb4}, {0xff, 0x7f, 0x0e}, {0x2c, 0xa0, 0x2c}, {0xd6, 0x27, 0x28},
	{0x94, 0x67, 0xbd}, {0x8c, 0x56, 0x4b}, {0xe3, 0x77, 0xc2}, {0x7f, 0x7f, 0x7f},
}

func seriesColor(i int) [3]uint8 { return palette[i%len(palette)] }

// plan computes the chart's scale; maxXLabels is how many category labels fit along the axis.
func (c *Chart) plan(maxXLabels int) chartPlot {
	lo, hi := 0.0, 0.0
	for _, s := range c.Series {
		for _, v := range s.Values {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if hi == lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 5)
	p := chartPlot{lo: math.Floor(lo/step) * step, hi: math.Ceil(hi/step) * step}
	for v := p.lo; v <= p.hi+step/2; v += step {
		p.ticks = append(p.ticks, v)
	}
	n := len(c.Categories)
	every := 1
	if maxXLabels > 0 && n > maxXLabels {
		every = (n + maxXLabels - 1) / maxXLabels
	}
	for i := 0; i < n; i += every {
		p.xShown = append(p.xShown, i)
	}
	return p
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	exp := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*exp >= raw {
			return m * exp
		}
	}
	return 10 * exp
}

// y maps a value to a fraction of the plot height from the bottom (0..1).
func (p chartPlot) y(v float64) float64 { return (v - p.lo) / (p.hi - p.lo) }

// tickLabel formats a tick value without float noise (0.30000000000000004).
func tickLabel(v float64) string {
	if math.Abs(v) < 1e-12 {
		return "0"
	}
	if math.Abs(v) >= 1e6 {
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}
