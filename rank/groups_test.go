package rank

import (
	"fmt"
	"slices"
	"testing"
)

func mustLayout(t *testing.T, world, tp, pcp, pp, dp int, ep bool) Layout {
	t.Helper()
	l, err := NewLayout(world, tp, pcp, pp, dp, ep)
	if err != nil {
		t.Fatalf("NewLayout(%d, %d, %d, %d, %d, %t): %v", world, tp, pcp, pp, dp, ep, err)
	}
	return l
}

func singletons(order ...int) [][]int {
	g := make([][]int, len(order))
	for i, r := range order {
		g[i] = []int{r}
	}
	return g
}

func checkGroups(t *testing.T, l Layout, want map[GroupKind][][]int) {
	t.Helper()
	for _, k := range AllGroupKinds {
		w, ok := want[k]
		if !ok {
			t.Fatalf("test table lacks kind %v", k)
		}
		if got := l.Groups(k); !slices.EqualFunc(got, w, slices.Equal) {
			t.Errorf("%v: %v groups = %v, want %v", l, k, got, w)
		}
	}
}

// moeWant builds the expected MoE config from the spec's formulas (§4.1) for a rank whose
// coordinates the test states itself.
func moeWant(l Layout, d, c, tp int) MoEParallel {
	flat := l.DP * l.PCP * l.TP
	flatRank := d*l.PCP*l.TP + c*l.TP + tp
	m := MoEParallel{
		FlatSize: flat, FlatRank: flatRank,
		DPSize: l.DP, DPRank: d, PCPSize: l.PCP, PCPRank: c, AttnTPSize: l.TP, AttnTPRank: tp,
		SPSize: 1,
	}
	if l.EP && flat > 1 {
		m.UseEP = true
		m.TPSize, m.EPSize, m.EPRank = 1, flat, flatRank
	} else {
		m.TPSize, m.TPRank, m.EPSize = flat, flatRank, 1
	}
	if l.EP && l.TP > 1 && l.DP > 1 {
		m.SequenceParallel, m.SPSize = true, l.TP
	}
	m.UseAll2AllKernels = l.DP > 1 && m.UseEP
	return m
}

// TestExampleA_Section4_2: world 8, tp=2, dp=2, pcp=2, pp=1; rank = 4d + 2c + t.
func TestExampleA_Section4_2(t *testing.T) {
	for _, ep := range []bool{false, true} {
		t.Run(fmt.Sprintf("ep=%t", ep), func(t *testing.T) {
			l := mustLayout(t, 8, 2, 2, 1, 2, ep)
			checkGroups(t, l, map[GroupKind][][]int{
				TP:  {{0, 1}, {2, 3}, {4, 5}, {6, 7}},
				PCP: {{0, 2}, {1, 3}, {4, 6}, {5, 7}},
				// vLLM transpose(2, 4) lists the singleton PP groups in (d, t, c) order.
				PP: singletons(0, 2, 1, 3, 4, 6, 5, 7),
				DP: {{0, 4}, {2, 6}, {1, 5}, {3, 7}},
				EP: {{0, 1, 2, 3, 4, 5, 6, 7}},
			})
			for r := range 8 {
				d, c, tp := r/4, r/2%2, r%2
				got := l.MoE(r)
				if want := moeWant(l, d, c, tp); got != want {
					t.Errorf("MoE(%d) = %+v, want %+v", r, got, want)
				}
				if !ep && (got.TPSize != 8 || got.TPRank != r || got.EPSize != 1 || got.EPRank != 0 || got.UseEP) {
					t.Errorf("no EP: MoE(%d) tp %d/%d ep %d/%d, want tp 8/%d ep 1/0", r, got.TPRank, got.TPSize, got.EPRank, got.EPSize, r)
				}
				if ep {
					if got.TPSize != 1 || got.EPSize != 8 || got.EPRank != r || got.EPRank != got.FlatRank {
						t.Errorf("EP: MoE(%d) tp size %d ep %d/%d flat %d, want tp 1 ep %d/8", r, got.TPSize, got.EPRank, got.EPSize, got.FlatRank, r)
					}
					// E/8 experts each, linear block [rank·E/8, …).
					n, m, err := ExpertMap(64, got.EPSize, got.EPRank, Linear)
					if err != nil || n != 8 || !slices.Equal(LocalExperts(m), seq(8*r, 8)) {
						t.Errorf("E=64 rank %d: local %d experts %v err %v, want [%d, %d)", r, n, LocalExperts(m), err, 8*r, 8*r+8)
					}
				}
			}
		})
	}
}

