package router

import (
	"errors"
	"testing"
)

func TestScoringNames(t *testing.T) {
	for _, tc := range []struct {
		s    Scoring
		name string
	}{
		{Softmax, "softmax"},
		{Sigmoid, "sigmoid"},
		{SqrtSoftplus, "sqrtsoftplus"},
	} {
		if got := tc.s.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", int(tc.s), got, tc.name)
		}
		got, err := ParseScoring(tc.name)
		if err != nil || got != tc.s {
			t.Errorf("ParseScoring(%q) = %v, %v; want %v", tc.name, got, err, tc.s)
		}
		var u Scoring
		if b, err := tc.s.MarshalText(); err != nil || u.UnmarshalText(b) != nil || u != tc.s {
			t.Errorf("text round trip of %v: %q, %v -> %v", tc.s, b, err, u)
		}
	}
	if got := Scoring(7).String(); got != "Scoring(7)" {
		t.Errorf("Scoring(7).String() = %q", got)
	}
	_, err := ParseScoring("Softmax")
	const want = `router: unknown scoring function "Softmax" (want softmax, sigmoid or sqrtsoftplus)`
	if err == nil || err.Error() != want || !errors.Is(err, ErrConfig) {
		t.Errorf("ParseScoring(Softmax) error = %v, want %q", err, want)
	}
}

