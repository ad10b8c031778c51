package costmodel

import (
	"math"
	"testing"

	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

// A two-rank DP + EP forward pass on NV18, by hand: dispatch (two all-gather-v), experts
// (expected touched weights against expected slots), combine (one reduce-scatter-v).
func TestPredictByHand(t *testing.T) {
	topo, err := topology.Load("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	cfg := moe.Config{Name: "hand", Hidden: 8, Intermediate: 8, Experts: 4, TopK: 1, Scoring: "softmax",
		Renormalize: true, Activation: "silu", DType: "bf16"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l := rank.Layout{ExtDP: 1, DP: 2, PP: 1, PCP: 1, TP: 1, EP: true}
	dev := Device{HBM: 3.35e12, FLOPs: 790e12}
	p := DefaultParams()
	f := Forward{Cfg: cfg, Layout: l, Tokens: []int{1, 1}, Topology: topo, Params: p, Device: dev}
	phases, total, _, err := f.Predict()
	if err != nil {
		t.Fatal(err)
	}
	// A ring of two takes the pair's numbers (ForRing), in the small-message regime: bytes
	// are few.
	pair := p.ForRing(2)
	if pair.NVLinkPerLink != p.Pair.NVLinkPerLink || pair.OpBandwidth[AllGatherV] != p.Pair.OpBandwidth[AllGatherV] || pair.Pair != nil {
		t.Fatalf("ForRing(2) = %+v, want the pair's numbers", pair)
	}
	nv := Link{Latency: pair.NVLinkLatency, Bandwidth: 18 * pair.NVLinkPerLink}
	// Blocks of one row: 8 × 2 bytes of x, 4 × 4 bytes of logits, per rank. Equal blocks:
	// the plain collectives (as comm/nccl runs them), each at its share of the bandwidth
	// (OpBandwidth).
	v := func(op Op, b float64) float64 { return nv.Latency + 0.5*2*b/(nv.Bandwidth*pair.OpBandwidth[op]) }
	wantDispatch := v(AllGather, 16) + v(AllGather, 16)
	wantCombine := v(ReduceScatter, 16)
	// 2 rows seen, 2 local experts of 4, top-1: touched 2·(1 − (3/4)²), slots 2·1·2/4.
	touched := 2 * (1 - math.Pow(0.75, 2))
	wantExperts := max(touched*3*8*8*2/dev.HBM, 1.0*6*8*8/dev.FLOPs)
	got := map[string]float64{}
	for _, ph := range phases {
		got[ph.Name] = ph.Seconds
	}
	for name, want := range map[string]float64{"dispatch": wantDispatch, "combine": wantCombine, "experts": wantExperts, "reduce": 0, "shared": 0} {
		if !near(got[name], want) {
			t.Errorf("%s: %g, want %g", name, got[name], want)
		}
	}
	if !near(total, wantDispatch+wantCombine+wantExperts) {
		t.Errorf("total %g", total)
	}

	// Across two nodes the same layer's dispatch crosses NET, the ring's slowest hop.
	two, err := topology.Load("cluster-2x-dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	f.Topology, f.GPUOf = two, func(r int) int { return 8 * r } // GPU 0 of each node
	phases, _, _, err = f.Predict()
	if err != nil {
		t.Fatal(err)
	}
	net := p.Classes["NET"]
	if d := phases[0]; d.Name != "dispatch" || !near(d.Seconds, 2*(net.Latency+0.5*2*16/(net.Bandwidth*pair.OpBandwidth[AllGather]))) {
		t.Errorf("dispatch across nodes: %+v", d)
	}

	// Four ranks on one node: a ring of four, the numbers of rings larger than two.
	f.Topology, f.GPUOf = topo, nil
	// Uneven tokens: the -v collectives, a group of broadcasts (n − 1 + 3 latencies).
	f.Layout, f.Tokens = rank.Layout{ExtDP: 1, DP: 4, PP: 1, PCP: 1, TP: 1, EP: true}, []int{1, 1, 1, 2}
	if p4 := p.ForRing(4); p4.NVLinkPerLink != p.NVLinkPerLink || p4.Pair != p.Pair {
		t.Fatalf("ForRing(4) changed the parameters: %+v", p4)
	}
	phases, _, _, err = f.Predict()
	if err != nil {
		t.Fatal(err)
	}
	nv4 := Link{Latency: p.NVLinkLatency, Bandwidth: 18 * p.NVLinkPerLink}
	v4 := func(total float64) float64 {
		return 6*nv4.Latency + 0.75*total/(nv4.Bandwidth*p.OpBandwidth[AllGatherV])
	}
	if d := phases[0]; d.Name != "dispatch" || !near(d.Seconds, v4(5*16)+v4(5*16)) {
		t.Errorf("dispatch over four: %+v, want %g", d, v4(5*16)+v4(5*16))
	}

	// Bad input is an error, not a guess.
	f.Tokens = []int{1}
	if _, _, _, err := f.Predict(); err == nil {
		t.Error("one token count for two DP ranks was accepted")
	}
}

// The slowest rank wins: under uneven tokens the prediction follows the busiest DP rank's
// all-gather blocks (everyone waits for the largest), and grows with tokens.
func TestPredictScales(t *testing.T) {
	topo, _ := topology.Load("cluster-64x-dgx-h100")
	cfg, _ := moe.Preset("deepseek-v3")
	l, err := rank.NewLayout(512, 1, 1, 1, 512, true)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]int, 512)
	prev := 0.0
	for _, n := range []int{1, 16, 128} {
		for i := range tokens {
			tokens[i] = n
		}
		f := Forward{Cfg: cfg, Layout: l, Tokens: tokens, Topology: topo, Params: DefaultParams(), Device: Device{HBM: 3.35e12, FLOPs: 790e12}}
		_, total, _, err := f.Predict()
		if err != nil {
			t.Fatal(err)
		}
		if total <= prev {
			t.Errorf("%d tokens per rank: %g s, not more than %g", n, total, prev)
		}
		prev = total
	}
}

// An overlapped pass of two equal chunks: chunk 0's dispatch, then the longer of chunk 0's
// experts and chunk 1's dispatch, then the longer of chunk 1's experts and chunk 0's
// combine, then chunk 1's combine; the overlap phase makes the phases add up to that. A
// chunk that dispatches fewer rows than OverlapRows, or a pass of one chunk, runs in turn.
func TestPredictOverlap(t *testing.T) {
	topo, err := topology.Load("dgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	cfg := moe.Config{Name: "hand", Hidden: 64, Intermediate: 64, Experts: 4, TopK: 1, Scoring: "softmax",
		Renormalize: true, Activation: "silu", DType: "bf16", Chunk: 2}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	l := rank.Layout{ExtDP: 1, DP: 2, PP: 1, PCP: 1, TP: 1, EP: true}
	f := Forward{Cfg: cfg, Layout: l, Tokens: []int{4, 4}, Topology: topo, Params: DefaultParams(), Device: Device{HBM: 3.35e12, FLOPs: 790e12}}
	predict := func(f Forward) (map[string]float64, float64) {
		t.Helper()
		phases, total, _, err := f.Predict()
		if err != nil {
			t.Fatal(err)
		}
		got, sum := map[string]float64{}, 0.0
		for _, ph := range phases {
			got[ph.Name] = ph.Seconds
			sum += ph.Seconds
		}
		if !near(sum, total) {
			t.Fatalf("overlap rows %d: phases add up to %g, total %g", f.OverlapRows, sum, total)
		}
		return got, total
	}
	seq, seqTotal := predict(f)
	if seq["overlap"] != 0 {
		t.Fatalf("in turn: overlap %g", seq["overlap"])
	}
	d, e, c := seq["dispatch"]/2, seq["experts"]/2, seq["combine"]/2
	f.OverlapRows = 4 // chunk 0 dispatches 2 + 2 rows
	got, total := predict(f)
	if want := d + max(e, d) + max(e, c) + c; !near(total, want) || !near(got["overlap"], want-seqTotal) || got["overlap"] >= 0 {
		t.Errorf("overlapped: total %g overlap %g, want %g and %g", total, got["overlap"], want, want-seqTotal)
	}
	for _, rows := range []int{5, 0} {
		f.OverlapRows = rows
		if _, total := predict(f); total != seqTotal {
			t.Errorf("overlap rows %d: total %g, want %g in turn", rows, total, seqTotal)
		}
	}
	f.OverlapRows, f.Cfg.Chunk = 1, 4 // one chunk: never split
	if got, _ := predict(f); got["overlap"] != 0 {
		t.Errorf("one chunk: overlap %g", got["overlap"])
	}
}
