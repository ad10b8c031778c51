package rank

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestExpertMapE10_Section3_3: E=10, ep=4; the first rem = 2 ranks get the extra expert.
func TestExpertMapE10_Section3_3(t *testing.T) {
	tests := []struct {
		p    Placement
		want [][]int
	}{
		{Linear, [][]int{{0, 1, 2}, {3, 4, 5}, {6, 7}, {8, 9}}},
		{RoundRobin, [][]int{{0, 4, 8}, {1, 5, 9}, {2, 6}, {3, 7}}},
	}
	for _, tc := range tests {
		for r, want := range tc.want {
			n, m, err := ExpertMap(10, 4, r, tc.p)
			if err != nil {
				t.Fatalf("%v rank %d: %v", tc.p, r, err)
			}
			if got := LocalExperts(m); n != len(want) || !slices.Equal(got, want) {
				t.Errorf("%v rank %d: local %d experts %v, want %v", tc.p, r, n, got, want)
			}
		}
	}
	// The full linear map of rank 2: experts 6 and 7 are local ids 0 and 1.
	_, m, _ := ExpertMap(10, 4, 2, Linear)
	if want := []int32{-1, -1, -1, -1, -1, -1, 0, 1, -1, -1}; !slices.Equal(m, want) {
		t.Errorf("linear rank 2 map = %v, want %v", m, want)
	}
}

// TestExpertPlacement_Section8 mirrors tests/distributed/test_expert_placement.py.
func TestExpertPlacement_Section8(t *testing.T) {
	tests := []struct {
		rank  int
		local int
		want  []int32
	}{
		{0, 5, []int32{0, -1, 1, -1, 2, -1, 3, -1, 4}},
		{1, 4, []int32{-1, 0, -1, 1, -1, 2, -1, 3, -1}},
	}
	for _, tc := range tests {
		n, m, err := ExpertMap(9, 2, tc.rank, RoundRobin)
		if err != nil || n != tc.local || !slices.Equal(m, tc.want) {
			t.Errorf("E=9 ep=2 round_robin rank %d = (%d, %v, %v), want (%d, %v, nil)", tc.rank, n, m, err, tc.local, tc.want)
		}
	}
	for _, p := range []Placement{Linear, RoundRobin} {
		if n, m, err := ExpertMap(9, 1, 0, p); err != nil || n != 9 || m != nil {
			t.Errorf("ep=1 %v = (%d, %v, %v), want (9, nil, nil)", p, n, m, err)
		}
	}
}

func TestExpertMapErrors_Section3_3(t *testing.T) {
	tests := []struct {
		name          string
		e, ep, epRank int
		p             Placement
		want          string
	}{
		{"ep 0 (vLLM asserts)", 8, 0, 0, RoundRobin, "expert map: ep_size 0 must be >= 1"},
		{"ep negative", 8, -2, 0, Linear, "expert map: ep_size -2 must be >= 1"},
		{"rank too large", 8, 2, 2, Linear, "expert map: ep_rank 2 out of range [0, 2)"},
		{"rank negative", 8, 2, -1, Linear, "expert map: ep_rank -1 out of range [0, 2)"},
		{"rank with ep 1", 8, 1, 1, Linear, "expert map: ep_rank 1 out of range [0, 1)"},
		{"no experts", 0, 2, 0, Linear, "expert map: num_experts 0 must be >= 1"},
		{"unknown placement", 8, 2, 0, Placement(5), "expert map: unknown placement Placement(5)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, m, err := ExpertMap(tc.e, tc.ep, tc.epRank, tc.p)
			if err == nil || err.Error() != tc.want || !errors.Is(err, ErrInvalid) || m != nil {
				t.Errorf("ExpertMap(%d, %d, %d, %v) = %v, %v; want error %q", tc.e, tc.ep, tc.epRank, tc.p, m, err, tc.want)
			}
		})
	}
}

// TestExpertMapFewerExpertsThanRanks_Section3_3: E < ep is allowed as in vLLM; the last ranks
// own nothing.
func TestExpertMapFewerExpertsThanRanks_Section3_3(t *testing.T) {
	for r, want := range []int{1, 1, 1, 0} {
		n, m, err := ExpertMap(3, 4, r, Linear)
		if err != nil || n != want {
			t.Errorf("E=3 ep=4 rank %d: local %d err %v, want %d", r, n, err, want)
		}
		if r == 3 && !slices.Equal(m, []int32{-1, -1, -1}) {
			t.Errorf("E=3 ep=4 rank 3 map = %v, want all -1", m)
		}
	}
}