// TestExampleB_Section4_2: world 8, tp=2, dp=4, EP; rank = 2d + t.
func TestExampleB_Section4_2(t *testing.T) {
	l := mustLayout(t, 8, 2, 1, 1, 0, true)
	if l.DP != 4 {
		t.Fatalf("derived dp = %d, want 4", l.DP)
	}
	checkGroups(t, l, map[GroupKind][][]int{
		TP:  {{0, 1}, {2, 3}, {4, 5}, {6, 7}},
		PCP: singletons(0, 1, 2, 3, 4, 5, 6, 7),
		PP:  singletons(0, 1, 2, 3, 4, 5, 6, 7),
		DP:  {{0, 2, 4, 6}, {1, 3, 5, 7}},
		EP:  {{0, 1, 2, 3, 4, 5, 6, 7}},
	})
	for r := range 8 {
		got := l.MoE(r)
		if want := moeWant(l, r/2, 0, r%2); got != want {
			t.Errorf("MoE(%d) = %+v, want %+v", r, got, want)
		}
		if got.EPRank != r || got.EPSize != 8 || got.TPSize != 1 || !got.SequenceParallel || got.SPSize != 2 {
			t.Errorf("MoE(%d): ep %d/%d tp %d sp %t/%d, want ep %d/8 tp 1 sp true/2", r, got.EPRank, got.EPSize, got.TPSize, got.SequenceParallel, got.SPSize, r)
		}
		// E=64 → 8 experts per rank, rank r: 8r…8r+7.
		n, m, err := ExpertMap(64, got.EPSize, got.EPRank, Linear)
		if err != nil || n != 8 || !slices.Equal(LocalExperts(m), seq(8*r, 8)) {
			t.Errorf("E=64 rank %d: %d experts %v err %v", r, n, LocalExperts(m), err)
		}
	}
	// Without EP the same grid gives MoE tp = 8 and no sequence parallelism.
	noEP := mustLayout(t, 8, 2, 1, 1, 0, false)
	for r := range 8 {
		if got, want := noEP.MoE(r), moeWant(noEP, r/2, 0, r%2); got != want || got.TPSize != 8 || got.SequenceParallel {
			t.Errorf("no EP: MoE(%d) = %+v, want %+v", r, got, want)
		}
	}
}

// TestExampleC_Section4_2: world 8, tp=2, dp=2, pp=2; rank = 4d + 2p + t; one EP group per stage.
func TestExampleC_Section4_2(t *testing.T) {
	for _, ep := range []bool{false, true} {
		t.Run(fmt.Sprintf("ep=%t", ep), func(t *testing.T) {
			l := mustLayout(t, 8, 2, 1, 2, 2, ep)
			checkGroups(t, l, map[GroupKind][][]int{
				TP:  {{0, 1}, {2, 3}, {4, 5}, {6, 7}},
				PCP: singletons(0, 1, 2, 3, 4, 5, 6, 7),
				PP:  {{0, 2}, {1, 3}, {4, 6}, {5, 7}},
				DP:  {{0, 4}, {2, 6}, {1, 5}, {3, 7}},
				EP:  {{0, 1, 4, 5}, {2, 3, 6, 7}},
			})
			for r := range 8 {
				d, tp := r/4, r%2
				got := l.MoE(r)
				if want := moeWant(l, d, 0, tp); got != want {
					t.Errorf("MoE(%d) = %+v, want %+v", r, got, want)
				}
				_, pos := l.GroupOf(EP, r)
				if ep && (got.EPSize != 4 || got.EPRank != 2*d+tp || got.EPRank != pos) {
					t.Errorf("MoE(%d): ep %d/%d, EP group pos %d, want ep %d/4", r, got.EPRank, got.EPSize, pos, 2*d+tp)
				}
				if !ep && (got.TPSize != 4 || got.TPRank != 2*d+tp) {
					t.Errorf("MoE(%d): tp %d/%d, want %d/4", r, got.TPRank, got.TPSize, 2*d+tp)
				}
			}
		})
	}
}

