package router

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// route runs Route[F] on float64 test logits and returns the outputs widened
// to float64.
func route[F float32 | float64](t testing.TB, c Config, logits []float64) ([]float64, []int32) {
	t.Helper()
	z := make([]F, len(logits))
	for i, v := range logits {
		z[i] = F(v)
	}
	n := len(logits) / c.NumExperts * c.TopK
	w := make([]F, n)
	ids := make([]int32, n)
	if err := Route(c, z, w, ids); err != nil {
		t.Fatalf("Route[%T](%+v): %v", F(0), c, err)
	}
	out := make([]float64, n)
	for i, v := range w {
		out[i] = float64(v)
	}
	return out, ids
}

// bothDtypes runs f for the float32 (runner) and float64 (reference)
// instantiations.
func bothDtypes(t *testing.T, f func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64)) {
	t.Run("float32", func(t *testing.T) {
		f(t, func(c Config, z []float64) ([]float64, []int32) { return route[float32](t, c, z) }, 1e-6)
	})
	t.Run("float64", func(t *testing.T) {
		f(t, func(c Config, z []float64) ([]float64, []int32) { return route[float64](t, c, z) }, 1e-12)
	})
}

func checkRouting(t *testing.T, gotW []float64, gotIDs []int32, wantW []float64, wantIDs []int32, tol float64) {
	t.Helper()
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("ids = %v, want %v", gotIDs, wantIDs)
	}
	if len(gotW) != len(wantW) {
		t.Fatalf("weights = %v, want %v", gotW, wantW)
	}
	for i := range wantW {
		if d := math.Abs(gotW[i] - wantW[i]); !(d <= tol) {
			t.Errorf("weights = %v, want %v (slot %d off by %g > %g)", gotW, wantW, i, d, tol)
			return
		}
	}
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// TestRoute_Section9_1_Softmax: logits [1,2,3,4], K=2.
func TestRoute_Section9_1_Softmax(t *testing.T) {
	for _, tc := range []struct {
		name   string
		renorm bool
		w      []float64
	}{
		{"no renorm", false, []float64{0.6439142598879724, 0.23688281808991013}},
		{"renorm", true, []float64{0.7310585786300049, 0.2689414213699951}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
				c := Config{NumExperts: 4, TopK: 2, Renormalize: tc.renorm, RoutedScalingFactor: 3}
				w, ids := run(c, []float64{1, 2, 3, 4})
				// The scale is not applied: FusedTopKRouter takes none.
				checkRouting(t, w, ids, tc.w, []int32{3, 2}, tol)
			})
		})
	}
}

// TestRoute_Section9_2_SigmoidBias: experts are chosen by σ(z)+b, weighted by σ(z).
func TestRoute_Section9_2_SigmoidBias(t *testing.T) {
	z := []float64{0.5, 2, 1, -1}
	for _, tc := range []struct {
		name   string
		bias   []float32
		renorm bool
		scale  float64
		ids    []int32
		w      []float64
	}{
		{"no bias", nil, false, 1, []int32{1, 2}, []float64{sigmoid(2), sigmoid(1)}},
		{"zero bias", []float32{0, 0, 0, 0}, false, 1, []int32{1, 2}, []float64{sigmoid(2), sigmoid(1)}},
		// σ(-1)+2 beats everything: expert 3 is chosen, weighted σ(-1), not σ(-1)+2.
		{"bias brings in a loser", []float32{0, 0, 0, 2}, false, 1, []int32{3, 1}, []float64{sigmoid(-1), sigmoid(2)}},
		// σ(.5)+.3 = .922 > σ(2) = .881: the winner flips, the weights stay σ(z).
		{"bias flips the winner", []float32{0.3, 0, 0, 0}, false, 1, []int32{0, 1}, []float64{sigmoid(0.5), sigmoid(2)}},
		{"flip, renorm", []float32{0.3, 0, 0, 0}, true, 1, []int32{0, 1},
			[]float64{sigmoid(0.5) / (sigmoid(0.5) + sigmoid(2)), sigmoid(2) / (sigmoid(0.5) + sigmoid(2))}},
		{"flip, renorm, scale after renorm", []float32{0.3, 0, 0, 0}, true, 2.5, []int32{0, 1},
			[]float64{2.5 * sigmoid(0.5) / (sigmoid(0.5) + sigmoid(2)), 2.5 * sigmoid(2) / (sigmoid(0.5) + sigmoid(2))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
				c := Config{NumExperts: 4, TopK: 2, Scoring: Sigmoid, Bias: tc.bias, Renormalize: tc.renorm, RoutedScalingFactor: tc.scale}
				w, ids := run(c, z)
				checkRouting(t, w, ids, tc.w, tc.ids, tol)
			})
		})
	}
}

