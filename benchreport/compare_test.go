package benchreport

import (
	"strings"
	"testing"
)

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		name            string
		value, limit    float64
		atLeast, strict bool
		met             bool
		missedPct       float64
		verdict         string
	}{
		{"time under", 0.9, 1.0, false, false, true, 0, "met"},
		{"time at the limit", 1.0, 1.0, false, false, true, 0, "met"},
		{"time over", 5.6, 5.3125, false, false, false, 5.411764705882351, "missed by 5.4% (t)"},
		{"strict at the limit", 1.0, 1.0, false, true, false, 0, "missed by 0.0% (t)"},
		{"strict under", 0.99, 1.0, false, true, true, 0, "met"},
		{"bandwidth above", 230, 218.25, true, false, true, 0, "met"},
		{"bandwidth short", 215, 218.25, true, false, false, 1.4891179839633474, "missed by 1.5% (t)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := newTarget("t", tc.value, tc.limit, tc.atLeast, tc.strict)
			if got.Met != tc.met || !near(got.MissedPct, tc.missedPct) {
				t.Errorf("met %v missed %v%%, want %v %v%%", got.Met, got.MissedPct, tc.met, tc.missedPct)
			}
			if v := verdict([]Target{got}); v != tc.verdict {
				t.Errorf("verdict %q, want %q", v, tc.verdict)
			}
		})
	}
	// The worst miss names the row's verdict.
	ts := []Target{newTarget("a", 1.1, 1, false, false), newTarget("b", 1.3, 1, false, false), newTarget("c", 0.5, 1, false, false)}
	if v := verdict(ts); v != "missed by 30.0% (b)" {
		t.Errorf("verdict %q", v)
	}
	if v := verdict(nil); v != "" {
		t.Errorf("no targets: verdict %q", v)
	}
}

func fixtureReport(t *testing.T) Report {
	t.Helper()
	in, err := Load(fixture)
	if err != nil {
		t.Fatal(err)
	}
	return Compare(in)
}

func moeRowOf(t *testing.T, r Report, preset string, tokens, chunk int) MoEComparison {
	t.Helper()
	for _, c := range r.MoE.Rows {
		if c.Preset == preset && c.TokensPerRank == tokens && c.ChunkRows == chunk {
			return c
		}
	}
	t.Fatalf("no MoE row %s %d chunk %d", preset, tokens, chunk)
	return MoEComparison{}
}

func collRowOf(t *testing.T, r Report, op string, size int64) CollComparison {
	t.Helper()
	for _, c := range r.Collectives.Rows {
		if c.Op == op && c.SizeBytes == size {
			return c
		}
	}
	t.Fatalf("no collectives row %s %d", op, size)
	return CollComparison{}
}

func TestCompareMoE(t *testing.T) {
	r := fixtureReport(t)
	if n := len(r.MoE.Rows); n != 16 {
		t.Errorf("%d MoE rows, want 16 (3 presets × 5 token counts and one chunked row)", n)
	}
	for _, tc := range []struct {
		preset        string
		tokens, chunk int
		ours, torch   float64
		limits        []float64 // of the row's targets, in order
		verdict       string
	}{
		// ≤ 128 tokens: ours < PyTorch and ours ≤ max(0.5×1.90, 1.15×0.247) = 0.95.
		{"mixtral", 1, 0, 0.27, 1.9, []float64{1.9, 0.95}, "met"},
		// 1024 tokens: only ours < PyTorch.
		{"mixtral", 1024, 0, 1.3, 2.54, []float64{2.54}, "met"},
		// 4096: 5.6 against 1.25 × 4.25 = 5.3125.
		{"mixtral", 4096, 0, 5.6, 6.57, []float64{6.57, 5.3125}, "missed by 5.4% (≤ 1.25×bound)"},
		// The chunked row against the unchunked one: 5.85 / 5.6.
		{"mixtral", 4096, 256, 5.85, 6.57, []float64{5.6}, "missed by 4.5% (chunked ≤ unchunked)"},
		// max(0.5 × 1.89, 1.15 × 0.3) = 0.945; 1.02 / 0.945 = 1.0794.
		{"qwen3-30b-a3b", 16, 0, 1.02, 1.89, []float64{1.89, 0.945}, "missed by 7.9% (≤ max(0.5×PyTorch, 1.15×bound))"},
		{"qwen3-30b-a3b", 4096, 0, 2.4, 2.86, []float64{2.86, 2.5}, "met"},
	} {
		c := moeRowOf(t, r, tc.preset, tc.tokens, tc.chunk)
		if c.OursMs == nil || *c.OursMs != tc.ours || c.TorchMs == nil || *c.TorchMs != tc.torch || c.Ratio == nil || !near(*c.Ratio, tc.ours/tc.torch) {
			t.Errorf("%s: ours %v PyTorch %v ratio %v", c.Label(), c.OursMs, c.TorchMs, c.Ratio)
		}
		if len(c.Targets) != len(tc.limits) {
			t.Errorf("%s %s: targets %+v, want limits %v", tc.preset, c.Label(), c.Targets, tc.limits)
			continue
		}
		for i, lim := range tc.limits {
			if !near(c.Targets[i].Limit, lim) {
				t.Errorf("%s %s: target %q limit %v, want %v", tc.preset, c.Label(), c.Targets[i].Name, c.Targets[i].Limit, lim)
			}
		}
		if c.Verdict != tc.verdict {
			t.Errorf("%s %s: verdict %q, want %q", tc.preset, c.Label(), c.Verdict, tc.verdict)
		}
	}
	q := moeRowOf(t, r, "qwen3-30b-a3b", 16, 0)
	if !near(q.Targets[1].MissedPct, 100*(1.02/0.945-1)) {
		t.Errorf("qwen3 16: missed by %v%%", q.Targets[1].MissedPct)
	}
	// deepseek-v3 has PyTorch's rows only.
	d := moeRowOf(t, r, "deepseek-v3", 128, 0)
	if d.OursMs != nil || d.Ours != nil || d.TorchMs == nil || *d.TorchMs != 4.82 || d.Targets != nil || d.Verdict != "" {
		t.Errorf("deepseek-v3 128: %+v", d)
	}
	if r.Summary != (Summary{Met: 27, Missed: 9}) {
		t.Errorf("summary %+v", r.Summary)
	}
}