// TestWalk_Section4_3: world 4, dp=2, tp=2, EP, AgRs, E=8.
func TestWalk_Section4_3(t *testing.T) {
	l := mustLayout(t, 4, 2, 1, 1, 0, true)
	if got := l.String(); got != "world 4 = dp 2 × tp 2 (ep)" {
		t.Errorf("String() = %q", got)
	}
	if got := l.Groups(EP); !slices.EqualFunc(got, [][]int{{0, 1, 2, 3}}, slices.Equal) {
		t.Errorf("EP groups = %v, want [[0 1 2 3]]", got)
	}
	wantExperts := [][]int{{0, 1}, {2, 3}, {4, 5}, {6, 7}}
	for r := range 4 {
		if c := l.Coord(r); c.DP != r/2 || c.TP != r%2 {
			t.Errorf("Coord(%d) = %+v, want d %d t %d (ranks 2d + t)", r, c, r/2, r%2)
		}
		m := l.MoE(r)
		if m.TPSize != 1 || m.EPSize != 4 || m.EPRank != r || !m.SequenceParallel || m.SPSize != 2 {
			t.Errorf("MoE(%d) = %+v, want tp 1, ep %d/4, sp 2", r, m, r)
		}
		n, em, err := ExpertMap(8, m.EPSize, m.EPRank, Linear)
		if err != nil || n != 2 || !slices.Equal(LocalExperts(em), wantExperts[r]) {
			t.Errorf("rank %d: %d experts %v err %v, want %v", r, n, LocalExperts(em), err, wantExperts[r])
		}
	}
	if got := SPTokens([]int{5, 2}, l.MoE(0).SPSize); !slices.Equal(got, []int{3, 3, 1, 1}) {
		t.Errorf("sp_local_sizes(2) = %v, want [3 3 1 1]", got)
	}

	// Same setup with tp=1: no SP, the DP group is the EP group of 2, sizes stay [5 2].
	l1 := mustLayout(t, 2, 1, 1, 1, 2, true)
	if dp, ep := l1.Groups(DP), l1.Groups(EP); !slices.EqualFunc(dp, ep, slices.Equal) || !slices.Equal(dp[0], []int{0, 1}) {
		t.Errorf("tp=1: DP groups %v, EP groups %v, want both [[0 1]]", dp, ep)
	}
	for r := range 2 {
		if m := l1.MoE(r); m.SequenceParallel || m.SPSize != 1 || m.EPSize != 2 || m.EPRank != r {
			t.Errorf("tp=1: MoE(%d) = %+v, want no SP, ep %d/2", r, m, r)
		}
	}
	if got := SPTokens([]int{5, 2}, 1); !slices.Equal(got, []int{5, 2}) {
		t.Errorf("tp=1 sizes = %v, want [5 2]", got)
	}
}

// refGroups is an independent model of vLLM's initialize_model_parallel: it transposes
// arange(world).reshape(X, D, P, C, T) the way each kind does and cuts the result into rows.
func refGroups(l Layout, k GroupKind) [][]int {
	shape := []int{l.ExtDP, l.DP, l.PP, l.PCP, l.TP}
	perm := []int{0, 1, 2, 3, 4}
	size := 0
	switch k {
	case TP:
		size = l.TP
	case PCP:
		perm[3], perm[4], size = 4, 3, l.PCP
	case PP:
		perm[2], perm[4], size = 4, 2, l.PP
	case DP:
		perm[1], perm[4], size = 4, 1, l.DP
	case EP:
		perm[1], perm[2], size = 2, 1, l.DP*l.PCP*l.TP
	}
	tshape := make([]int, 5)
	for i := range 5 {
		tshape[i] = shape[perm[i]]
	}
	var flat []int
	idx := make([]int, 5)
	for range l.World() {
		orig := make([]int, 5)
		for i := range 5 {
			orig[perm[i]] = idx[i]
		}
		r := 0
		for i := range 5 {
			r = r*shape[i] + orig[i]
		}
		flat = append(flat, r)
		for i := 4; i >= 0; i-- { // row-major increment
			idx[i]++
			if idx[i] < tshape[i] {
				break
			}
			idx[i] = 0
		}
	}
	var out [][]int
	for len(flat) > 0 {
		out = append(out, flat[:size])
		flat = flat[size:]
	}
	return out
}

// allLayouts lists every layout with world <= 8 (every ExtDP, DP, PP, PCP, TP factorisation),
// with EP off and on.
func allLayouts() []Layout {
	var ls []Layout
	for x := 1; x <= 8; x++ {
		for d := 1; x*d <= 8; d++ {
			for p := 1; x*d*p <= 8; p++ {
				for c := 1; x*d*p*c <= 8; c++ {
					for tp := 1; x*d*p*c*tp <= 8; tp++ {
						for _, ep := range []bool{false, true} {
							ls = append(ls, Layout{ExtDP: x, DP: d, PP: p, PCP: c, TP: tp, EP: ep})
						}
					}
				}
			}
		}
	}
	return ls
}