// groupedExample is the §2.3 example: p sums to 1.00, so softmax(log p) = p.
var groupedExample = []float64{.30, .02, .10, .03, .20, .01, .19, .15}

func logOf(p []float64) []float64 {
	z := make([]float64, len(p))
	for i, v := range p {
		z[i] = math.Log(v)
	}
	return z
}

// TestRoute_Section9_3_GroupedExample reproduces §2.3's example exactly.
func TestRoute_Section9_3_GroupedExample(t *testing.T) {
	grouped := Config{NumExperts: 8, TopK: 3, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true}
	const s = 2.5
	for _, tc := range []struct {
		name string
		c    Config
		ids  []int32
		w    []float64
	}{
		{"grouped", grouped, []int32{0, 4, 1}, []float64{.30, .20, .02}},
		{"plain top-3 for contrast", Config{NumExperts: 8, TopK: 3}, []int32{0, 4, 6}, []float64{.30, .20, .19}},
		{"scale without renorm", func() Config { c := grouped; c.RoutedScalingFactor = s; return c }(),
			[]int32{0, 4, 1}, []float64{s * .30, s * .20, s * .02}},
		// Renormalised first (sum .52), then scaled: the weights sum to s.
		{"renorm then scale", func() Config { c := grouped; c.Renormalize, c.RoutedScalingFactor = true, s; return c }(),
			[]int32{0, 4, 1}, []float64{s * .30 / .52, s * .20 / .52, s * .02 / .52}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
				w, ids := run(tc.c, logOf(groupedExample))
				checkRouting(t, w, ids, tc.w, tc.ids, max(tol, 1e-6))
			})
		})
	}
}

// TestRoute_Section9_3_BiasGroupScoreIsTop2Sum: with a bias the group score
// is the sum of the two largest biased scores, not the maximum.
func TestRoute_Section9_3_BiasGroupScoreIsTop2Sum(t *testing.T) {
	// p = σ(z) = [.5, .5, .52498, .47502]; q = p + b = [1.4, .5, 1.07498, 1.07502].
	// Group 0: max 1.4, top-2 sum 1.9. Group 1: max 1.075, top-2 sum 2.15.
	// The max rule would keep group 0 ({0,1}); the top-2 sum keeps group 1.
	z := []float64{0, 0, 0.1, -0.1}
	c := Config{NumExperts: 4, TopK: 2, Scoring: Sigmoid, NumExpertGroup: 2, TopKGroup: 1, UseGroupedTopK: true,
		Bias: []float32{0.9, 0, 0.55, 0.6}}
	bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
		w, ids := run(c, z)
		// Slot order follows q (expert 3 first), weights are the unbiased σ(z).
		checkRouting(t, w, ids, []float64{sigmoid(-0.1), sigmoid(0.1)}, []int32{3, 2}, tol)
	})
	// Without a bias the group score is the max. Sigmoid scores group 0
	// [.9, .01], group 1 [.6, .6]: the max keeps group 0, a top-2 sum would
	// keep group 1.
	p := []float64{0.9, 0.01, 0.6, 0.6}
	zs := make([]float64, 4)
	for i, v := range p {
		zs[i] = math.Log(v / (1 - v)) // σ⁻¹
	}
	noBias := c
	noBias.Bias = nil
	bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
		w, ids := run(noBias, zs)
		checkRouting(t, w, ids, []float64{0.9, 0.01}, []int32{0, 1}, max(tol, 1e-7))
	})
}

