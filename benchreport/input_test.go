package benchreport

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is a results folder as bench/gpu.sh leaves it, with GPU.md's PyTorch numbers:
// mixtral and qwen3-30b-a3b runs of ours (deepseek-v3's run "failed"), a chunked mixtral
// row, moe_ref.py's output with torchrun's noise and one truncated JSON line, a bf16
// collectives sweep from 8 KiB to 1 GiB, coll_bench.py's output with one garbled line,
// and the start-up times.
const fixture = "testdata/results"

func openFixture(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Open(filepath.Join(fixture, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// near compares seconds and percentages; differences of unix times carry ~1e-7 of rounding.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

func TestParseMoERun(t *testing.T) {
	run, err := ParseMoERun("moe-mixtral.json", openFixture(t, "moe-mixtral.json"))
	if err != nil {
		t.Fatal(err)
	}
	if run.Preset != "mixtral" || !run.MatchRef || run.Layout != "dp2 ep2" || run.Iterations != 20 || len(run.Rows) != 5 {
		t.Fatalf("got preset %q match_ref %v layout %q iterations %d, %d rows", run.Preset, run.MatchRef, run.Layout, run.Iterations, len(run.Rows))
	}
	if run.Layer.Hidden != 4096 || run.Layer.Experts != 8 || run.Layer.TopK != 2 {
		t.Errorf("layer %+v", run.Layer)
	}
	r := run.Rows[4]
	if r.TokensPerRank() != 4096 || r.MsMedian != 5.6 || r.Bound() != 4.25 || r.BoundKind != "flop" ||
		r.TFLOPS() != 515.5 || r.WeightGBps != 251.7 || r.TouchedWeightBytes != 4*3*4096*14336*2 {
		t.Errorf("row 4096: %+v", r)
	}
}

// TestParseMoERunOlderSchema: a file of the worker before the bound fields (and without
// "preset") reads with those fields zero; the bound falls back to its parts, TFLOP/s to
// gflops_per_rank.
func TestParseMoERunOlderSchema(t *testing.T) {
	const old = `{"layer": {"name": "tiny", "hidden_size": 64}, "layout": "dp2 ep2", "backend": "tcp", "device": "cpu",
	  "iterations": 5, "rows": [{"tokens_per_dp_rank": [16, 16], "chunks": 1, "ms_median": 2.5, "ms_min": 2, "ms_max": 3,
	  "comm_share": 0.3, "gflops_per_rank": 1.5, "bound_hbm_ms": 0.5, "bound_flop_ms": 0.7, "bound_comm_ms": 0.25}]}`
	run, err := ParseMoERun("old.json", strings.NewReader(old))
	if err != nil {
		t.Fatal(err)
	}
	r := run.Rows[0]
	if run.Preset != "" || run.MatchRef || run.Layer.Name != "tiny" || r.TokensPerRank() != 16 || r.WeightGBps != 0 {
		t.Errorf("got %+v", run)
	}
	if r.Bound() != 0.95 || r.TFLOPS() != 0.0015 {
		t.Errorf("bound %v (want max(0.5, 0.7)+0.25 = 0.95), TFLOP/s %v (want 0.0015)", r.Bound(), r.TFLOPS())
	}
}

func TestParseMoERunMalformed(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"truncated", "{\"preset\": \"mixtral\",\n \"rows\": [\n {\"ms_median\": 1.2", "unexpected end of JSON input"},
		{"syntax", "{\"preset\": \"mixtral\",\n \"rows\": [\n {\"ms_median\": 1.2,,}]}", "line 3"},
		{"no rows", `{"preset": "mixtral"}`, `no "rows" field`},
		{"a list", `[{"rows": []}]`, "cannot unmarshal array"},
		{"wrong type", `{"rows": [{"ms_median": "fast"}]}`, "line 1"},
		{"empty", ``, "unexpected end of JSON input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMoERun("results/moe-x.json", strings.NewReader(tc.data))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "results/moe-x.json: expected the JSON object of `bin/worker run --json`") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q: want the file, what was expected and %q", msg, tc.want)
			}
		})
	}
}

func TestParseMoERef(t *testing.T) {
	rows, notes, err := ParseMoERef(FileMoERef, openFixture(t, FileMoERef))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 15 {
		t.Fatalf("%d rows, want 15 (3 configs × 5 token counts)", len(rows))
	}
	last := rows[14]
	if last.Config != "deepseek-v3" || last.TokensPerRank != 4096 || last.Ms != 11.75 || last.World != 2 || last.Impl != "torch-grouped_mm" || last.LoopMs != nil {
		t.Errorf("last row %+v", last)
	}
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "moe_ref.txt line 13: skipped a JSON line") {
		t.Errorf("notes %q: want the truncated line 13", notes)
	}
}

