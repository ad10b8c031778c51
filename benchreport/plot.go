package benchreport

import (
	"cmp"
	"fmt"
	"image/color"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/moerun/moerun/internal/atomicfile"
)

// Plot sizes and resolution.
const (
	plotDPI   = 96
	moeWidth  = 16 * vg.Centimeter
	moeHeight = 10 * vg.Centimeter
	tileWidth = 12 * vg.Centimeter
	tileHigh  = 8 * vg.Centimeter
)

var (
	colourOurs  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colourTorch = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colourBound = color.RGBA{R: 0x70, G: 0x70, B: 0x70, A: 0xff}
)

// PlotOption changes how WritePlots draws.
type PlotOption func(*plotConfig)

type plotConfig struct{ dpi int }

// PlotDPI sets the resolution of the PNG files (default 96 dots per inch).
func PlotDPI(dpi int) PlotOption { return func(c *plotConfig) { c.dpi = dpi } }

// WritePlots writes moe-PRESET.png for every preset with data and collectives.png when
// there is a curve, into dir; it returns the file names written. Each file is written
// whole or not at all.
func WritePlots(r Report, dir string, opts ...PlotOption) ([]string, error) {
	cfg := plotConfig{dpi: plotDPI}
	for _, o := range opts {
		o(&cfg)
	}
	var written []string
	var presets []string
	for _, row := range r.MoE.Rows {
		if !slices.Contains(presets, row.Preset) {
			presets = append(presets, row.Preset)
		}
	}
	for _, p := range presets {
		c, err := moePlot(r, p, cfg.dpi)
		if err != nil {
			return written, fmt.Errorf("plot %s: %w", p, err)
		}
		if c == nil {
			continue
		}
		name := "moe-" + safeName(p) + ".png"
		if err := atomicfile.Write(filepath.Join(dir, name), writeTo(c)); err != nil {
			return written, err
		}
		written = append(written, name)
	}
	c, err := collectivesPlot(r.Collectives, cfg.dpi)
	if err != nil {
		return written, fmt.Errorf("plot collectives: %w", err)
	}
	if c != nil {
		if err := atomicfile.Write(filepath.Join(dir, FileCollectivesPNG), writeTo(c)); err != nil {
			return written, err
		}
		written = append(written, FileCollectivesPNG)
	}
	return written, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// moePlot is latency (ms, log) over tokens per rank (log2) for one preset: ours, PyTorch
// and the bound; nil when the preset has no point to draw.
func moePlot(r Report, preset string, dpi int) (io.WriterTo, error) {
	var ours, torch, bound plotter.XYs
	for _, row := range r.MoE.Rows {
		if row.Preset != preset || row.ChunkRows > 0 {
			continue
		}
		x := float64(row.TokensPerRank)
		if row.OursMs != nil && *row.OursMs > 0 {
			ours = append(ours, plotter.XY{X: x, Y: *row.OursMs})
		}
		if row.TorchMs != nil && *row.TorchMs > 0 {
			torch = append(torch, plotter.XY{X: x, Y: *row.TorchMs})
		}
		if row.BoundMs != nil && *row.BoundMs > 0 {
			bound = append(bound, plotter.XY{X: x, Y: *row.BoundMs})
		}
	}
	if len(ours)+len(torch)+len(bound) == 0 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: one MoE layer forward", preset)
	p.X.Label.Text = "tokens per rank"
	p.Y.Label.Text = "ms (median)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.Add(plotter.NewGrid())
	if err := addSeries(p, "ours", ours, colourOurs, false, draw.CircleGlyph{}); err != nil {
		return nil, err
	}
	if err := addSeries(p, "PyTorch grouped_mm", torch, colourTorch, false, draw.SquareGlyph{}); err != nil {
		return nil, err
	}
	if err := addSeries(p, "bound", bound, colourBound, true, draw.TriangleGlyph{}); err != nil {
		return nil, err
	}
	all := slices.Concat(ours, torch, bound)
	xmin, xmax, ymin, ymax := extent(all)
	// Explicit ranges: a log axis must stay positive, and one point must still be a range.
	p.X.Min, p.X.Max = xmin/1.5, xmax*1.5
	p.Y.Min, p.Y.Max = ymin/1.3, ymax*1.3
	p.X.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick {
		return pow2Ticks(min, max, func(v float64) string { return fmt.Sprint(v) })
	})
	p.Y.Tick.Marker = plot.TickerFunc(log125Ticks)
	p.Legend.Top, p.Legend.Left = true, true
	c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(moeWidth, moeHeight), vgimg.UseDPI(dpi))}
	p.Draw(draw.New(c))
	return c, nil
}