// TestRoute_Section9_3_InvalidGroupingFallsBack: E=6, G=4 is not a valid
// grouping; vLLM silently routes without groups.
func TestRoute_Section9_3_InvalidGroupingFallsBack(t *testing.T) {
	z := []float64{0, 1, 2, 3, 4, 5}
	bias := []float32{3, 0, 0, 0, 0, 0}
	// softmax([0..5]) at 5 and 4.
	sm5, sm4 := 0.6336913225737218, 0.233122009623613
	base := Config{NumExperts: 6, TopK: 2, Scoring: Sigmoid, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true, RoutedScalingFactor: 2.5}
	for _, tc := range []struct {
		name   string
		bias   []float32
		renorm bool
		kind   Kind
		ids    []int32
		w      []float64
	}{
		// Bias → FusedTopKBias with the configured sigmoid, ×2.5.
		{"bias", bias, false, FusedTopKBias, []int32{0, 5}, []float64{2.5 * sigmoid(0), 2.5 * sigmoid(5)}},
		{"bias, renorm", bias, true, FusedTopKBias, []int32{0, 5},
			[]float64{2.5 * sigmoid(0) / (sigmoid(0) + sigmoid(5)), 2.5 * sigmoid(5) / (sigmoid(0) + sigmoid(5))}},
		// No bias → fused_topk with softmax although sigmoid is configured, and no scale.
		{"no bias: softmax, unscaled", nil, false, FusedTopK, []int32{5, 4}, []float64{sm5, sm4}},
		{"no bias, renorm", nil, true, FusedTopK, []int32{5, 4}, []float64{sm5 / (sm5 + sm4), sm4 / (sm5 + sm4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.Bias, c.Renormalize = tc.bias, tc.renorm
			if c.GroupingValid() {
				t.Fatal("GroupingValid() = true for E=6, G=4")
			}
			if got := c.Kind(); got != tc.kind {
				t.Fatalf("Kind() = %v, want %v", got, tc.kind)
			}
			bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
				w, ids := run(c, z)
				checkRouting(t, w, ids, tc.w, tc.ids, tol)
				if tc.bias != nil { // identical to asking for the bias router directly
					direct := c
					direct.UseGroupedTopK = false
					dw, dids := run(direct, z)
					checkRouting(t, w, ids, dw, dids, 0)
				}
			})
		})
	}
}

// randomLogits returns t×e standard normal logits rounded to float32, so that
// both instantiations see the same inputs.
func randomLogits(r *rand.Rand, t, e int) []float64 {
	z := make([]float64, t*e)
	for i := range z {
		z[i] = float64(float32(r.NormFloat64()))
	}
	return z
}

func randomBias(r *rand.Rand, e int, scale float64) []float32 {
	b := make([]float32, e)
	for i := range b {
		b[i] = float32(r.NormFloat64() * scale)
	}
	return b
}