func TestParseMoERefLines(t *testing.T) {
	const out = `[rank0]:JSON {"impl": "torch-grouped_mm", "config": "mixtral", "world": 2, "tokens_per_rank": 16, "ms": 1.84, "loop_ms": 2.72, "tflops_per_gpu": 6.1}
JSON {"impl": "torch-grouped_mm", "config": "mixtral", "world": 2, "tokens_per_rank": 0, "ms": 1.0}
  JSON {"config": "mixtral", "tokens_per_rank": 1, "ms": 1.9}
JSONL is not a row
mixtral        T/rank=   16 world=2 grouped_mm    1.840 ms     6.1 TFLOP/s/GPU
`
	rows, notes, err := ParseMoERef("ref.txt", strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].TokensPerRank != 16 || rows[0].LoopMs == nil || *rows[0].LoopMs != 2.72 || rows[1].Ms != 1.9 {
		t.Errorf("rows %+v", rows)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "line 2") {
		t.Errorf("notes %q: want line 2 (no tokens)", notes)
	}
}

func TestParseCollBench(t *testing.T) {
	rows, notes, err := ParseCollBench(FileCollBench, openFixture(t, FileCollBench))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 18 {
		t.Fatalf("%d rows, want 18 (3 collectives × 6 sizes)", len(rows))
	}
	want := TorchColl{Op: "all_gather", SizeBytes: 8192, TimeUS: 20.4, AlgBW: 0.4, BusBW: 0.2}
	if rows[0] != want {
		t.Errorf("first row %+v, want %+v", rows[0], want)
	}
	if r := rows[17]; r.Op != "all_reduce" || r.SizeBytes != 1<<30 || r.BusBW != 331.0 {
		t.Errorf("last row %+v", r)
	}
	if len(notes) != 1 || notes[0] != "coll_bench.txt line 6: skipped an unreadable all_reduce line" {
		t.Errorf("notes %q", notes)
	}
}

func TestParseCollectives(t *testing.T) {
	f, err := ParseCollectives(FileCollectives, openFixture(t, FileCollectives))
	if err != nil {
		t.Fatal(err)
	}
	if f.World.Ranks != 2 || len(f.World.Results) != 6*18 || f.ReadyUnixS != 0 || f.Others != 0 {
		t.Fatalf("ranks %d, %d results, ready %v, others %d", f.World.Ranks, len(f.World.Results), f.ReadyUnixS, f.Others)
	}
	r := f.World.Results[0]
	if r.Op != "all_gather" || r.SizeBytes != 8192 || r.DType != "bf16" || r.TimeUS != 9.2 || r.Wrong != 0 {
		t.Errorf("first result %+v", r)
	}

	const res = `"results": [{"op": "all_reduce", "size_bytes": 8192, "type": "bf16", "time_us": 11.7, "busbw_gbps": 0.7, "ranks": 2}]`
	for _, tc := range []struct {
		name, data string
		ready      float64
		others     int
	}{
		{"the worker's list, two groups", `[{"group": "world", "ranks": 2, ` + res + `}, {"group": "tp", "ranks": 1, "results": []}]`, 0, 1},
		{"one report with ready_unix_s", `{"ready_unix_s": 1764065400.95, "group": "world", ` + res + `}`, 1764065400.95, 0},
		{"reports and ready_unix_s", `{"ready_unix_s": 1764065400.5, "reports": [{"group": "world", ` + res + `}]}`, 1764065400.5, 0},
		{"ready_unix_s in the report", `[{"ready_unix_s": 1764065400.25, ` + res + `}]`, 1764065400.25, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseCollectives("c.json", strings.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if len(f.World.Results) != 1 || f.World.Results[0].TimeUS != 11.7 || f.ReadyUnixS != tc.ready || f.Others != tc.others {
				t.Errorf("got %+v", f)
			}
		})
	}
	for _, tc := range []struct{ name, data, want string }{
		{"no world", `[{"group": "tp", "results": []}]`, "no report of the world group"},
		{"no results", `{"backend": "nccl"}`, `no "results" or "reports" field`},
		{"a number", `42`, "not a JSON list or object"},
		{"truncated", `[{"group": "world", "results": [`, "unexpected end of JSON input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCollectives("out/collectives.json", strings.NewReader(tc.data))
			if err == nil || !strings.HasPrefix(err.Error(), "out/collectives.json: expected the JSON of `bin/worker collectives --json`") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v: want the file, what was expected and %q", err, tc.want)
			}
		})
	}
}

func TestParseTimes(t *testing.T) {
	v, err := ParseUnixTime("s.txt", strings.NewReader("1764065400.100000000\n"))
	if err != nil || v != 1764065400.1 {
		t.Errorf("got %v, %v", v, err)
	}
	if _, err := ParseUnixTime("s.txt", strings.NewReader("yesterday\n")); err == nil || !strings.Contains(err.Error(), `s.txt: expected a unix time in seconds`) {
		t.Errorf("error %v", err)
	}
	ready, ok := ParseReady(strings.NewReader("W1125 noise READY-ish\n[rank0]: warn\nREADY 1764065417.812345\n"))
	if !ok || ready != 1764065417.812345 {
		t.Errorf("READY: got %v, %v", ready, ok)
	}
	if _, ok := ParseReady(strings.NewReader("Traceback (most recent call last):\n")); ok {
		t.Error("READY found in a traceback")
	}
}