func TestKindNames(t *testing.T) {
	for k, want := range map[Kind]string{
		FusedTopK: "FusedTopKRouter", FusedTopKBias: "FusedTopKBiasRouter",
		GroupedTopK: "GroupedTopKRouter", Kind(9): "Kind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// TestKind_Section2_2 checks the router factory's priority order and the
// GroupedTopKRouter fallbacks of §2.3.
func TestKind_Section2_2(t *testing.T) {
	bias8 := make([]float32, 8)
	bias6 := make([]float32, 6)
	for _, tc := range []struct {
		name    string
		c       Config
		kind    Kind
		scoring Scoring
		scales  bool
		valid   bool // GroupingValid
	}{
		{"plain softmax", Config{NumExperts: 8, TopK: 2}, FusedTopK, Softmax, false, false},
		{"plain sigmoid keeps sigmoid", Config{NumExperts: 8, TopK: 2, Scoring: Sigmoid}, FusedTopK, Sigmoid, false, false},
		{"bias", Config{NumExperts: 8, TopK: 2, Scoring: Sigmoid, Bias: bias8}, FusedTopKBias, Sigmoid, true, false},
		{"groups without UseGroupedTopK are ignored", Config{NumExperts: 8, TopK: 2, NumExpertGroup: 4, TopKGroup: 2}, FusedTopK, Softmax, false, true},
		{"grouped", Config{NumExperts: 8, TopK: 2, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true}, GroupedTopK, Softmax, true, true},
		{"grouped with bias", Config{NumExperts: 8, TopK: 2, Scoring: Sigmoid, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true, Bias: bias8}, GroupedTopK, Sigmoid, true, true},
		{"grouped, one group falls through", Config{NumExperts: 8, TopK: 2, Scoring: Sigmoid, NumExpertGroup: 1, TopKGroup: 1, UseGroupedTopK: true}, FusedTopK, Sigmoid, false, true},
		{"grouped, no groups falls through to bias", Config{NumExperts: 8, TopK: 2, Scoring: Sigmoid, UseGroupedTopK: true, Bias: bias8}, FusedTopKBias, Sigmoid, true, false},
		{"invalid grouping with bias", Config{NumExperts: 6, TopK: 2, Scoring: Sigmoid, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true, Bias: bias6}, FusedTopKBias, Sigmoid, true, false},
		{"invalid grouping without bias: softmax", Config{NumExperts: 6, TopK: 2, Scoring: Sigmoid, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true}, FusedTopK, Softmax, false, false},
		{"G equal to E is invalid", Config{NumExperts: 8, TopK: 2, NumExpertGroup: 8, TopKGroup: 2, UseGroupedTopK: true}, FusedTopK, Softmax, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := tc.c.Kind(); got != tc.kind {
				t.Errorf("Kind() = %v, want %v", got, tc.kind)
			}
			if got := tc.c.EffectiveScoring(); got != tc.scoring {
				t.Errorf("EffectiveScoring() = %v, want %v", got, tc.scoring)
			}
			if got := tc.c.AppliesRoutedScale(); got != tc.scales {
				t.Errorf("AppliesRoutedScale() = %v, want %v", got, tc.scales)
			}
			if got := tc.c.GroupingValid(); got != tc.valid {
				t.Errorf("GroupingValid() = %v, want %v", got, tc.valid)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	nan := float32(0)
	nan /= nan
	ok := Config{NumExperts: 8, TopK: 2}
	with := func(f func(*Config)) Config { c := ok; f(&c); return c }
	for _, tc := range []struct {
		name string
		c    Config
		want string // "" = valid
	}{
		{"minimal", ok, ""},
		{"K equal to E", with(func(c *Config) { c.TopK = 8 }), ""},
		{"zero scale means none", with(func(c *Config) { c.RoutedScalingFactor = 0 }), ""},
		{"invalid grouping falls back", Config{NumExperts: 6, TopK: 2, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true}, ""},
		{"G=0 g=1 is no grouping", Config{NumExperts: 8, TopK: 2, TopKGroup: 1, UseGroupedTopK: true}, ""},
		{"g > G ignored without grouping", with(func(c *Config) { c.NumExpertGroup, c.TopKGroup = 2, 3 }), ""},
		{"sqrtsoftplus with bias", with(func(c *Config) { c.Scoring, c.Bias = SqrtSoftplus, make([]float32, 8) }), ""},
		{"sqrtsoftplus in the softmax fallback", Config{NumExperts: 6, TopK: 2, Scoring: SqrtSoftplus, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true}, ""},
		{"deepseek-v3", Config{NumExperts: 256, TopK: 8, Scoring: Sigmoid, Renormalize: true, NumExpertGroup: 8, TopKGroup: 4, UseGroupedTopK: true, Bias: make([]float32, 256), RoutedScalingFactor: 2.5}, ""},

		{"no experts", Config{TopK: 1}, "router: 0 experts; need at least 1"},
		{"negative experts", Config{NumExperts: -3, TopK: 1}, "router: -3 experts; need at least 1"},
		{"no top-k", Config{NumExperts: 8}, "router: top-k 0; need at least 1"},
		{"K > E", Config{NumExperts: 8, TopK: 9}, "router: top-k 9 is larger than the 8 experts"},
		{"unknown scoring", with(func(c *Config) { c.Scoring = 3 }), "router: unknown scoring function Scoring(3)"},
		{"negative G", with(func(c *Config) { c.NumExpertGroup = -1 }), "router: num_expert_group -1 is negative"},
		{"negative g", with(func(c *Config) { c.TopKGroup = -2 }), "router: topk_group -2 is negative"},
		{"short bias", with(func(c *Config) { c.Bias = make([]float32, 7) }), "router: bias has 7 values for 8 experts"},
		{"empty non-nil bias", with(func(c *Config) { c.Bias = []float32{} }), "router: bias has 0 values for 8 experts"},
		{"NaN bias", with(func(c *Config) { c.Bias = make([]float32, 8); c.Bias[3] = nan }), "router: bias[3] is NaN"},
		{"negative scale", with(func(c *Config) { c.RoutedScalingFactor = -1 }), "router: routed scaling factor -1 must be positive and finite (1 = none)"},
		{"g > G", Config{NumExperts: 8, TopK: 2, NumExpertGroup: 4, TopKGroup: 5, UseGroupedTopK: true}, "router: topk_group 5 is larger than the 4 expert groups"},
		{"g > G even when the grouping is invalid", Config{NumExperts: 6, TopK: 2, NumExpertGroup: 4, TopKGroup: 5, UseGroupedTopK: true}, "router: topk_group 5 is larger than the 4 expert groups"},
		{"g > 1 without groups", Config{NumExperts: 8, TopK: 2, TopKGroup: 2, UseGroupedTopK: true}, "router: topk_group 2 is larger than the 0 expert groups"},
		{"grouped with g=0", Config{NumExperts: 8, TopK: 2, NumExpertGroup: 4, UseGroupedTopK: true}, "router: topk_group 0; grouped top-k needs at least 1"},
		{"K > kept experts", Config{NumExperts: 8, TopK: 5, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true}, "router: top-k 5 is larger than the 4 experts in 2 of 4 groups"},
		{"grouped sqrtsoftplus", Config{NumExperts: 8, TopK: 2, Scoring: SqrtSoftplus, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true, Bias: make([]float32, 8)}, "router: GroupedTopKRouter does not support scoring sqrtsoftplus"},
		{"sqrtsoftplus without bias", with(func(c *Config) { c.Scoring = SqrtSoftplus }), "router: FusedTopKRouter does not support scoring sqrtsoftplus (vLLM runs it only with a bias)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("errors.Is(%v, ErrConfig) = false", err)
			}
			// Route refuses the same Config with the same error.
			if rerr := Route(tc.c, []float32{}, nil, nil); rerr == nil || rerr.Error() != tc.want {
				t.Errorf("Route error = %v, want %q", rerr, tc.want)
			}
		})
	}
}
