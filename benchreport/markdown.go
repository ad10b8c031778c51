package benchreport

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Markdown writes the report as comparison.md: a summary, tables (a) MoE, (b)
// collectives, (c) start-up, and the notes. A section whose inputs are missing says so in
// one line.
func (r Report) Markdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# moerun beside PyTorch\n\n")
	fmt.Fprintf(&b, "Results: `%s`.", r.Results)
	if len(r.Host) > 0 {
		gpus := make([]string, len(r.Host))
		for i, h := range r.Host {
			gpus[i], _, _ = strings.Cut(h, " (UUID")
		}
		fmt.Fprintf(&b, " %s.", strings.Join(gpus, "; "))
	}
	fmt.Fprintf(&b, " Targets: %d met, %d missed.\n\n", r.Summary.Met, r.Summary.Missed)
	r.moeMarkdown(&b)
	r.collMarkdown(&b)
	r.startupMarkdown(&b)
	if len(r.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// JSON writes the report as comparison.json.
func (r Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

func (r Report) moeMarkdown(b *strings.Builder) {
	s := r.MoE
	b.WriteString("## (a) MoE layer, ms per forward\n\n")
	if len(s.Rows) == 0 {
		fmt.Fprintf(b, "No MoE comparison: %s.\n\n", orNone(s.Missing))
		return
	}
	if s.Missing != "" {
		fmt.Fprintf(b, "Missing: %s.\n\n", s.Missing)
	}
	if s.Layout != "" || s.Device != "" {
		fmt.Fprintf(b, "Ours: %s on %s, median of the timed passes. ", orDash(s.Layout), orDash(s.Device))
	}
	fmt.Fprintf(b, "PyTorch: moe_ref.py with torch._grouped_mm (EP = DP = world). Bound: max(HBM, FLOP) + comm time per GPU. "+
		"Targets: ours < PyTorch on every row; up to %d tokens/rank ours ≤ max(%g×PyTorch, %g×bound); at %d ours ≤ %g×bound; "+
		"a chunked row no slower than the unchunked one.\n\n",
		SmallTokens, SmallTorchShare, SmallBoundFactor, BigTokens, BigBoundFactor)
	t := table{head: []string{"preset", "tokens/rank", "ours ms", "PyTorch ms", "ours/PyTorch", "bound ms", "ours/bound", "TFLOP/s/GPU", "weight GB/s", "target"},
		right: []bool{false, true, true, true, true, true, true, true, true, false}}
	for _, c := range s.Rows {
		bound := num(c.BoundMs, "%.3f")
		if c.BoundMs != nil && c.BoundKind != "" {
			bound += " (" + c.BoundKind + ")"
		}
		ours := num(c.OursMs, "%.3f")
		if c.OursMs == nil && c.Ours == nil {
			ours = "no run"
		}
		t.add(c.Preset, c.Label(), ours, num(c.TorchMs, "%.3f"), num(c.Ratio, "%.2f"), bound,
			num(c.OursOverBound, "%.2f"), sig(c.TFLOPS), num(c.WeightGBps, "%.0f"), orDash(c.Verdict))
	}
	t.write(b)
}

func (r Report) collMarkdown(b *strings.Builder) {
	s := r.Collectives
	b.WriteString("## (b) Collectives\n\n")
	if len(s.Rows) == 0 {
		fmt.Fprintf(b, "No collectives comparison: %s.\n\n", orNone(s.Missing))
		return
	}
	if s.Missing != "" {
		fmt.Fprintf(b, "Missing: %s.\n\n", s.Missing)
	}
	fmt.Fprintf(b, "%d ranks, %s; size is the whole (gathered) buffer for both; time per call; bus bandwidth as nccl-tests defines it. "+
		"Targets: busbw ≥ %g%% of PyTorch's from %s; time ≤ PyTorch's at %s; the -v collectives within %g%% of the equal-block ones.\n\n",
		s.Ranks, orDash(s.DType), 100*BusBWShare, FormatBytes(BusBWFromBytes), FormatBytes(LatencyBytes), 100*(VFactor-1))
	t := table{head: []string{"op", "size", "ours µs", "PyTorch µs", "ours busbw GB/s", "PyTorch busbw GB/s", "busbw ours/PyTorch", "target"},
		right: []bool{false, true, true, true, true, true, true, false}}
	for _, c := range s.Rows {
		v := orDash(c.Verdict)
		if c.Wrong > 0 {
			v += fmt.Sprintf(" (%d wrong elements)", c.Wrong)
		}
		t.add(c.Op, FormatBytes(c.SizeBytes), num(c.OursUS, "%.1f"), num(c.TorchUS, "%.1f"), sig(c.OursBusBW),
			sig(c.TorchBusBW), num(c.BusBWRatio, "%.2f"), v)
	}
	t.write(b)
}

func (r Report) startupMarkdown(b *strings.Builder) {
	s := r.Startup
	b.WriteString("## (c) Start-up")
	if r.Collectives.Ranks > 0 { // the same launch size as the sweep's in bench/gpu.sh
		fmt.Fprintf(b, ", %d ranks", r.Collectives.Ranks)
	}
	b.WriteString("\n\n")
	if s.Moerun == nil && s.Torch == nil {
		fmt.Fprintf(b, "No start-up comparison: %s.\n\n", orNone(s.Missing))
		return
	}
	if s.Missing != "" {
		fmt.Fprintf(b, "Missing: %s.\n\n", s.Missing)
	}
	fmt.Fprintf(b, "Target: ours ≤ %g s.\n\n", StartupLimitS)
	t := table{head: []string{"launcher", "seconds", "measured", "target"}, right: []bool{false, true, false, false}}
	if s.Moerun != nil {
		t.add("moerun", fmt.Sprintf("%.2f", s.Moerun.Seconds), s.Moerun.How, orDash(s.Moerun.Verdict))
	}
	if s.Moerun != nil && s.Moerun.FirstCollectiveSeconds != nil {
		t.add("moerun", fmt.Sprintf("%.2f", *s.Moerun.FirstCollectiveSeconds), "bin/launch started → a first collective (a barrier) done on every rank after that: NCCL connects peers in it", "—")
	}
	if s.Torch != nil {
		t.add("torchrun", fmt.Sprintf("%.2f", s.Torch.Seconds), s.Torch.How, "—")
	}
	t.write(b)
}

// table is a Markdown table; cells may not contain "|".
type table struct {
	head  []string
	right []bool
	rows  [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + strings.ReplaceAll(c, "|", "/") + " |")
		}
		b.WriteString("\n")
	}
	line(t.head)
	sep := make([]string, len(t.head))
	for i := range sep {
		sep[i] = "---"
		if t.right[i] {
			sep[i] = "---:"
		}
	}
	b.WriteString("|" + strings.Join(sep, "|") + "|\n")
	for _, r := range t.rows {
		line(r)
	}
	b.WriteString("\n")
}

func num(v *float64, format string) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf(format, *v)
}

// sig writes a rate (GB/s, TFLOP/s) with three significant digits below 10, one decimal
// above.
func sig(v *float64) string {
	switch {
	case v == nil:
		return "—"
	case *v < 1:
		return fmt.Sprintf("%.3f", *v)
	case *v < 10:
		return fmt.Sprintf("%.2f", *v)
	}
	return fmt.Sprintf("%.1f", *v)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "no input"
	}
	return s
}
