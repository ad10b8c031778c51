package worker

import (
	"math"
	"testing"

	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/rank"
)

// The bound's inputs and arithmetic against hand-computed values.
func TestBoundByHand(t *testing.T) {
	var st routeStats
	// Chunk 1: 3 rows, top-2 over global experts 0..3, experts 1 and 3 local (as 0 and 1).
	emap := []int32{-1, 0, -1, 1}
	st.add([]float32{0, 1, 1, 3, 2, 0}, 3, emap, 2) // local slots: e1 twice, e3 once
	st.add([]float32{0, 2}, 1, emap, 2)             // chunk 2: nothing local
	if st.touched != 2 || st.slots != 3 || st.chunks != 2 || st.rows != 4 {
		t.Fatalf("stats %+v", st)
	}

	cfg, err := moe.Preset("deepseek-v3")
	if err != nil {
		t.Fatal(err)
	}
	cfg = matchRef(cfg) // no shared experts, no latent: only the routed experts count
	s, err := moe.NewShard(cfg, rank.Layout{DP: 2, TP: 1, PCP: 1, PP: 1, ExtDP: 1, EP: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	// 16 touched experts of 3·2048·7168 bf16 weights; 128 slots of 6·2048·7168 FLOPs.
	w := rankWork(s, routeStats{touched: 16, slots: 128, chunks: 1, rows: 256}, 128)
	if want := 16 * 3 * 2048 * 7168 * 2.0; w.Bytes != want {
		t.Errorf("bytes %g, want %g", w.Bytes, want)
	}
	if want := 128 * 6 * 2048 * 7168.0; w.FLOPs != want {
		t.Errorf("FLOPs %g, want %g", w.FLOPs, want)
	}
	total, hbm, flop, kind := bound(w, 50e-6, devicePeaks("cuda:0 NVIDIA H100 80GB HBM3"))
	if math.Abs(hbm-w.Bytes/3.35e12) > 1e-12 || math.Abs(flop-w.FLOPs/790e12) > 1e-12 || kind != "hbm" ||
		math.Abs(total-(hbm+50e-6)) > 1e-12 {
		t.Errorf("bound %g = %g hbm, %g flop, %s", total, hbm, flop, kind)
	}
	// Compute-bound: many slots on few experts.
	if _, _, _, kind := bound(work{Bytes: 1e9, FLOPs: 1e15}, 0, devicePeaks("H200")); kind != "flop" {
		t.Errorf("kind %s, want flop", kind)
	}
	if p := devicePeaks("cuda:1 NVIDIA H200"); p.HBM != 4.8e12 {
		t.Errorf("H200 peaks %+v", p)
	}

	// The shared experts of the real preset count once per chunk and on the local rows.
	full, _ := moe.Preset("deepseek-v3")
	s2, err := moe.NewShard(full, rank.Layout{DP: 2, TP: 1, PCP: 1, PP: 1, ExtDP: 1, EP: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	w2 := rankWork(s2, routeStats{chunks: 2}, 10)
	sh := 3.0 * float64(s2.SharedSlice) * 7168
	if w2.Bytes != 2*sh*2 || w2.FLOPs != 2*sh*10 {
		t.Errorf("shared work %+v, want bytes %g FLOPs %g", w2, 4*sh, 20*sh)
	}
}

// --match-ref leaves moe_ref.py's layer: the sizes kept, everything else stripped.
func TestMatchRef(t *testing.T) {
	cfg, _ := moe.Preset("deepseek-v3")
	m := matchRef(cfg)
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if m.Hidden != 7168 || m.Intermediate != 2048 || m.Experts != 256 || m.TopK != 8 {
		t.Errorf("sizes changed: %+v", m)
	}
	if m.Scoring != "softmax" || !m.Renormalize || m.ExpertGroups != 0 || m.ScoreBias || m.SharedIntermediate != 0 ||
		m.Latent != 0 || m.Scale() != 1 || m.Activation != "silu" || m.DType != "bfloat16" {
		t.Errorf("not moe_ref.py's layer: %+v", m)
	}
}