// TestExpertMapOwnership_Section9_Oracle8: for every E in 1..70 and ep in 1..9, both placements
// give every expert to exactly one rank, Σ local == E, and local ids are dense 0..local-1.
func TestExpertMapOwnership_Section9_Oracle8(t *testing.T) {
	for _, p := range []Placement{Linear, RoundRobin} {
		for e := 1; e <= 70; e++ {
			for ep := 1; ep <= 9; ep++ {
				owner := make([]int, e)
				for i := range owner {
					owner[i] = -1
				}
				total := 0
				for r := range ep {
					n, m, err := ExpertMap(e, ep, r, p)
					if err != nil {
						t.Fatalf("ExpertMap(%d, %d, %d, %v): %v", e, ep, r, p, err)
					}
					total += n
					if want := e/ep + btoi(r < e%ep); n != want {
						t.Errorf("E=%d ep=%d %v rank %d: local %d, want %d", e, ep, p, r, n, want)
					}
					if ep == 1 {
						if m != nil {
							t.Errorf("E=%d ep=1: map %v, want nil", e, m)
						}
						for g := range owner {
							owner[g] = 0
						}
						continue
					}
					if len(m) != e {
						t.Fatalf("E=%d ep=%d: map length %d", e, ep, len(m))
					}
					locals := LocalExperts(m)
					if len(locals) != n {
						t.Errorf("E=%d ep=%d %v rank %d: %d owned, local says %d", e, ep, p, r, len(locals), n)
					}
					for l, g := range locals {
						if m[g] != int32(l) {
							t.Errorf("E=%d ep=%d %v rank %d: local ids not dense: %v", e, ep, p, r, m)
						}
						if owner[g] != -1 {
							t.Errorf("E=%d ep=%d %v: expert %d owned by ranks %d and %d", e, ep, p, g, owner[g], r)
						}
						owner[g] = r
						if p == RoundRobin && g%ep != r {
							t.Errorf("E=%d ep=%d round_robin: expert %d on rank %d", e, ep, g, r)
						}
					}
					if p == Linear && len(locals) > 0 && !slices.Equal(locals, seq(locals[0], n)) {
						t.Errorf("E=%d ep=%d linear rank %d: %v not a contiguous block", e, ep, r, locals)
					}
				}
				if total != e {
					t.Errorf("E=%d ep=%d %v: Σ local = %d", e, ep, p, total)
				}
				for g, r := range owner {
					if r == -1 {
						t.Errorf("E=%d ep=%d %v: expert %d unowned", e, ep, p, g)
					}
				}
			}
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestModelPlacements_Section8 checks linear placement of the §8 model table's expert counts.
// counts[r] is rank r's expert count; rank r's block starts at Σ counts[:r].
func TestModelPlacements_Section8(t *testing.T) {
	tests := []struct {
		model  string
		e, ep  int
		counts []int
	}{
		{"DeepSeek-V3", 256, 8, []int{32, 32, 32, 32, 32, 32, 32, 32}},
		{"DeepSeek-V3", 256, 4, []int{64, 64, 64, 64}},
		{"DeepSeek-V2", 160, 8, []int{20, 20, 20, 20, 20, 20, 20, 20}},
		{"DeepSeek-V2-Lite", 64, 8, []int{8, 8, 8, 8, 8, 8, 8, 8}},
		{"Qwen3", 128, 2, []int{64, 64}},
		{"Qwen3", 128, 4, []int{32, 32, 32, 32}},
		{"Qwen3", 128, 8, []int{16, 16, 16, 16, 16, 16, 16, 16}},
		{"Qwen2-57B", 64, 4, []int{16, 16, 16, 16}},
		{"Mixtral", 8, 2, []int{4, 4}},
		{"Mixtral", 8, 4, []int{2, 2, 2, 2}},
		{"Mixtral", 8, 8, []int{1, 1, 1, 1, 1, 1, 1, 1}},
		{"Qwen1.5-MoE", 60, 8, []int{8, 8, 8, 8, 7, 7, 7, 7}},
		{"Qwen1.5-MoE", 60, 7, []int{9, 9, 9, 9, 8, 8, 8}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s_E%d_ep%d", tc.model, tc.e, tc.ep), func(t *testing.T) {
			start := 0
			for r, want := range tc.counts {
				n, m, err := ExpertMap(tc.e, tc.ep, r, Linear)
				if err != nil {
					t.Fatal(err)
				}
				if got := LocalExperts(m); n != want || !slices.Equal(got, seq(start, want)) {
					t.Errorf("rank %d: %d experts %v, want [%d, %d)", r, n, got, start, start+want)
				}
				start += want
			}
			if start != tc.e {
				t.Fatalf("table counts sum to %d, want %d", start, tc.e)
			}
		})
	}
}

func TestEffectivePlacement_Section3_3(t *testing.T) {
	tests := []struct {
		name      string
		requested Placement
		groups    int
		redundant int
		eplb      bool
		want      Placement
	}{
		{"DeepSeek-V3 groups 8", RoundRobin, 8, 0, false, RoundRobin},
		{"DeepSeek-V2 groups 8", RoundRobin, 8, 0, false, RoundRobin},
		{"Mixtral no groups", RoundRobin, 0, 0, false, Linear},
		{"one group", RoundRobin, 1, 0, false, Linear},
		{"redundant experts", RoundRobin, 8, 32, true, Linear},
		{"redundant without eplb", RoundRobin, 8, 8, false, Linear},
		{"eplb", RoundRobin, 8, 0, true, Linear},
		{"linear stays", Linear, 8, 0, false, Linear},
		{"linear with eplb", Linear, 0, 4, true, Linear},
		{"unknown passes through", Placement(7), 8, 0, false, Placement(7)},
	}
	for _, tc := range tests {
		if got := EffectivePlacement(tc.requested, tc.groups, tc.redundant, tc.eplb); got != tc.want {
			t.Errorf("%s: EffectivePlacement(%v, %d, %d, %t) = %v, want %v", tc.name, tc.requested, tc.groups, tc.redundant, tc.eplb, got, tc.want)
		}
	}
}

func TestParsePlacement(t *testing.T) {
	tests := []struct {
		in   string
		want Placement
		err  bool
	}{
		{"linear", Linear, false},
		{"round_robin", RoundRobin, false},
		{"round-robin", RoundRobin, false},
		{"", 0, true},
		{"custom", 0, true},
		{"Linear", 0, true},
	}
	for _, tc := range tests {
		got, err := ParsePlacement(tc.in)
		if tc.err {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParsePlacement(%q) = %v, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePlacement(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := ParsePlacement(got.String()); err != nil || back != got {
			t.Errorf("ParsePlacement(%q.String()) = %v, %v", tc.in, back, err)
		}
	}
	if s := Placement(3).String(); s != "Placement(3)" {
		t.Errorf("Placement(3).String() = %q", s)
	}
}

func TestLocalExperts(t *testing.T) {
	tests := []struct {
		m    []int32
		want []int
	}{
		{nil, nil},
		{[]int32{-1, -1}, []int{}},
		{[]int32{1, -1, 0}, []int{2, 0}}, // local-id order, not global order
		{[]int32{0, -1, 1, -1, 2, -1, 3, -1, 4}, []int{0, 2, 4, 6, 8}},
	}
	for _, tc := range tests {
		got := LocalExperts(tc.m)
		if !slices.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
			t.Errorf("LocalExperts(%v) = %#v, want %#v", tc.m, got, tc.want)
		}
	}
}

// Explicit placements: any valid split works, in the listed local order; a missing,
// duplicated or out-of-range expert, or the wrong number of lists, is refused by name.
func TestExplicitPlacement(t *testing.T) {
	ranks := [][]int{{7, 0}, {1, 6}, {2, 5}, {3, 4}}
	for r, want := range ranks {
		local, m, err := ExplicitExpertMap(8, ranks, r)
		if err != nil || local != 2 {
			t.Fatalf("rank %d: %d, %v", r, local, err)
		}
		if got := LocalExperts(m); !slices.Equal(got, want) {
			t.Errorf("rank %d holds %v, want %v", r, got, want)
		}
	}
	// Uneven splits are fine; so is a rank with no expert.
	if _, m, err := ExplicitExpertMap(3, [][]int{{2, 0, 1}, {}}, 1); err != nil || len(LocalExperts(m)) != 0 {
		t.Errorf("empty rank: %v, %v", m, err)
	}
	for _, c := range []struct {
		ranks [][]int
		msg   string
	}{
		{[][]int{{0, 1, 2, 3}, {4, 5, 6}}, "expert 7 is on no rank"},
		{[][]int{{0, 1, 2, 3}, {3, 4, 5, 6, 7}}, "expert 3 is on rank 0 and rank 1"},
		{[][]int{{0, 1, 2, 3}, {4, 5, 6, 8}}, "rank 1 lists expert 8, outside [0, 8)"},
		{[][]int{{0, 1, 2, 3, 4, 5, 6, 7}}, "1 rank lists for an EP group of 2"},
	} {
		err := ValidateExplicit(8, 2, c.ranks)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: %v, want %q", c.ranks, err, c.msg)
		}
	}
}