// topGroups returns the g best groups of one token by the §2.3 group score,
// computed by sorting.
func topGroups(q []float64, groups, g int, biased bool) map[int]bool {
	size := len(q) / groups
	type gs struct {
		id    int
		score float64
	}
	all := make([]gs, groups)
	for gi := range groups {
		v := slices.Clone(q[gi*size : (gi+1)*size])
		slices.Sort(v)
		slices.Reverse(v)
		all[gi] = gs{gi, v[0]}
		if biased {
			all[gi].score = v[0] + v[1]
		}
	}
	slices.SortStableFunc(all, func(a, b gs) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	keep := map[int]bool{}
	for _, x := range all[:g] {
		keep[x.id] = true
	}
	return keep
}

// TestRoute_Section9_3_OnlyBestGroups: experts outside the g best groups
// never appear, over random logits, with and without bias.
func TestRoute_Section9_3_OnlyBestGroups(t *testing.T) {
	r := rand.New(rand.NewPCG(93, 1))
	const T, E, G, g, K = 200, 64, 8, 3, 5
	for _, scoring := range []Scoring{Softmax, Sigmoid} {
		for _, biased := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/bias=%v", scoring, biased), func(t *testing.T) {
				c := Config{NumExperts: E, TopK: K, Scoring: scoring, NumExpertGroup: G, TopKGroup: g, UseGroupedTopK: true}
				if biased {
					c.Bias = randomBias(r, E, 0.1)
				}
				z := randomLogits(r, T, E)
				_, ids := route[float64](t, c, z)
				// Scores recomputed independently of Route.
				for tok := range T {
					row := z[tok*E : (tok+1)*E]
					q := make([]float64, E)
					for i, v := range row {
						if scoring == Sigmoid {
							q[i] = sigmoid(v)
						} else {
							m := slices.Max(row)
							var s float64
							for _, u := range row {
								s += math.Exp(u - m)
							}
							q[i] = math.Exp(v-m) / s
						}
						if biased {
							q[i] += float64(c.Bias[i])
						}
					}
					keep := topGroups(q, G, g, biased)
					for _, id := range ids[tok*K : (tok+1)*K] {
						if !keep[int(id)/(E/G)] {
							t.Fatalf("token %d: expert %d is in group %d, not among the best groups %v", tok, id, int(id)/(E/G), keep)
						}
					}
				}
			})
		}
	}
}

// TestRoute_SqrtSoftplus covers the DeepSeek-V4 scoring, which vLLM runs only
// in FusedTopKBias: weights sqrt(softplus(z)), renorm sum clamped at 1e-20.
func TestRoute_SqrtSoftplus(t *testing.T) {
	sp := func(x float64) float64 { return math.Sqrt(math.Log1p(math.Exp(x))) }
	z := []float64{1, -1, 3, 0}
	zero := make([]float32, 4)
	for _, tc := range []struct {
		name   string
		z      []float64
		bias   []float32
		renorm bool
		scale  float64
		ids    []int32
		w      []float64
	}{
		{"plain", z, zero, false, 1, []int32{2, 0}, []float64{sp(3), sp(1)}},
		{"renorm", z, zero, true, 1, []int32{2, 0}, []float64{sp(3) / (sp(3) + sp(1)), sp(1) / (sp(3) + sp(1))}},
		{"renorm, scale", z, zero, true, 2, []int32{2, 0}, []float64{2 * sp(3) / (sp(3) + sp(1)), 2 * sp(1) / (sp(3) + sp(1))}},
		{"bias picks, score weights", z, []float32{0, 5, 0, 0}, false, 1, []int32{1, 2}, []float64{sp(-1), sp(3)}},
		// softplus(x) = x above torch's threshold 20.
		{"softplus threshold", []float64{25, 0, 0, 0}, zero, false, 1, []int32{0, 1}, []float64{5, sp(0)}},
		// All scores are exactly 0: the clamped sum gives 0, not NaN.
		{"all zero scores", []float64{-2000, -2000, -2000, -2000}, zero, true, 1, []int32{0, 1}, []float64{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{NumExperts: 4, TopK: 2, Scoring: SqrtSoftplus, Bias: tc.bias, Renormalize: tc.renorm, RoutedScalingFactor: tc.scale}
			bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
				w, ids := run(c, tc.z)
				checkRouting(t, w, ids, tc.w, tc.ids, tol)
			})
		})
	}
	// Tiny but nonzero scores: sum ≈ 7.4e-44 is clamped to 1e-20, so each
	// weight is ≈ e^-100/1e-20 ≈ 3.7e-24 instead of 0.5.
	t.Run("tiny scores clamp", func(t *testing.T) {
		c := Config{NumExperts: 4, TopK: 2, Scoring: SqrtSoftplus, Bias: zero, Renormalize: true}
		z := []float64{-200, -200, -200, -200}
		w64, _ := route[float64](t, c, z)
		want := math.Exp(-100) / 1e-20
		for _, v := range w64 {
			if math.Abs(v-want) > 1e-9*want {
				t.Errorf("float64 weights = %v, want %g each", w64, want)
			}
		}
		w32, _ := route[float32](t, c, z)
		for _, v := range w32 {
			if math.IsNaN(v) || v < 0 || v > 1e-23 {
				t.Errorf("float32 weights = %v, want finite and ≤ 1e-23", w32)
			}
		}
	})
}

