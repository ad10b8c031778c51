package rank

import (
	"fmt"
	"strings"
)

// Layout is the shape of the rank grid. World = ExtDP·DP·PP·PCP·TP and a rank's coordinates are
// read from the grid arange(world).reshape(ExtDP, DP, PP, PCP, TP), as vLLM's
// parallel_state.py initialize_model_parallel builds it: TP is innermost (contiguous ranks), then
// PCP, PP, DP, and the external-DP axis outermost.
//
// EP is the enable_expert_parallel switch; it changes the MoE config (MoE), not the grid.
type Layout struct {
	ExtDP, DP, PP, PCP, TP int
	EP                     bool
}

// NewLayout builds the layout of a job of world ranks, the way the launcher's flags describe it.
// dp == 0 derives dp = world/(tp·pcp·pp). ExtDP is always 1 here; it exists for the grid formula
// (vLLM's leading -1 axis) and for direct construction.
func NewLayout(world, tp, pcp, pp, dp int, ep bool) (Layout, error) {
	switch {
	case world < 1:
		return Layout{}, invalidf("np %d must be >= 1", world)
	case tp < 1:
		return Layout{}, invalidf("tp %d must be >= 1", tp)
	case pcp < 1:
		return Layout{}, invalidf("pcp %d must be >= 1", pcp)
	case pp < 1:
		return Layout{}, invalidf("pp %d must be >= 1", pp)
	case dp < 0:
		return Layout{}, invalidf("dp %d must be >= 1 (or 0 to derive it from np)", dp)
	}
	inner := tp * pcp * pp
	if world%inner != 0 {
		return Layout{}, invalidf("np %d is not a multiple of tp·pcp·pp = %d", world, inner)
	}
	if dp == 0 {
		dp = world / inner
	}
	if world != dp*inner {
		return Layout{}, invalidf("np %d does not match dp·pp·pcp·tp = %d·%d·%d·%d = %d",
			world, dp, pp, pcp, tp, dp*inner)
	}
	return Layout{ExtDP: 1, DP: dp, PP: pp, PCP: pcp, TP: tp, EP: ep}, nil
}

// World is the number of ranks, ExtDP·DP·PP·PCP·TP.
func (l Layout) World() int { return l.ExtDP * l.DP * l.PP * l.PCP * l.TP }

// Validate reports whether every axis has size >= 1. A Layout literal with a forgotten field
// (size 0) is caught here rather than as a division by zero later.
func (l Layout) Validate() error {
	for _, a := range l.axes() {
		if a.size < 1 {
			return invalidf("layout %s: %s %d must be >= 1", l, a.name, a.size)
		}
	}
	return nil
}

// CheckRank reports whether rank is a valid rank of a valid layout.
func (l Layout) CheckRank(rank int) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if rank < 0 || rank >= l.World() {
		return invalidf("rank %d out of range [0, %d) for %s", rank, l.World(), l)
	}
	return nil
}

type axis struct {
	name string
	size int
}

// axes lists the grid axes outermost first, the order String prints them in.
func (l Layout) axes() []axis {
	return []axis{{"ext-dp", l.ExtDP}, {"dp", l.DP}, {"pp", l.PP}, {"pcp", l.PCP}, {"tp", l.TP}}
}

// String is stable (used in logs and golden files): "world W = a n × b m …" listing the axes
// whose size is not 1, outermost first (ext-dp, dp, pp, pcp, tp), then " (ep)" when the EP
// switch is on. A single rank prints "world 1". An invalid layout prints every field.
//
//	world 8 = dp 4 × tp 2 (ep)
//	world 8 = dp 2 × pcp 2 × tp 2
func (l Layout) String() string {
	var b strings.Builder
	valid := true
	for _, a := range l.axes() {
		if a.size < 1 {
			valid = false
		}
	}
	if !valid {
		fmt.Fprintf(&b, "invalid layout {ext-dp %d, dp %d, pp %d, pcp %d, tp %d, ep %t}",
			l.ExtDP, l.DP, l.PP, l.PCP, l.TP, l.EP)
		return b.String()
	}
	fmt.Fprintf(&b, "world %d", l.World())
	sep := " = "
	for _, a := range l.axes() {
		if a.size != 1 {
			fmt.Fprintf(&b, "%s%s %d", sep, a.name, a.size)
			sep = " × "
		}
	}
	if l.EP {
		b.WriteString(" (ep)")
	}
	return b.String()
}

// Coord is a rank's position on each axis of the grid.
type Coord struct {
	ExtDP, DP, PP, PCP, TP int
}

// Coord inverts rank = (((x·DP + d)·PP + p)·PCP + c)·TP + t. It returns a Coord with every field
// -1 if the layout is invalid or rank is out of range.
func (l Layout) Coord(rank int) Coord {
	if l.CheckRank(rank) != nil {
		return Coord{-1, -1, -1, -1, -1}
	}
	var c Coord
	c.TP, rank = rank%l.TP, rank/l.TP
	c.PCP, rank = rank%l.PCP, rank/l.PCP
	c.PP, rank = rank%l.PP, rank/l.PP
	c.DP, c.ExtDP = rank%l.DP, rank/l.DP
	return c
}

// Rank is the global rank at c: (((x·DP + d)·PP + p)·PCP + c)·TP + t (vLLM: global rank =
// dp_rank·(pp·pcp·tp) + local rank). It returns -1 if the layout is invalid or a coordinate is
// out of range.
func (l Layout) Rank(c Coord) int {
	if l.Validate() != nil ||
		c.ExtDP < 0 || c.ExtDP >= l.ExtDP || c.DP < 0 || c.DP >= l.DP ||
		c.PP < 0 || c.PP >= l.PP || c.PCP < 0 || c.PCP >= l.PCP || c.TP < 0 || c.TP >= l.TP {
		return -1
	}
	return (((c.ExtDP*l.DP+c.DP)*l.PP+c.PP)*l.PCP+c.PCP)*l.TP + c.TP
}
