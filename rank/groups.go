package rank

import "fmt"

// GroupKind names one family of process groups of the grid.
type GroupKind int

// The group kinds, in the order vLLM's initialize_model_parallel builds them.
const (
	TP GroupKind = iota
	PCP
	PP
	DP
	EP
)

// AllGroupKinds lists every kind in declaration order (tp, pcp, pp, dp, ep).
var AllGroupKinds = []GroupKind{TP, PCP, PP, DP, EP}

// String returns "tp", "pcp", "pp", "dp" or "ep"; an unknown kind prints as GroupKind(n).
func (k GroupKind) String() string {
	switch k {
	case TP:
		return "tp"
	case PCP:
		return "pcp"
	case PP:
		return "pp"
	case DP:
		return "dp"
	case EP:
		return "ep"
	}
	return fmt.Sprintf("GroupKind(%d)", int(k))
}

// GroupSize is the number of ranks in one group of kind k: TP, PCP, PP and DP are the axis sizes;
// EP is DP·PCP·TP. It returns 0 for an invalid layout or an unknown kind.
func (l Layout) GroupSize(k GroupKind) int {
	if l.Validate() != nil {
		return 0
	}
	switch k {
	case TP:
		return l.TP
	case PCP:
		return l.PCP
	case PP:
		return l.PP
	case DP:
		return l.DP
	case EP:
		return l.DP * l.PCP * l.TP
	}
	return 0
}

// GroupOf returns which group of kind k holds rank (an index into Groups(k)) and the rank's
// position inside it. Callers use (index, pos) as the (color, key) of a communicator split.
// It returns (-1, -1) for an invalid layout, an out-of-range rank or an unknown kind.
//
// The index reproduces vLLM's parallel_state.py initialize_model_parallel, which builds every
// kind as all_ranks.transpose(axis, 4).reshape(-1, size) on the grid [x, d, p, c, t]: groups
// are listed in row-major order of the remaining axes after the swap, and members in order of
// the swapped-in axis.
//
//	TP : reshape(-1, tp)                          axes (x, d, p, c) | t
//	PCP: transpose(3, 4)                          axes (x, d, p, t) | c
//	PP : transpose(2, 4)                          axes (x, d, t, c) | p
//	DP : transpose(1, 4)                          axes (x, t, p, c) | d
//	EP : transpose(1, 2).reshape(-1, dp·pcp·tp)   axes (x, p)       | (d, c, t)
//
// So for EP, pos = (d·PCP + c)·TP + t, which is FusedMoEParallelConfig's flat_rank (§4.1).
func (l Layout) GroupOf(k GroupKind, rank int) (index, pos int) {
	if l.CheckRank(rank) != nil {
		return -1, -1
	}
	c := l.Coord(rank)
	switch k {
	case TP:
		return ((c.ExtDP*l.DP+c.DP)*l.PP+c.PP)*l.PCP + c.PCP, c.TP
	case PCP:
		return ((c.ExtDP*l.DP+c.DP)*l.PP+c.PP)*l.TP + c.TP, c.PCP
	case PP:
		return ((c.ExtDP*l.DP+c.DP)*l.TP+c.TP)*l.PCP + c.PCP, c.PP
	case DP:
		return ((c.ExtDP*l.TP+c.TP)*l.PP+c.PP)*l.PCP + c.PCP, c.DP
	case EP:
		return c.ExtDP*l.PP + c.PP, (c.DP*l.PCP+c.PCP)*l.TP + c.TP
	}
	return -1, -1
}

// Groups lists every group of kind k in vLLM's order (see GroupOf), e.g. for world 8 = dp 2 ×
// pcp 2 × tp 2 the DP groups are [0 4] [2 6] [1 5] [3 7]. The groups partition the world. The EP
// groups are listed whether or not the EP switch is on: vLLM builds the EP group for every MoE
// model (it is the dispatch group under sequence parallelism). It returns nil for an invalid
// layout or an unknown kind.
func (l Layout) Groups(k GroupKind) [][]int {
	size := l.GroupSize(k)
	if size == 0 {
		return nil
	}
	world := l.World()
	groups := make([][]int, world/size)
	for i := range groups {
		groups[i] = make([]int, size)
	}
	for r := range world {
		idx, pos := l.GroupOf(k, r)
		groups[idx][pos] = r
	}
	return groups
}