// TestRoute_ZeroSumRenorm: a renormalised row whose weights are all 0
// (sigmoid of very negative logits) gives 0, not NaN, like vLLM's kernels.
func TestRoute_ZeroSumRenorm(t *testing.T) {
	c := Config{NumExperts: 3, TopK: 2, Scoring: Sigmoid, Renormalize: true}
	bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
		w, ids := run(c, []float64{-2000, -2000, -2000})
		checkRouting(t, w, ids, []float64{0, 0}, []int32{0, 1}, 0)
	})
}

// TestRoute_Ties: equal selection scores go to the lower expert id, and the
// slots are in descending score order.
func TestRoute_Ties(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		z    []float64
		ids  []int32
	}{
		{"all equal", Config{NumExperts: 5, TopK: 3}, []float64{1, 1, 1, 1, 1}, []int32{0, 1, 2}},
		{"tie at the cut", Config{NumExperts: 5, TopK: 2}, []float64{0, 2, 1, 2, 1}, []int32{1, 3}},
		{"order is by score", Config{NumExperts: 5, TopK: 4}, []float64{0, 3, 1, 4, 2}, []int32{3, 1, 4, 2}},
		{"tied groups keep the lower", Config{NumExperts: 6, TopK: 2, NumExpertGroup: 3, TopKGroup: 1, UseGroupedTopK: true},
			[]float64{0, 1, 1, 0, 1, 0}, []int32{1, 0}},
		{"biased tie", Config{NumExperts: 4, TopK: 1, Scoring: Sigmoid, Bias: []float32{0, 1, 0, 1}}, []float64{0, 0, 0, 0}, []int32{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
				z := slices.Repeat(tc.z, 3) // three identical tokens
				_, ids := run(tc.c, z)
				if want := slices.Repeat(tc.ids, 3); !slices.Equal(ids, want) {
					t.Errorf("ids = %v, want %v", ids, want)
				}
			})
		})
	}
}

// allConfigs is one Config per reachable (Kind, scoring) pair, plus options.
func allConfigs(r *rand.Rand) []Config {
	const E = 48
	var cs []Config
	for _, s := range []Scoring{Softmax, Sigmoid, SqrtSoftplus} {
		for _, renorm := range []bool{false, true} {
			bias := randomBias(r, E, 0.2)
			if s != SqrtSoftplus {
				cs = append(cs,
					Config{NumExperts: E, TopK: 6, Scoring: s, Renormalize: renorm, RoutedScalingFactor: 1.5},
					Config{NumExperts: E, TopK: 6, Scoring: s, Renormalize: renorm, RoutedScalingFactor: 1.5,
						NumExpertGroup: 6, TopKGroup: 2, UseGroupedTopK: true},
					Config{NumExperts: E, TopK: 6, Scoring: s, Renormalize: renorm, RoutedScalingFactor: 1.5,
						NumExpertGroup: 6, TopKGroup: 2, UseGroupedTopK: true, Bias: bias},
				)
			}
			cs = append(cs,
				Config{NumExperts: E, TopK: 6, Scoring: s, Renormalize: renorm, RoutedScalingFactor: 1.5, Bias: bias},
				// Invalid grouping (48 % 5 != 0): both fallbacks.
				Config{NumExperts: E, TopK: 6, Scoring: s, Renormalize: renorm, RoutedScalingFactor: 1.5,
					NumExpertGroup: 5, TopKGroup: 2, UseGroupedTopK: true},
				Config{NumExperts: E, TopK: 6, Scoring: s, Renormalize: renorm, RoutedScalingFactor: 1.5,
					NumExpertGroup: 5, TopKGroup: 2, UseGroupedTopK: true, Bias: bias},
			)
		}
	}
	return cs
}

