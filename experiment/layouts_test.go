package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"strings"
	"testing"

	"github.com/moerun/moerun/costmodel"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/topology"
)

// Every layout of 8 ranks the tiny layer accepts, ranked fastest first, with the
// table, JSON and plot agreeing.
func TestRankTiny(t *testing.T) {
	cfg, _ := moe.Preset("tiny") // 8 experts, I = 96
	cands := Candidates(cfg, 8)
	seen := map[string]bool{}
	for _, c := range cands {
		seen[c.String()] = true
	}
	for _, want := range []string{"tp1 dp8 ep linear", "tp1 dp8 ep round_robin", "tp2 dp4 ep linear", "tp8 dp1 ep linear"} {
		if !seen[want] {
			t.Errorf("candidate %q missing from %v", want, cands)
		}
	}
	// A layer that cannot be split: 64 ranks of MoE TP over I = 96 are refused, EP kept.
	for _, c := range Candidates(cfg, 64) {
		if !c.EP {
			t.Errorf("candidate %v splits I = 96 into 64 slices", c)
		}
	}
	topo, err := topology.Load("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Rank(cfg, topo, 8, 16, cands, costmodel.DefaultParams(), costmodel.Device{HBM: 3.35e12, FLOPs: 790e12}, moe.DefaultOverlapRows)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != len(cands) {
		t.Fatalf("%d results for %d candidates", len(rs), len(cands))
	}
	for i := 1; i < len(rs); i++ {
		if rs[i].PredictedMs < rs[i-1].PredictedMs {
			t.Fatalf("not ranked: %v before %v", rs[i-1], rs[i])
		}
	}
	var table, js, img bytes.Buffer
	WriteTable(&table, rs)
	if lines := strings.Count(table.String(), "\n"); lines != len(rs)+1 {
		t.Errorf("table has %d lines for %d results", lines, len(rs))
	}
	if !strings.Contains(strings.Split(table.String(), "\n")[1], rs[0].Layout) {
		t.Errorf("first row is not the fastest layout %q:\n%s", rs[0].Layout, table.String())
	}
	if err := WriteJSON(&js, rs); err != nil {
		t.Fatal(err)
	}
	var back []Result
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back) != len(rs) || back[0].PredictedMs != rs[0].PredictedMs {
		t.Errorf("JSON twin: %v, %d rows", err, len(back))
	}
	if err := WritePlot(&img, "tiny", rs); err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(&img); err != nil {
		t.Errorf("plot is not a PNG: %v", err)
	}
}

// Bad input: one line, exit 2.
func TestMainErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--preset", "nope"}, "layouts: "},
		{[]string{"--topology-file", "nosuch"}, "layouts: --topology-file nosuch: no such file"},
		{[]string{"--topology-file", "dgx-h100", "--np", "9"}, "layouts: --np 9: expected 1 to the topology's 8 GPUs"},
		{[]string{"--topology-file", "dgx-h100", "--tokens", "0"}, "layouts: --tokens 0: expected at least 1 token per GPU"},
		{[]string{"--topology-file", "dgx-h100", "--overlap", "-1"}, "layouts: --overlap -1: expected 0 (in turn) or the dispatched rows a chunk"},
	} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), c.args, &out, &errb); code != 2 || !strings.HasPrefix(errb.String(), c.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q…", c.args, code, errb.String(), c.want)
		}
	}
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--preset", "mixtral", "--topology-file", "pcie-8gpu", "--tokens", "64"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "mixtral layer, 8 ranks on pcie-8gpu") {
		t.Errorf("exit %d, %s%s", code, out.String(), errb.String())
	}
}

// Passes chunked at 256 rows per rank (1024 tokens per GPU) are costed overlapped by
// default, as worker run runs them: an EP layout's overlap phase is negative and its time
// below the same layout's with --overlap 0.
func TestMainOverlap(t *testing.T) {
	rank := func(args ...string) map[string]Result {
		t.Helper()
		var out, errb bytes.Buffer
		args = append([]string{"--preset", "mixtral", "--topology-file", "dgx-h100", "--tokens", "1024", "--json"}, args...)
		if code := Main(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d, %s", args, code, errb.String())
		}
		var rs []Result
		if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
			t.Fatal(err)
		}
		by := map[string]Result{}
		for _, r := range rs {
			by[r.Layout+" "+r.Placement] = r
		}
		return by
	}
	on, off := rank(), rank("--overlap", "0")
	const ep = "world 8 = dp 8 (ep) linear"
	phase := func(r Result, name string) float64 {
		for _, ph := range r.Phases {
			if ph.Name == name {
				return ph.Seconds
			}
		}
		t.Fatalf("%s: no %s phase in %+v", ep, name, r.Phases)
		return 0
	}
	a, b := on[ep], off[ep]
	if phase(a, "overlap") >= 0 || phase(b, "overlap") != 0 || a.PredictedMs >= b.PredictedMs {
		t.Errorf("%s: overlapped %.4f ms (overlap %g s), in turn %.4f ms (overlap %g s)", ep, a.PredictedMs, phase(a, "overlap"), b.PredictedMs, phase(b, "overlap"))
	}
}
