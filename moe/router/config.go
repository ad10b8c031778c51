// Package router owns expert selection for one MoE layer, as vLLM's routers
// compute it (FusedTopKRouter, FusedTopKBiasRouter, GroupedTopKRouter and the
// fallbacks between them): pure functions from router logits to the top-k
// weights and expert ids of every token (moe-semantics.md §2).
//
// It must not do I/O, read the environment or clocks, keep package-level
// state, or know about ranks: EPLB's logical→physical mapping, the routing
// simulator, zero experts, custom routing functions, hash tables and fused
// shared experts belong to the caller. Ids are global logical ids in [0, E).
package router

import (
	"errors"
	"fmt"
	"math"
)

// Scoring is the function that turns a logit into an expert score
// (vLLM's scoring_func).
type Scoring int

const (
	Softmax      Scoring = iota // softmax over the E logits of a token
	Sigmoid                     // σ(z) per expert
	SqrtSoftplus                // sqrt(softplus(z)) per expert (DeepSeek-V4); FusedTopKBias only
)

var scoringNames = [...]string{Softmax: "softmax", Sigmoid: "sigmoid", SqrtSoftplus: "sqrtsoftplus"}

// String returns vLLM's name for s: "softmax", "sigmoid" or "sqrtsoftplus".
func (s Scoring) String() string {
	if s >= 0 && int(s) < len(scoringNames) {
		return scoringNames[s]
	}
	return fmt.Sprintf("Scoring(%d)", int(s))
}

func (s Scoring) valid() bool { return s >= 0 && int(s) < len(scoringNames) }

// ParseScoring parses vLLM's scoring_func name (exact, lower case).
func ParseScoring(name string) (Scoring, error) {
	for i, n := range scoringNames {
		if n == name {
			return Scoring(i), nil
		}
	}
	return 0, configErrorf("unknown scoring function %q (want softmax, sigmoid or sqrtsoftplus)", name)
}