func TestCompareCollectives(t *testing.T) {
	r := fixtureReport(t)
	s := r.Collectives
	if s.DType != "bf16" || s.Ranks != 2 || len(s.Rows) != 6*6 || len(s.Curves) != 6+3 {
		t.Fatalf("dtype %q ranks %d, %d rows, %d curves", s.DType, s.Ranks, len(s.Rows), len(s.Curves))
	}
	// At 8 KiB, PyTorch's busbw is recomputed from its time: 8192 B / 20.4 µs × 1/2.
	ag := collRowOf(t, r, "all_gather", 8<<10)
	if !near(*ag.TorchBusBW, 8192/20.4e3/2) || *ag.OursUS != 9.2 || *ag.TorchUS != 20.4 || ag.Verdict != "met" ||
		len(ag.Targets) != 1 || ag.Targets[0].Name != "time ≤ PyTorch" {
		t.Errorf("all_gather 8 KiB: %+v", ag)
	}
	// 128 MiB: 215.024 GB/s against 97% of 134217728 B / 298.3 µs / 2 = 218.22.
	big := collRowOf(t, r, "all_gather", 128<<20)
	torch := float64(128<<20) / 298.3e3 / 2
	if !near(*big.TorchBusBW, torch) || len(big.Targets) != 1 || !near(big.Targets[0].MissedPct, 100*(1-215.024/(0.97*torch))) ||
		big.Verdict != "missed by 1.5% (busbw ≥ 97% of PyTorch)" {
		t.Errorf("all_gather 128 MiB: torch busbw %v, %+v", *big.TorchBusBW, big)
	}
	// 64 KiB and 1 MiB have no target.
	if c := collRowOf(t, r, "all_reduce", 1<<20); c.Targets != nil || c.Verdict != "" || c.BusBWRatio == nil {
		t.Errorf("all_reduce 1 MiB: %+v", c)
	}
	// The -v collectives against the equal-block ones of ours: 13.9 µs against 1.1 × 9.2.
	v := collRowOf(t, r, "all_gather_v", 8<<10)
	if v.TorchUS != nil || len(v.Targets) != 1 || !near(v.Targets[0].Limit, 10.12) || v.Verdict != "missed by 37.4% (time ≤ 1.1×all_gather)" {
		t.Errorf("all_gather_v 8 KiB: %+v", v)
	}
	if c := collRowOf(t, r, "reduce_scatter_v", 8<<10); c.Verdict != "met" || !near(c.Targets[0].Limit, 1.1*8.4) {
		t.Errorf("reduce_scatter_v 8 KiB: %+v", c)
	}
	// A missed -v row brings the lower bound of the uneven blocks: at 2 ranks (3:1) the
	// rank with the smaller block receives 3/4 of the buffer where equal blocks send 1/2.
	found := false
	for _, n := range r.Notes {
		found = found || strings.Contains(n, "in the ratio 3:1)") && strings.Contains(n, "75% of the buffer, against 50%") &&
			strings.Contains(n, "within 1.50× of the equal-block time")
	}
	if !found {
		t.Errorf("no lower-bound note for the -v rows in %q", r.Notes)
	}
	if c := collRowOf(t, r, "broadcast", 1<<30); c.Targets != nil || c.OursBusBW == nil || *c.OursBusBW != 279.999 {
		t.Errorf("broadcast 1 GiB: %+v", c)
	}
}