// collectivesPlot is one tile per collective: bus bandwidth over size (log2), ours and
// PyTorch; nil without curves.
func collectivesPlot(s CollSection, dpi int) (io.WriterTo, error) {
	var ops []string
	for _, cur := range s.Curves {
		if !slices.Contains(ops, cur.Op) {
			ops = append(ops, cur.Op)
		}
	}
	if len(ops) == 0 {
		return nil, nil
	}
	cols := min(2, len(ops))
	rows := (len(ops) + cols - 1) / cols
	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	for i, op := range ops {
		p := plot.New()
		p.Title.Text = op
		p.X.Label.Text = "size (whole buffer)"
		p.Y.Label.Text = "bus bandwidth GB/s"
		p.X.Scale = plot.LogScale{}
		p.Add(plotter.NewGrid())
		var all plotter.XYs
		for _, cur := range s.Curves {
			if cur.Op != op {
				continue
			}
			xy := make(plotter.XYs, len(cur.SizeBytes))
			for j := range cur.SizeBytes {
				xy[j] = plotter.XY{X: float64(cur.SizeBytes[j]), Y: cur.BusBW[j]}
			}
			name, colour, glyph := "ours", colourOurs, draw.GlyphDrawer(draw.CircleGlyph{})
			if cur.Impl == "torch" {
				name, colour, glyph = "PyTorch", colourTorch, draw.SquareGlyph{}
			}
			if err := addSeries(p, name, xy, colour, false, glyph); err != nil {
				return nil, err
			}
			all = append(all, xy...)
		}
		xmin, xmax, _, ymax := extent(all)
		p.X.Min, p.X.Max = xmin/1.4, xmax*1.4
		p.Y.Min, p.Y.Max = 0, max(ymax*1.1, 1)
		p.X.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick { return pow2Ticks(min, max, shortBytes) })
		p.Y.Tick.Marker = plot.TickerFunc(linearTicks)
		p.Legend.Top, p.Legend.Left = true, true
		plots[i/cols][i%cols] = p
	}
	c := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(vg.Length(cols)*tileWidth, vg.Length(rows)*tileHigh), vgimg.UseDPI(dpi))}
	dc := draw.New(c)
	t := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Centimeter, PadY: vg.Centimeter,
		PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	canvases := plot.Align(plots, t, dc)
	for j := range plots {
		for i, p := range plots[j] {
			if p != nil {
				p.Draw(canvases[j][i])
			}
		}
	}
	return c, nil
}

func addSeries(p *plot.Plot, name string, xy plotter.XYs, colour color.Color, dashed bool, glyph draw.GlyphDrawer) error {
	if len(xy) == 0 {
		return nil
	}
	slices.SortFunc(xy, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
	l, s, err := plotter.NewLinePoints(xy)
	if err != nil {
		return err
	}
	l.Color, s.Color, s.Shape = colour, colour, glyph
	l.Width = vg.Points(1.5)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

func extent(xy plotter.XYs) (xmin, xmax, ymin, ymax float64) {
	xmin, ymin = math.Inf(1), math.Inf(1)
	xmax, ymax = math.Inf(-1), math.Inf(-1)
	for _, p := range xy {
		xmin, xmax = min(xmin, p.X), max(xmax, p.X)
		ymin, ymax = min(ymin, p.Y), max(ymax, p.Y)
	}
	return
}

// pow2Ticks puts a tick at every power of two in [lo, hi], labelled at no more than
// about seven of them, the largest always among them.
func pow2Ticks(lo, hi float64, label func(float64) string) []plot.Tick {
	if !(lo > 0 && hi >= lo) || math.IsInf(hi, 0) {
		return nil
	}
	e0, e1 := int(math.Ceil(math.Log2(lo))), int(math.Floor(math.Log2(hi)))
	step := max(1, (e1-e0+6)/7)
	var ticks []plot.Tick
	for e := e0; e <= e1; e++ {
		v := math.Ldexp(1, e)
		t := plot.Tick{Value: v}
		if (e1-e)%step == 0 {
			t.Label = label(v)
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// log125Ticks labels 1, 2 and 5 times the powers of ten in [lo, hi], with minor ticks at
// the other integers times them; when fewer than two labels fall in range, every tick
// is labelled.
func log125Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0 && hi >= lo) || math.IsInf(hi, 0) {
		return nil
	}
	var ticks []plot.Tick
	labelled := 0
	for e := int(math.Floor(math.Log10(lo))); e <= int(math.Ceil(math.Log10(hi))); e++ {
		for m := 1; m < 10; m++ {
			v := float64(m) * math.Pow(10, float64(e))
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = fmt.Sprintf("%g", v)
				labelled++
			}
			ticks = append(ticks, t)
		}
	}
	if labelled < 2 {
		for i := range ticks {
			ticks[i].Label = fmt.Sprintf("%.3g", ticks[i].Value)
		}
	}
	return ticks
}

// linearTicks labels about five round values (1, 2 or 5 times a power of ten apart) in
// [lo, hi].
func linearTicks(lo, hi float64) []plot.Tick {
	if !(hi > lo) || math.IsInf(hi-lo, 0) {
		return []plot.Tick{{Value: lo, Label: fmt.Sprintf("%g", lo)}}
	}
	raw := (hi - lo) / 5
	step := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*step >= raw {
			step *= m
			break
		}
	}
	var ticks []plot.Tick
	for i := math.Ceil(lo / step); i*step <= hi; i++ {
		v := i * step
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', -1, 64)})
	}
	return ticks
}

// shortBytes writes a power-of-two size as 8K, 16M, 1G.
func shortBytes(v float64) string {
	n := int64(v)
	for _, u := range []struct {
		shift int
		name  string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprint(n)
}

// writeTo adapts a canvas (an io.WriterTo) to atomicfile.Write.
func writeTo(c io.WriterTo) func(io.Writer) error {
	return func(w io.Writer) error { _, err := c.WriteTo(w); return err }
}
