package benchreport

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLI(t *testing.T) {
	t.Parallel() // renders plots: the slowest test under the race detector
	out := filepath.Join(t.TempDir(), "report")
	code, stdout, stderr := runMain(t, "--results", fixture, "--out", out)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	md, err := os.ReadFile(filepath.Join(out, FileMarkdown))
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(md) || !strings.HasPrefix(stdout, "# moerun beside PyTorch\n") {
		t.Errorf("stdout is not comparison.md:\n%s", stdout)
	}
	for _, f := range []string{FileJSON, "moe-mixtral.png", "moe-qwen3-30b-a3b.png", "moe-deepseek-v3.png", FileCollectivesPNG} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}

	var r Report
	js, err := os.ReadFile(filepath.Join(out, FileJSON))
	if err != nil || json.Unmarshal(js, &r) != nil || r.Summary.Met != 27 || len(r.MoE.Rows) != 16 {
		t.Errorf("comparison.json: %v, summary %+v", err, r.Summary)
	}
}

// TestCLIJSON: --json prints comparison.json; without --out, the outputs go into the
// results folder.
func TestCLIJSON(t *testing.T) {
	dir := writeFiles(t, map[string]string{FileCollBench: "all_reduce 8192 B 21.0 us algbw 0.4 GB/s busbw 0.4 GB/s\n"})
	code, stdout, stderr := runMain(t, "--results", dir, "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	js, err := os.ReadFile(filepath.Join(dir, FileJSON))
	if err != nil || stdout != string(js) {
		t.Errorf("stdout is not comparison.json (%v):\n%s", err, stdout)
	}
	var r Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || len(r.Collectives.Rows) != 1 || *r.Collectives.Rows[0].TorchUS != 21 {
		t.Errorf("JSON %v: %+v", err, r.Collectives)
	}
	for _, f := range []string{FileMarkdown, FileCollectivesPNG} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestCLIErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "bench-out")
	bad := writeFiles(t, map[string]string{"moe-mixtral.json": "{\"rows\": [\n"})
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing folder", []string{"--results", missing}, 1,
			"benchreport: results folder " + missing + ": no such file or directory (expected the folder bench/gpu.sh filled)\n"},
		{"malformed file", []string{"--results", bad}, 1,
			"benchreport: " + filepath.Join(bad, "moe-mixtral.json") + ": expected the JSON object of `bin/worker run --json` (preset, layer, rows): unexpected end of JSON input\n"},
		{"no --results", nil, 2, "benchreport: --results DIR is required (the folder bench/gpu.sh filled)\n"},
		{"unknown flag", []string{"--result", "x"}, 2, ""},
		{"an argument", []string{"--results", bad, "extra"}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runMain(t, tc.args...)
			if code != tc.code || stdout != "" {
				t.Errorf("exit %d, stdout %q; want exit %d and nothing", code, stdout, tc.code)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "benchreport: ") || tc.want != "" && stderr != tc.want {
				t.Errorf("stderr %q, want one line %q", stderr, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(bad, FileMarkdown)); err == nil {
		t.Error("a comparison was written for bad input")
	}
}