// TestSizeConvention: ours and coll_bench.py both give the whole (gathered) buffer, and
// commbench rounds the element count of all-gather and reduce-scatter down to a multiple
// of the ranks: on 3 ranks, 8 KiB of bf16 is 4095 elements, 8190 bytes.
func TestSizeConvention(t *testing.T) {
	for _, tc := range []struct {
		ours, theirs int64
		ranks        int
		same         bool
	}{
		{8192, 8192, 2, true},
		{8190, 8192, 3, true},
		{8184, 8192, 3, true}, // float32, 2046 elements… of 2048: within 4 bytes × 3 ranks
		{8180, 8192, 3, false},
		{8194, 8192, 3, false}, // never larger
		{4096, 8192, 2, false},
	} {
		if got := sameSize(tc.ours, tc.theirs, tc.ranks); got != tc.same {
			t.Errorf("sameSize(%d, %d, %d) = %v", tc.ours, tc.theirs, tc.ranks, got)
		}
	}
	in := Inputs{
		Coll: &CollFile{World: CollReport{Group: "world", Ranks: 3, Results: []CollResult{
			{Op: "all_gather", SizeBytes: 8190, DType: "bf16", TimeUS: 10, BusBW: 0.546, Ranks: 3},
			{Op: "all_gather", SizeBytes: 4 << 20, DType: "bf16", TimeUS: 40, BusBW: 69.9, Ranks: 3},
			{Op: "all_gather", SizeBytes: 16<<20 - 2, DType: "bf16", TimeUS: 80, BusBW: 139.8, Ranks: 3},
			{Op: "all_gather", SizeBytes: 16<<20 - 4, DType: "float32", TimeUS: 99, BusBW: 99, Ranks: 3},
		}}},
		TorchColl: []TorchColl{
			{Op: "all_gather", SizeBytes: 8192, TimeUS: 30, BusBW: 0.2},
			{Op: "all_gather", SizeBytes: 16 << 20, TimeUS: 90, BusBW: 124.3},
		},
	}
	var notes []string
	s := compareColl(in, &notes)
	if len(s.Rows) != 2 || len(notes) != 0 {
		t.Fatalf("rows %+v, notes %q: want 8 KiB and 16 MiB only", s.Rows, notes)
	}
	if c := s.Rows[0]; c.SizeBytes != 8192 || *c.OursUS != 10 || *c.TorchUS != 30 || !near(*c.TorchBusBW, 8192/30e3*2/3) {
		t.Errorf("8 KiB row %+v", c)
	}
	if c := s.Rows[1]; c.SizeBytes != 16<<20 || *c.OursUS != 80 || c.Verdict != "met" {
		t.Errorf("16 MiB row %+v (want ours' bf16 row)", c)
	}
	// A world of another size than ours: PyTorch's busbw does not fit; kept as printed.
	in.Coll.World.Ranks = 2
	notes = nil
	s = compareColl(in, &notes)
	if len(notes) != 2 || !strings.Contains(notes[0], "does not fit 2 ranks") || *s.Rows[0].TorchBusBW != 0.2 {
		t.Errorf("notes %q, torch busbw %v", notes, *s.Rows[0].TorchBusBW)
	}
}

func TestCompareMissing(t *testing.T) {
	in, err := Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := Compare(in)
	if len(r.MoE.Rows)+len(r.Collectives.Rows) != 0 || r.Startup.Moerun != nil || r.Summary != (Summary{}) {
		t.Fatalf("report from nothing: %+v", r)
	}
	for what, got := range map[string]string{
		"moe":     r.MoE.Missing,
		"coll":    r.Collectives.Missing,
		"startup": r.Startup.Missing,
	} {
		if got == "" || strings.Contains(got, "\n") {
			t.Errorf("%s: missing %q, want one line", what, got)
		}
	}
	if want := "no moe-PRESET.json in "; !strings.HasPrefix(r.MoE.Missing, want) || !strings.HasSuffix(r.MoE.Missing, "; PyTorch: no moe_ref.txt") {
		t.Errorf("moe missing %q", r.MoE.Missing)
	}

	// Only ours: every row compares with nothing, and the bound targets still apply.
	only := Inputs{MoE: []MoERun{{Preset: "mixtral", Rows: []MoERow{{Tokens: []int{4096, 4096}, MsMedian: 5, BoundMs: 4.5}}}},
		Missing: map[string]string{"ref": "no moe_ref.txt"}}
	r = Compare(only)
	c := r.MoE.Rows[0]
	if r.MoE.Missing != "PyTorch: no moe_ref.txt" || c.Ratio != nil || len(c.Targets) != 1 || c.Verdict != "met" {
		t.Errorf("ours only: missing %q, row %+v", r.MoE.Missing, c)
	}
}