func configName(c Config) string {
	return fmt.Sprintf("%v/%v/renorm=%v/G=%d/bias=%v", c.Kind(), c.Scoring, c.Renormalize, c.NumExpertGroup, c.Bias != nil)
}

// TestRoute_Section9_4_Dtypes: weights are float32 [T,K] and ids int32 [T,K],
// distinct and in [0,E), for every Kind and scoring; float32 and float64
// agree on ids and on weights within 1e-6.
func TestRoute_Section9_4_Dtypes(t *testing.T) {
	r := rand.New(rand.NewPCG(94, 2))
	const T = 100
	kinds := map[Kind]bool{}
	for _, c := range allConfigs(r) {
		kinds[c.Kind()] = true
		t.Run(configName(c), func(t *testing.T) {
			z := randomLogits(r, T, c.NumExperts)
			z32 := make([]float32, len(z))
			for i, v := range z {
				z32[i] = float32(v)
			}
			w32 := make([]float32, T*c.TopK) // the runner's dtypes
			ids32 := make([]int32, T*c.TopK)
			if err := Route(c, z32, w32, ids32); err != nil {
				t.Fatal(err)
			}
			w64, ids64 := route[float64](t, c, z)
			for tok := range T {
				row := ids32[tok*c.TopK : (tok+1)*c.TopK]
				seen := map[int32]bool{}
				for _, id := range row {
					if id < 0 || int(id) >= c.NumExperts || seen[id] {
						t.Fatalf("token %d: ids %v not distinct in [0,%d)", tok, row, c.NumExperts)
					}
					seen[id] = true
				}
			}
			if !slices.Equal(ids32, ids64) {
				t.Fatalf("float32 and float64 ids differ")
			}
			for i := range w32 {
				if d := math.Abs(float64(w32[i]) - w64[i]); !(d <= 1e-6) {
					t.Fatalf("slot %d: float32 weight %v, float64 %v", i, w32[i], w64[i])
				}
			}
		})
	}
	if len(kinds) != 3 {
		t.Errorf("covered kinds %v, want all 3", kinds)
	}
}

// TestRoute_DeepSeekV3Shape: E=256, G=8, g=4, K=8, sigmoid, bias, renorm, ×2.5.
func TestRoute_DeepSeekV3Shape(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	const T, E, G, K = 128, 256, 8, 8
	c := Config{NumExperts: E, TopK: K, Scoring: Sigmoid, Renormalize: true, NumExpertGroup: G, TopKGroup: 4,
		UseGroupedTopK: true, Bias: randomBias(r, E, 0.05), RoutedScalingFactor: 2.5}
	if c.Kind() != GroupedTopK {
		t.Fatalf("Kind() = %v", c.Kind())
	}
	bothDtypes(t, func(t *testing.T, run func(Config, []float64) ([]float64, []int32), tol float64) {
		w, ids := run(c, randomLogits(r, T, E))
		for tok := range T {
			row := ids[tok*K : (tok+1)*K]
			var sum float64
			for _, v := range w[tok*K : (tok+1)*K] {
				sum += v
			}
			if math.Abs(sum-2.5) > 10*tol {
				t.Errorf("token %d: weights sum to %v, want 2.5", tok, sum)
			}
			seen := map[int32]bool{}
			groups := map[int32]bool{}
			for _, id := range row {
				if seen[id] {
					t.Errorf("token %d: duplicate id in %v", tok, row)
				}
				seen[id] = true
				groups[id/(E/G)] = true
			}
			if len(groups) > 4 {
				t.Errorf("token %d: ids %v span %d groups, want ≤ 4", tok, row, len(groups))
			}
		}
	})
}

// TestRoute_MatchesNaiveReference checks Route[float64] against a direct
// transcription of §2.3 (full sort, -inf masking) on random inputs.
func TestRoute_MatchesNaiveReference(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 4))
	const T = 50
	for _, c := range allConfigs(r) {
		t.Run(configName(c), func(t *testing.T) {
			z := randomLogits(r, T, c.NumExperts)
			w, ids := route[float64](t, c, z)
			for tok := range T {
				ww, wids := naiveRoute(c, z[tok*c.NumExperts:(tok+1)*c.NumExperts])
				k := c.TopK
				checkRouting(t, w[tok*k:(tok+1)*k], ids[tok*k:(tok+1)*k], ww, wids, 1e-12)
			}
		})
	}
}