// MarshalText implements encoding.TextMarshaler with the vLLM name.
func (s Scoring) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, configErrorf("unknown scoring function %v", s)
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; see ParseScoring.
func (s *Scoring) UnmarshalText(b []byte) error {
	v, err := ParseScoring(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Kind says which vLLM router computes the routing for a Config.
type Kind int

const (
	FusedTopK     Kind = iota // FusedTopKRouter: top-k of softmax/sigmoid scores
	FusedTopKBias             // FusedTopKBiasRouter: top-k of score+bias, weights from the unbiased score
	GroupedTopK               // GroupedTopKRouter: DeepSeek-V2/V3 group-limited top-k
)

var kindNames = [...]string{FusedTopK: "FusedTopKRouter", FusedTopKBias: "FusedTopKBiasRouter", GroupedTopK: "GroupedTopKRouter"}

// String names the vLLM class.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Config describes the router of one MoE layer. The zero value of every
// optional field means "off": no grouping, no bias, no renormalisation,
// softmax scoring, no routed scaling.
type Config struct {
	NumExperts     int       // E: logical experts, the width of a logits row
	TopK           int       // K: experts per token
	Scoring        Scoring   // scoring_func
	Renormalize    bool      // divide the K weights by their sum
	NumExpertGroup int       // G: num_expert_group; 0 or 1 = no grouping
	TopKGroup      int       // g: topk_group, groups kept per token
	UseGroupedTopK bool      // the model asks for grouped top-k (DeepSeek); see Kind
	Bias           []float32 // e_score_correction_bias, len E, or nil: picks experts, never weights them

	// RoutedScalingFactor multiplies the weights of the routers that take it
	// in vLLM: GroupedTopK and FusedTopKBias (including the grouped→bias
	// fallback), after renormalisation. FusedTopKRouter has no such parameter,
	// so a FusedTopK Kind ignores it and the caller applies it to the layer
	// output (§1.3); see AppliesRoutedScale. 1 means none, and so does 0 (the
	// zero value). A model that scales its output itself
	// (apply_routed_scale_to_output) must pass 1 here, as vLLM does.
	RoutedScalingFactor float64
}

// Errors returned by this package match these with errors.Is.
var (
	ErrConfig = errors.New("invalid router config")
	ErrLength = errors.New("wrong slice length")
)

type routerError struct {
	kind error
	msg  string
}

func (e *routerError) Error() string { return "router: " + e.msg }
func (e *routerError) Unwrap() error { return e.kind }

func configErrorf(format string, args ...any) error {
	return &routerError{ErrConfig, fmt.Sprintf(format, args...)}
}

func lengthErrorf(format string, args ...any) error {
	return &routerError{ErrLength, fmt.Sprintf(format, args...)}
}

// groupedRequested reports whether vLLM's router factory keeps the
// GroupedTopKRouter (§2.2 rule 3): grouping is asked for and it is not the
// one-group case, which falls through to the non-grouped routers. (vLLM also
// keeps the grouped router when its routing-method type is not Unspecified;
// with one group that only differs by the routed scale, and G=0 would divide
// by zero there, so we always fall through.)
func (c Config) groupedRequested() bool {
	return c.UseGroupedTopK && !(c.NumExpertGroup <= 1 && c.TopKGroup <= 1)
}

// GroupingValid is GroupedTopKRouter's own check of the grouping: G ≥ 1,
// E > G and G divides E. When it fails vLLM falls back silently (see Kind),
// so Validate does not reject an invalid grouping; callers that want to
// warn about it ask here.
func (c Config) GroupingValid() bool {
	g := c.NumExpertGroup
	return g >= 1 && c.NumExperts > g && c.NumExperts%g == 0
}

// Kind returns the vLLM router that runs this Config (§2.2 priority, §2.3
// fallbacks):
//   - UseGroupedTopK with G ≤ 1 and g ≤ 1 falls through to the rules below;
//   - UseGroupedTopK with a valid grouping → GroupedTopK;
//   - UseGroupedTopK with an invalid grouping → FusedTopKBias if there is a
//     bias (scaled), else FusedTopK with softmax whatever Scoring says;
//   - a bias → FusedTopKBias; otherwise FusedTopK.
func (c Config) Kind() Kind {
	if c.groupedRequested() {
		if c.GroupingValid() {
			return GroupedTopK
		}
		if c.Bias != nil {
			return FusedTopKBias
		}
		return FusedTopK
	}
	if c.Bias != nil {
		return FusedTopKBias
	}
	return FusedTopK
}

// EffectiveScoring is the scoring function that actually runs: Scoring,
// except for the grouped fallback without a bias, where vLLM calls
// fused_topk without its scoring_func and so always uses softmax.
func (c Config) EffectiveScoring() Scoring {
	if c.groupedRequested() && !c.GroupingValid() && c.Bias == nil {
		return Softmax
	}
	return c.Scoring
}

// AppliesRoutedScale reports whether Route multiplies the weights by
// RoutedScalingFactor (GroupedTopK and FusedTopKBias do; FusedTopK does not).
func (c Config) AppliesRoutedScale() bool { return c.Kind() != FusedTopK }

// scale is the factor Route applies to the weights.
func (c Config) scale() float64 {
	if c.Kind() == FusedTopK || c.RoutedScalingFactor == 0 {
		return 1
	}
	return c.RoutedScalingFactor
}

// Validate reports the first problem that would make vLLM reject the Config
// or produce garbage. An invalid grouping is not an error (vLLM falls back;
// see GroupingValid). The error matches ErrConfig.
func (c Config) Validate() error {
	e, k := c.NumExperts, c.TopK
	switch {
	case e < 1:
		return configErrorf("%d experts; need at least 1", e)
	case k < 1:
		return configErrorf("top-k %d; need at least 1", k)
	case k > e:
		return configErrorf("top-k %d is larger than the %d experts", k, e)
	case !c.Scoring.valid():
		return configErrorf("unknown scoring function %v", c.Scoring)
	case c.NumExpertGroup < 0:
		return configErrorf("num_expert_group %d is negative", c.NumExpertGroup)
	case c.TopKGroup < 0:
		return configErrorf("topk_group %d is negative", c.TopKGroup)
	case c.Bias != nil && len(c.Bias) != e:
		return configErrorf("bias has %d values for %d experts", len(c.Bias), e)
	}
	for i, b := range c.Bias {
		if math.IsNaN(float64(b)) || math.IsInf(float64(b), 0) {
			return configErrorf("bias[%d] is %v", i, b)
		}
	}
	if s := c.RoutedScalingFactor; s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return configErrorf("routed scaling factor %v must be positive and finite (1 = none)", s)
	}
	if c.UseGroupedTopK && c.TopKGroup > max(c.NumExpertGroup, 1) {
		return configErrorf("topk_group %d is larger than the %d expert groups", c.TopKGroup, c.NumExpertGroup)
	}
	switch c.Kind() {
	case GroupedTopK:
		g, groups := c.TopKGroup, c.NumExpertGroup
		if g < 1 {
			return configErrorf("topk_group %d; grouped top-k needs at least 1", g)
		}
		if kept := g * (e / groups); k > kept {
			return configErrorf("top-k %d is larger than the %d experts in %d of %d groups", k, kept, g, groups)
		}
		if c.Scoring == SqrtSoftplus {
			return configErrorf("%v does not support scoring %v", GroupedTopK, c.Scoring)
		}
	case FusedTopK:
		if c.EffectiveScoring() == SqrtSoftplus {
			return configErrorf("%v does not support scoring %v (vLLM runs it only with a bias)", FusedTopK, SqrtSoftplus)
		}
	}
	return nil
}
