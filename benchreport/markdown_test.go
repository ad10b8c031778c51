package benchreport

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// tableRow finds the Markdown table row whose first cells are prefix and returns its cells.
func tableRow(t *testing.T, md string, prefix ...string) []string {
	t.Helper()
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) >= len(prefix) && strings.Join(cells[:len(prefix)], "|") == strings.Join(prefix, "|") {
			return cells
		}
	}
	t.Fatalf("no table row %q in\n%s", prefix, md)
	return nil
}

func markdown(t *testing.T, r Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestMarkdown(t *testing.T) {
	md := markdown(t, fixtureReport(t))
	for _, tc := range []struct {
		row  []string
		want []string // the cells after the row's key
	}{
		{[]string{"mixtral", "1"}, []string{"0.270", "1.900", "0.14", "0.247 (hbm)", "1.09", "0.300", "2610", "met"}},
		{[]string{"mixtral", "4096"}, []string{"5.600", "6.570", "0.85", "4.250 (flop)", "1.32", "515.5", "252", "missed by 5.4% (≤ 1.25×bound)"}},
		{[]string{"mixtral", "4096 chunked C=256, overlapped"}, []string{"5.850", "6.570", "0.89", "4.250 (flop)", "1.38", "493.5", "241", "missed by 4.5% (chunked ≤ unchunked)"}},
		{[]string{"qwen3-30b-a3b", "16"}, []string{"1.020", "1.890", "0.54", "0.300 (hbm)", "3.40", "0.200", "903", "missed by 7.9% (≤ max(0.5×PyTorch, 1.15×bound))"}},
		{[]string{"deepseek-v3", "4096"}, []string{"no run", "11.750", "—", "—", "—", "—", "—", "—"}},
		{[]string{"all_gather", "8 KiB"}, []string{"9.2", "20.4", "0.445", "0.201", "2.22", "met"}},
		{[]string{"all_gather", "128 MiB"}, []string{"312.1", "298.3", "215.0", "225.0", "0.96", "missed by 1.5% (busbw ≥ 97% of PyTorch)"}},
		{[]string{"all_gather_v", "8 KiB"}, []string{"13.9", "—", "0.295", "—", "—", "missed by 37.4% (time ≤ 1.1×all_gather)"}},
		{[]string{"reduce_scatter", "64 KiB"}, []string{"7.5", "47.4", "4.37", "0.691", "6.32", "—"}},
		{[]string{"moerun"}, []string{"0.85", "bin/launch started → every communicator ready and a first collective done (ready_unix_s)", "met"}},
		{[]string{"torchrun"}, []string{"7.81", "torchrun started → first all_reduce done (READY)", "—"}},
	} {
		got := tableRow(t, md, tc.row...)[len(tc.row):]
		if strings.Join(got, " | ") != strings.Join(tc.want, " | ") {
			t.Errorf("row %q:\n got %q\nwant %q", tc.row, got, tc.want)
		}
	}
	for _, want := range []string{
		"Results: `testdata/results`. GPU 0: NVIDIA H100 80GB HBM3; GPU 1: NVIDIA H100 80GB HBM3. Targets: 27 met, 9 missed.\n",
		"| preset | tokens/rank | ours ms | PyTorch ms | ours/PyTorch | bound ms | ours/bound | TFLOP/s/GPU | weight GB/s | target |\n|---|---:|",
		"- moe_ref.txt line 13: skipped a JSON line that does not decode (unexpected EOF)\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

// TestMarkdownMissing: every section of an empty folder is one line saying why.
func TestMarkdownMissing(t *testing.T) {
	in, err := Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	md := markdown(t, Compare(in))
	for _, want := range []string{
		"\nNo MoE comparison: no moe-PRESET.json in ",
		"; PyTorch: no moe_ref.txt.\n",
		"\nNo collectives comparison: ours: no collectives.json; PyTorch: no coll_bench.txt.\n",
		"\nNo start-up comparison: ours: no startup-moerun-start.txt; torchrun: no startup-torch-start.txt.\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "|") {
		t.Errorf("tables without rows:\n%s", md)
	}

	// One input missing: the table stays, with the reason above it.
	in, err = Load(writeFiles(t, map[string]string{FileCollBench: "all_reduce 8192 B 21.0 us algbw 0.4 GB/s busbw 0.4 GB/s\n"}))
	if err != nil {
		t.Fatal(err)
	}
	md = markdown(t, Compare(in))
	if !strings.Contains(md, "\nMissing: ours: no collectives.json.\n") || tableRow(t, md, "all_reduce", "8 KiB")[3] != "21.0" {
		t.Errorf("PyTorch's collectives only:\n%s", md)
	}
}

func TestJSONTwin(t *testing.T) {
	var b bytes.Buffer
	if err := fixtureReport(t).JSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Summary Summary `json:"summary"`
		MoE     struct {
			Rows []struct {
				Preset    string   `json:"preset"`
				Tokens    int      `json:"tokens_per_rank"`
				Chunk     int      `json:"chunk_rows"`
				OursMs    *float64 `json:"ours_ms"`
				TorchMs   *float64 `json:"torch_ms"`
				BoundMs   *float64 `json:"bound_ms"`
				Verdict   string   `json:"verdict"`
				Ours      *MoERow  `json:"ours"`
				Targets   []Target `json:"targets"`
				BoundKind string   `json:"bound_kind"`
			} `json:"rows"`
		} `json:"moe"`
		Collectives struct {
			Rows []struct {
				Op         string   `json:"op"`
				Size       int64    `json:"size_bytes"`
				TorchBusBW *float64 `json:"torch_busbw_gbps"`
				Verdict    string   `json:"verdict"`
			} `json:"rows"`
			Curves []Curve `json:"curves"`
		} `json:"collectives"`
		Startup struct {
			Moerun *StartupRow `json:"moerun"`
		} `json:"startup"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Summary != (Summary{27, 9}) || len(got.MoE.Rows) != 16 || len(got.Collectives.Rows) != 36 || len(got.Collectives.Curves) != 9 {
		t.Fatalf("summary %+v, %d MoE rows, %d collectives rows, %d curves", got.Summary, len(got.MoE.Rows), len(got.Collectives.Rows), len(got.Collectives.Curves))
	}
	m := got.MoE.Rows[5] // mixtral 4096 chunked
	if m.Preset != "mixtral" || m.Tokens != 4096 || m.Chunk != 256 || *m.OursMs != 5.85 || *m.TorchMs != 6.57 ||
		m.Ours == nil || m.Ours.Chunks != 16 || !m.Ours.Overlapped || m.Verdict != "missed by 4.5% (chunked ≤ unchunked)" || !near(m.Targets[0].MissedPct, 100*(5.85/5.6-1)) {
		t.Errorf("chunked row %+v", m)
	}
	if d := got.MoE.Rows[15]; d.Preset != "deepseek-v3" || d.OursMs != nil || d.BoundMs != nil || d.Ours != nil || *d.TorchMs != 11.75 {
		t.Errorf("deepseek-v3 4096 %+v", d)
	}
	if c := got.Collectives.Rows[4]; c.Op != "all_gather" || c.Size != 128<<20 || c.Verdict != "missed by 1.5% (busbw ≥ 97% of PyTorch)" {
		t.Errorf("collectives row 4 %+v", c)
	}
	if s := got.Startup.Moerun; s == nil || !near(s.Seconds, 0.85) || s.Verdict != "met" || s.Targets[0].Limit != 1 {
		t.Errorf("startup %+v", s)
	}
	if !strings.Contains(b.String(), `"name": "< PyTorch"`) {
		t.Error("JSON escapes < in target names")
	}
}