// naiveRoute is §2.3 as written, for one token, in float64.
func naiveRoute(c Config, z []float64) ([]float64, []int32) {
	e := len(z)
	p := make([]float64, e)
	switch c.EffectiveScoring() {
	case Softmax:
		m := slices.Max(z)
		var s float64
		for _, v := range z {
			s += math.Exp(v - m)
		}
		for i, v := range z {
			p[i] = math.Exp(v-m) / s
		}
	case Sigmoid:
		for i, v := range z {
			p[i] = sigmoid(v)
		}
	case SqrtSoftplus:
		for i, v := range z {
			if v <= 20 {
				v = math.Log1p(math.Exp(v))
			}
			p[i] = math.Sqrt(v)
		}
	}
	q := slices.Clone(p)
	if c.Bias != nil {
		for i := range q {
			q[i] += float64(c.Bias[i])
		}
	}
	if c.Kind() == GroupedTopK {
		keep := topGroups(q, c.NumExpertGroup, c.TopKGroup, c.Bias != nil)
		for i := range q {
			if !keep[i/(e/c.NumExpertGroup)] {
				q[i] = math.Inf(-1)
			}
		}
	}
	order := make([]int32, e)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		switch {
		case q[a] > q[b]:
			return -1
		case q[a] < q[b]:
			return 1
		}
		return 0
	})
	ids := order[:c.TopK]
	w := make([]float64, c.TopK)
	var sum float64
	for j, id := range ids {
		w[j] = p[id]
		sum += w[j]
	}
	if c.Renormalize {
		for j := range w {
			w[j] /= sum
		}
	}
	if c.Kind() != FusedTopK && c.RoutedScalingFactor != 0 {
		for j := range w {
			w[j] *= c.RoutedScalingFactor
		}
	}
	return w, ids
}

func TestRoute_LengthErrors(t *testing.T) {
	c := Config{NumExperts: 4, TopK: 2}
	for _, tc := range []struct {
		name    string
		logits  int
		weights int
		ids     int
		want    string
	}{
		{"ragged logits", 10, 4, 4, "router: logits has 10 values, not a whole number of rows of 4 experts"},
		{"short weights", 8, 3, 4, "router: weights has 3 slots, want 4 (2 tokens × top-k 2)"},
		{"long ids", 8, 4, 6, "router: ids has 6 slots, want 4 (2 tokens × top-k 2)"},
		{"no tokens", 0, 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Route(c, make([]float32, tc.logits), make([]float32, tc.weights), make([]int32, tc.ids))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Route() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want || !errors.Is(err, ErrLength) {
				t.Fatalf("Route() = %v, want %q (ErrLength)", err, tc.want)
			}
		})
	}
}

// TestRoute_AllocsPerCallNotPerToken: the scratch is allocated once per
// call, so 1 and 256 tokens allocate the same.
func TestRoute_AllocsPerCallNotPerToken(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	c := Config{NumExperts: 64, TopK: 8, Scoring: Sigmoid, Renormalize: true, NumExpertGroup: 8, TopKGroup: 4,
		UseGroupedTopK: true, Bias: randomBias(r, 64, 0.1), RoutedScalingFactor: 2.5}
	allocs := func(T int) float64 {
		z := make([]float32, T*c.NumExperts)
		for i := range z {
			z[i] = float32(r.NormFloat64())
		}
		w, ids := make([]float32, T*c.TopK), make([]int32, T*c.TopK)
		return testing.AllocsPerRun(20, func() {
			if err := Route(c, z, w, ids); err != nil {
				t.Fatal(err)
			}
		})
	}
	if one, many := allocs(1), allocs(256); one != many {
		t.Errorf("allocations: %v for 1 token, %v for 256", one, many)
	}
}