func TestLoadFixture(t *testing.T) {
	in, err := Load(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.MoE) != 3 || len(in.Ref) != 15 || in.Coll == nil || len(in.TorchColl) != 18 || len(in.Missing) != 0 {
		t.Fatalf("%d runs, %d ref rows, coll %v, %d torch rows, missing %v", len(in.MoE), len(in.Ref), in.Coll != nil, len(in.TorchColl), in.Missing)
	}
	// Sorted by file name: the chunked mixtral file comes first.
	if c := in.MoE[0]; c.Preset != "mixtral" || c.ChunkRows != 256 || in.MoE[1].ChunkRows != 0 || in.MoE[2].Preset != "qwen3-30b-a3b" {
		t.Errorf("runs %q/%d, %q/%d, %q", c.Preset, c.ChunkRows, in.MoE[1].Preset, in.MoE[1].ChunkRows, in.MoE[2].Preset)
	}
	if len(in.Host) != 2 || !strings.HasPrefix(in.Host[1], "GPU 1: NVIDIA H100 80GB HBM3") {
		t.Errorf("host %q", in.Host)
	}
	s := in.Startup
	if s.MoerunS == nil || !near(*s.MoerunS, 0.85) || !strings.Contains(s.MoerunHow, "ready_unix_s") ||
		s.TorchS == nil || !near(*s.TorchS, 7.812345) || !strings.Contains(s.TorchHow, "READY") {
		t.Errorf("startup %+v", s)
	}
}

// writeFiles makes a results folder of the given files.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadStartup(t *testing.T) {
	for _, tc := range []struct {
		name          string
		files         map[string]string
		moerun, torch float64 // -1: missing
		how           string
	}{
		{"startup.json", map[string]string{FileStartup: `{"moerun_s": 0.9, "torch_s": 7.8}`, FileMoerunStart: "1"}, 0.9, 7.8, "from startup.json"},
		{"comms_ready_unix_s: ready, then a first collective", map[string]string{
			FileMoerunStart: "100", FileMoerunStartup: `[{"group": "world", "results": [], "comms_ready_unix_s": 100.75, "ready_unix_s": 101.0}]`,
			FileTorchStart: "200", FileTorchStartup: "READY 207.5\n"}, 0.75, 7.5, "comms_ready_unix_s"},
		{"no ready_unix_s: until exit", map[string]string{
			FileMoerunStart: "100.5", FileMoerunStartup: `[{"group": "world", "results": []}]`, FileMoerunEnd: "102.0",
			FileTorchStart: "200", FileTorchStartup: "READY 207.5\n"}, 1.5, 7.5, "upper bound"},
		// A failed launch leaves its start and end times but no JSON; a failed torchrun no READY.
		{"both failed", map[string]string{FileMoerunStart: "100", FileMoerunEnd: "100.2", FileTorchStart: "200", FileTorchStartup: "Traceback\n"}, -1, -1, ""},
		{"nothing", map[string]string{}, -1, -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := Load(writeFiles(t, tc.files))
			if err != nil {
				t.Fatal(err)
			}
			s := in.Startup
			check := func(what string, got *float64, want float64, missing string) {
				switch {
				case want < 0 && (got != nil || missing == ""):
					t.Errorf("%s: got %v, missing %q; want a missing reason", what, got, missing)
				case want >= 0 && (got == nil || !near(*got, want)):
					t.Errorf("%s: got %v, want %v (missing %q)", what, got, want, missing)
				}
			}
			check("moerun", s.MoerunS, tc.moerun, in.Missing["startup-moerun"])
			check("torch", s.TorchS, tc.torch, in.Missing["startup-torch"])
			if tc.how != "" && !strings.Contains(s.MoerunHow, tc.how) {
				t.Errorf("how %q, want %q in it", s.MoerunHow, tc.how)
			}
			if first := s.MoerunFirstS; strings.Contains(tc.how, "comms_ready") != (first != nil) || first != nil && !near(*first, 1.0) {
				t.Errorf("first collective %v", first)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "nowhere")); err == nil || !strings.Contains(err.Error(), "nowhere: no such file or directory") {
		t.Errorf("missing folder: %v", err)
	}
	for _, tc := range []struct {
		file, data, want string
	}{
		{"moe-mixtral.json", `{"preset": "mixtral", "rows": [`, "moe-mixtral.json: expected the JSON object of `bin/worker run --json`"},
		{FileCollectives, `{}`, "collectives.json: expected the JSON of `bin/worker collectives --json`"},
		{FileStartup, `{"moerun": 1}`, `startup.json: expected {"moerun_s": seconds, "torch_s": seconds}`},
		{FileMoerunStart, "now", "startup-moerun-start.txt: expected a unix time in seconds"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{tc.file: tc.data})
			_, err := Load(dir)
			if err == nil || !strings.HasPrefix(err.Error(), filepath.Join(dir, tc.want)) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	var pe *fs.PathError
	if _, err := openParse(filepath.Join(dir, "x.json"), ParseMoERun); !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
