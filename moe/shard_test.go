package moe

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/moerun/moerun/rank"
)

func layout(t *testing.T, world, tp, pcp, dp int, ep bool) rank.Layout {
	t.Helper()
	l, err := rank.NewLayout(world, tp, pcp, 1, dp, ep)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// §4.3: world 4, dp 2, tp 2, EP, E=8: linear placement r0 {0,1} … r3 {6,7}, the whole
// intermediate size, sequence parallel, dispatch over EP, no all-reduce.
func TestShardWalk_Section4_3(t *testing.T) {
	cfg, _ := Preset("tiny")
	l := layout(t, 4, 2, 1, 2, true)
	for r := 0; r < 4; r++ {
		s, err := NewShard(cfg, l, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{2 * r, 2*r + 1}; !slices.Equal(s.Experts, want) {
			t.Errorf("rank %d experts %v, want %v", r, s.Experts, want)
		}
		if !s.SP || s.Dispatch != "ep" || s.ISlice != cfg.Intermediate || s.FinalReduce || s.Rows(5) != 3 {
			t.Errorf("rank %d: %s", r, s.Describe())
		}
	}
	// The same with tp = 1: no SP, the DP group dispatches, no all-reduce (tp group of 1).
	s, _ := NewShard(cfg, layout(t, 2, 1, 1, 2, true), 1)
	if s.SP || s.Dispatch != "dp" || s.FinalReduce || s.Rows(5) != 5 {
		t.Errorf("tp 1: %s", s.Describe())
	}
}

// §4.1: without EP every tp·dp·pcp rank holds a slice of the intermediate dimension, and
// one all-reduce over the attention TP group finishes the sum (§1.3).
func TestShardSlicesWithoutEP_Section4_1(t *testing.T) {
	cfg, _ := Preset("tiny") // I = 96
	cases := []struct {
		world, tp, pcp, dp int
		slice              int
		dispatch           string
		final              bool
	}{
		{2, 2, 1, 1, 48, "", true},
		{4, 2, 1, 2, 24, "dp", true},
		{2, 1, 1, 2, 48, "dp", false},
		{4, 2, 2, 1, 24, "", true},
		{2, 1, 2, 1, 48, "", false},
	}
	for _, c := range cases {
		l := layout(t, c.world, c.tp, c.pcp, c.dp, false)
		for r := 0; r < c.world; r++ {
			s, err := NewShard(cfg, l, r)
			if err != nil {
				t.Fatal(err)
			}
			if s.ISlice != c.slice || s.IOffset != l.MoE(r).TPRank*c.slice || s.Dispatch != c.dispatch || s.FinalReduce != c.final || s.PCP != (c.pcp > 1) || len(s.Experts) != 8 || s.ExpertMap != nil {
				t.Errorf("%v rank %d: %s", l, r, s.Describe())
			}
		}
	}
}

// §1.3 G3 with a latent transform and shared experts: the fused output is all-reduced in
// latent space, then the shared output alone, and there is no final all-reduce.
func TestShardReductions_Section1_3(t *testing.T) {
	lat, _ := Preset("tiny-latent")
	s, err := NewShard(lat, layout(t, 2, 2, 1, 1, false), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !s.LatentReduce || !s.SharedReduce || s.FinalReduce || s.SharedSlice != lat.SharedIntermediate/2 {
		t.Errorf("latent: %s", s.Describe())
	}
	ds, _ := Preset("tiny-deepseek")
	s, _ = NewShard(ds, layout(t, 2, 2, 1, 1, true), 1)
	if s.LatentReduce || s.SharedReduce || !s.FinalReduce || s.SharedSlice != 24 || s.SharedOffset != 24 {
		t.Errorf("deepseek tp 2 ep: %s", s.Describe())
	}
	// Sequence parallel: shared experts whole, nothing reduced.
	s, _ = NewShard(ds, layout(t, 4, 2, 1, 2, true), 3)
	if !s.SP || s.SharedSlice != ds.SharedIntermediate || s.FinalReduce || s.SharedReduce {
		t.Errorf("deepseek sp: %s", s.Describe())
	}
}

func TestShardErrors(t *testing.T) {
	cfg, _ := Preset("tiny")
	cfg.Intermediate = 100
	if _, err := NewShard(cfg, layout(t, 8, 2, 1, 4, false), 0); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "moe_intermediate_size 100 is not divisible by the MoE TP size 8") {
		t.Errorf("I 100 over 8: %v", err)
	}
	ds, _ := Preset("tiny-deepseek")
	if _, err := NewShard(ds, layout(t, 8, 2, 2, 2, true), 0); err == nil || !strings.Contains(err.Error(), "does not combine with pcp") {
		t.Errorf("sp with pcp: %v", err)
	}
}
