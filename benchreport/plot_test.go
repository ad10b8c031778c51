package benchreport

import (
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// checkPNG decodes file and checks its size.
func checkPNG(t *testing.T, file string, minW, minH int) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if b := img.Bounds(); b.Dx() < minW || b.Dy() < minH {
		t.Errorf("%s: %v, want at least %d×%d", file, b, minW, minH)
	}
}

func TestWritePlots(t *testing.T) {
	t.Parallel() // renders plots: the slowest test under the race detector
	dir := t.TempDir()
	// A low resolution keeps the test fast under the race detector: 16 cm at 40 dpi.
	files, err := WritePlots(fixtureReport(t), dir, PlotDPI(40))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"moe-mixtral.png", "moe-qwen3-30b-a3b.png", "moe-deepseek-v3.png", "collectives.png"}
	if !slices.Equal(files, want) {
		t.Errorf("wrote %q, want %q", files, want)
	}
	for _, f := range files {
		checkPNG(t, filepath.Join(dir, f), 240, 150)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(want) {
		t.Errorf("%d files in the folder, want %d (a temporary file left?)", len(entries), len(want))
	}
}

// TestWritePlotsSparse: one point per series, a series alone, and nothing at all.
func TestWritePlotsSparse(t *testing.T) {
	one, two := 1.0, 0.5
	r := Report{
		MoE: MoESection{Rows: []MoEComparison{
			{Preset: "a/b", TokensPerRank: 1, OursMs: &one, TorchMs: &two},
			{Preset: "torch-only", TokensPerRank: 16, TorchMs: &two},
			{Preset: "nothing", TokensPerRank: 16},
		}},
		Collectives: CollSection{Curves: []Curve{{Op: "all_reduce", Impl: "torch", SizeBytes: []int64{8192}, BusBW: []float64{0.4}}}},
	}
	dir := t.TempDir()
	files, err := WritePlots(r, dir, PlotDPI(40))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"moe-a_b.png", "moe-torch-only.png", "collectives.png"}; !slices.Equal(files, want) {
		t.Fatalf("wrote %q, want %q", files, want)
	}
	for _, f := range files {
		checkPNG(t, filepath.Join(dir, f), 150, 100)
	}
	if files, err := WritePlots(Report{}, dir); err != nil || len(files) != 0 {
		t.Errorf("empty report: wrote %q, %v", files, err)
	}
}

func TestTicks(t *testing.T) {
	var labels []string
	for _, tk := range pow2Ticks(1/1.5, 4096*1.5, func(v float64) string { return shortBytes(v) }) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if want := []string{"1", "4", "16", "64", "256", "1K", "4K"}; !slices.Equal(labels, want) {
		t.Errorf("pow2 labels %q, want %q", labels, want)
	}
	labels = nil
	for _, tk := range log125Ticks(0.2, 7) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if want := []string{"0.2", "0.5", "1", "2", "5"}; !slices.Equal(labels, want) {
		t.Errorf("log labels %q, want %q", labels, want)
	}
	if pow2Ticks(0, 8, shortBytes) != nil || log125Ticks(-1, 8) != nil {
		t.Error("ticks for a log axis that reaches 0")
	}
	labels = nil
	for _, tk := range linearTicks(0, 293) {
		labels = append(labels, tk.Label)
	}
	if want := []string{"0", "100", "200"}; !slices.Equal(labels, want) {
		t.Errorf("linear labels %q, want %q", labels, want)
	}
}