// TestGridProperties_Section4_2 checks every layout of at most 8 ranks against the grid
// formula and the transpose model of vLLM's group construction.
func TestGridProperties_Section4_2(t *testing.T) {
	layouts := allLayouts()
	if len(layouts) != 2*(1+5+5+15+5+25+5+35) { // 2 × Σ_{w≤8} ordered 5-factorisations of w
		t.Fatalf("enumerated %d layouts", len(layouts))
	}
	for _, l := range layouts {
		t.Run(fmt.Sprintf("%d-%d-%d-%d-%d-%t", l.ExtDP, l.DP, l.PP, l.PCP, l.TP, l.EP), func(t *testing.T) {
			w := l.World()
			if l.ExtDP == 1 {
				nl, err := NewLayout(w, l.TP, l.PCP, l.PP, 0, l.EP)
				if err != nil || nl != l {
					t.Errorf("NewLayout(%d, %d, %d, %d, 0, %t) = %+v, %v", w, l.TP, l.PCP, l.PP, l.EP, nl, err)
				}
			}
			for r := range w {
				c := l.Coord(r)
				if c.ExtDP < 0 || c.ExtDP >= l.ExtDP || c.DP < 0 || c.DP >= l.DP || c.PP < 0 || c.PP >= l.PP ||
					c.PCP < 0 || c.PCP >= l.PCP || c.TP < 0 || c.TP >= l.TP {
					t.Fatalf("Coord(%d) = %+v out of range", r, c)
				}
				if back := l.Rank(c); back != r {
					t.Fatalf("Rank(Coord(%d)) = %d", r, back)
				}
				if want := (((c.ExtDP*l.DP+c.DP)*l.PP+c.PP)*l.PCP+c.PCP)*l.TP + c.TP; want != r {
					t.Fatalf("Coord(%d) = %+v violates the grid formula", r, c)
				}
			}
			for _, k := range AllGroupKinds {
				groups := l.Groups(k)
				if ref := refGroups(l, k); !slices.EqualFunc(groups, ref, slices.Equal) {
					t.Errorf("%v groups = %v, transpose model gives %v", k, groups, ref)
				}
				seen := make([]int, w)
				for gi, g := range groups {
					if len(g) != l.GroupSize(k) {
						t.Errorf("%v group %d = %v, want size %d", k, gi, g, l.GroupSize(k))
					}
					for pos, r := range g {
						seen[r]++
						if i, p := l.GroupOf(k, r); i != gi || p != pos {
							t.Errorf("GroupOf(%v, %d) = (%d, %d), Groups has (%d, %d)", k, r, i, p, gi, pos)
						}
					}
				}
				for r, n := range seen {
					if n != 1 {
						t.Errorf("%v groups %v: rank %d appears %d times", k, groups, r, n)
					}
				}
			}
			for i, g := range l.Groups(TP) {
				if !slices.Equal(g, seq(i*l.TP, l.TP)) {
					t.Errorf("TP group %d = %v, want a contiguous run from %d", i, g, i*l.TP)
				}
			}
			for i, g := range l.Groups(EP) {
				if len(g) != l.DP*l.PCP*l.TP {
					t.Errorf("EP group %d = %v, want dp·pcp·tp = %d ranks", i, g, l.DP*l.PCP*l.TP)
				}
				c0 := l.Coord(g[0])
				for pos, r := range g {
					c := l.Coord(r)
					if c.ExtDP != c0.ExtDP || c.PP != c0.PP {
						t.Errorf("EP group %d = %v mixes (ext-dp, pp) slices", i, g)
					}
					m := l.MoE(r)
					if pos != m.FlatRank {
						t.Errorf("rank %d: EP pos %d != flat_rank %d", r, pos, m.FlatRank)
					}
					if m.UseEP && pos != m.EPRank {
						t.Errorf("rank %d: EP pos %d != ep_rank %d", r, pos, m.EPRank)
					}
				}
			}
			for r := range w {
				c := l.Coord(r)
				m := l.MoE(r)
				if want := moeWant(l, c.DP, c.PCP, c.TP); m != want {
					t.Errorf("MoE(%d) = %+v, want %+v", r, m, want)
				}
				if m.TPSize*m.EPSize != m.FlatSize {
					t.Errorf("MoE(%d): tp %d × ep %d != flat %d", r, m.TPSize, m.EPSize, m.FlatSize)
				}
			}
		})
	}
}

func seq(start, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = start + i
	}
	return s
}
