package rank

import (
	"fmt"
	"slices"
)

// Placement is the expert placement strategy of vLLM's ParallelConfig.expert_placement_strategy.
// The "custom" JSON placement is not supported.
type Placement int

const (
	Linear     Placement = iota // contiguous blocks of experts per EP rank
	RoundRobin                  // expert e lives on EP rank e mod ep
)

// String returns "linear" or "round_robin" (vLLM's spelling); an unknown value prints as
// Placement(n).
func (p Placement) String() string {
	switch p {
	case Linear:
		return "linear"
	case RoundRobin:
		return "round_robin"
	}
	return fmt.Sprintf("Placement(%d)", int(p))
}

// ParsePlacement accepts "linear", "round_robin" and "round-robin" (flag-friendly).
func ParsePlacement(s string) (Placement, error) {
	switch s {
	case "linear":
		return Linear, nil
	case "round_robin", "round-robin":
		return RoundRobin, nil
	}
	return 0, invalidf("unknown expert placement %q (want linear or round_robin)", s)
}

// ExpertMap mirrors vLLM's fused_moe/expert_map_manager.py determine_expert_map (older copy in
// layer.py). It returns how many experts epRank owns and, when epSize > 1, the int32 map from
// global expert id to local id, -1 for experts owned elsewhere. epSize == 1 returns
// (numExperts, nil): every expert is local under the identity map.
//
// With base = E/ep and rem = E mod ep, each of the FIRST rem ranks gets one extra expert: that
// is what the code does (its docstring says the leftovers go to the last rank). Linear gives
// rank r the block starting at r·base + min(r, rem); round robin gives it r, r+ep, r+2ep, ….
//
// numExperts < epSize is allowed, as in vLLM (which asserts only ep_size > 0): ranks
// numExperts..epSize-1 then own no experts and get an all -1 map. Errors: numExperts < 1,
// epSize < 1 (vLLM's assertion), epRank outside [0, epSize), an unknown placement.
func ExpertMap(numExperts, epSize, epRank int, p Placement) (local int, expertMap []int32, err error) {
	switch {
	case numExperts < 1:
		return 0, nil, invalidf("expert map: num_experts %d must be >= 1", numExperts)
	case epSize < 1:
		return 0, nil, invalidf("expert map: ep_size %d must be >= 1", epSize)
	case epRank < 0 || epRank >= epSize:
		return 0, nil, invalidf("expert map: ep_rank %d out of range [0, %d)", epRank, epSize)
	case p != Linear && p != RoundRobin:
		return 0, nil, invalidf("expert map: unknown placement %v", p)
	}
	if epSize == 1 {
		return numExperts, nil, nil
	}
	base, rem := numExperts/epSize, numExperts%epSize
	local = base
	if epRank < rem {
		local++
	}
	expertMap = make([]int32, numExperts)
	for i := range expertMap {
		expertMap[i] = -1
	}
	switch p {
	case Linear:
		start := epRank*base + min(epRank, rem)
		for i := range local {
			expertMap[start+i] = int32(i)
		}
	case RoundRobin:
		for i := range local {
			expertMap[epRank+i*epSize] = int32(i)
		}
	}
	return local, expertMap, nil
}

// EffectivePlacement is the placement vLLM actually uses for a requested one. This mirrors the
// FusedMoE constructor in layer.py: round_robin is kept only for models with expert groups
// (num_expert_group > 1), no redundant experts and EPLB off; otherwise vLLM logs a warning and
// falls back to linear. Callers that want the warning compare the result with the request.
// vLLM's further condition, that all2all kernels (when used) must be a backend that needs
// round-robin tables (DeepEP-LL, NIXL-EP), does not apply: moerun dispatches with
// allgather_reducescatter only. Any request other than RoundRobin is returned unchanged.
func EffectivePlacement(requested Placement, numExpertGroup int, redundantExperts int, eplb bool) Placement {
	if requested != RoundRobin {
		return requested
	}
	if numExpertGroup > 1 && redundantExperts == 0 && !eplb {
		return RoundRobin
	}
	return Linear
}

// LocalExperts lists the global expert ids a rank owns, in local-id order (the order of the
// rank's weight slices), from an expert map as ExpertMap returns it. A nil map (epSize 1, every
// expert local) yields nil: the caller knows E. Entries < 0 are skipped.
func LocalExperts(expertMap []int32) []int {
	if expertMap == nil {
		return nil
	}
	type pair struct{ local, global int }
	var owned []pair
	for g, l := range expertMap {
		if l >= 0 {
			owned = append(owned, pair{int(l), g})
		}
	}
	slices.SortStableFunc(owned, func(a, b pair) int { return a.local - b.local })
	out := make([]int, len(owned))
	for i, p := range owned {
		out[i] = p.global
	}
	return out
}

// ValidateExplicit checks an explicit placement: ranks[r] lists the global experts EP rank r
// holds, in its local order; there must be one list per EP rank and every expert of
// [0, numExperts) must appear exactly once (no redundant copies: each expert has one home).
func ValidateExplicit(numExperts, epSize int, ranks [][]int) error {
	if len(ranks) != epSize {
		return invalidf("explicit expert placement: %d rank lists for an EP group of %d", len(ranks), epSize)
	}
	home := make([]int, numExperts)
	for i := range home {
		home[i] = -1
	}
	for r, list := range ranks {
		for _, e := range list {
			switch {
			case e < 0 || e >= numExperts:
				return invalidf("explicit expert placement: rank %d lists expert %d, outside [0, %d)", r, e, numExperts)
			case home[e] >= 0:
				return invalidf("explicit expert placement: expert %d is on rank %d and rank %d (each expert exactly once)", e, home[e], r)
			}
			home[e] = r
		}
	}
	for e, r := range home {
		if r < 0 {
			return invalidf("explicit expert placement: expert %d is on no rank (each expert exactly once)", e)
		}
	}
	return nil
}

// ExplicitExpertMap is ExpertMap for an explicit placement (validated first): epRank holds
// ranks[epRank] in that local order.
func ExplicitExpertMap(numExperts int, ranks [][]int, epRank int) (local int, expertMap []int32, err error) {
	if err := ValidateExplicit(numExperts, len(ranks), ranks); err != nil {
		return 0, nil, err
	}
	if epRank < 0 || epRank >= len(ranks) {
		return 0, nil, invalidf("expert map: ep_rank %d out of range [0, %d)", epRank, len(ranks))
	}
	expertMap = make([]int32, numExperts)
	for i := range expertMap {
		expertMap[i] = -1
	}
	for l, e := range ranks[epRank] {
		expertMap[e] = int32(l)
	}
	return len(ranks[epRank]), expertMap, nil
}
