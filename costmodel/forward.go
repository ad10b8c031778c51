package costmodel

import (
	"fmt"
	"math"

	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

// Device is one GPU's peak rates (as worker run's bound uses them).
type Device struct {
	HBM   float64 `json:"hbm_bytes_per_s"`
	FLOPs float64 `json:"flops_per_s"`
}

// Forward is what a prediction needs: the layer, the rank grid, every DP rank's tokens,
// where each rank runs (GPUOf, identity when nil), the machine and its parameters.
type Forward struct {
	Cfg      moe.Config
	Layout   rank.Layout
	Tokens   []int // per DP rank
	Topology *topology.Topology
	GPUOf    func(rank int) int
	Params   Params
	Device   Device
	// OverlapRows: a pass of two or more chunks that dispatch at least this many rows each
	// runs each chunk's experts beside the collectives, as moe.Runner.SetOverlap (0: never).
	OverlapRows int
}

// Phase is one step of a forward pass and its predicted time.
type Phase struct {
	Name    string  `json:"phase"`
	Seconds float64 `json:"seconds"`
}

// PhaseNames are the phases of a prediction, in the order the runner runs them, then
// "overlap": the time an overlapped pass hides (zero or negative), so that the phases
// add up to the total.
var PhaseNames = []string{"dispatch", "pcp_gather", "experts", "pcp_scatter", "combine", "shared", "reduce", "overlap"}

// Predict costs one forward pass of every rank, as moe.Runner runs it, and returns the
// slowest rank's phases and total. On one stream the phases add up. An overlapped pass
// (OverlapRows) runs chunk i's experts on a second stream while the main one combines
// chunk i−1 (and its shared experts) and dispatches chunk i+1: after chunk 0's dispatch,
// each chunk takes the longer of its experts and that work, then the last combine. Experts
// cost the larger of reading the expected touched experts' weights and computing the
// expected slots, with tokens routed uniformly at random (each token picks top-k distinct
// experts): a local expert is touched by n rows with probability 1 − (1 − k/E)^n.
func (f Forward) Predict() (phases []Phase, total float64, slowest int, err error) {
	l, c := f.Layout, f.Cfg
	if err := l.Validate(); err != nil {
		return nil, 0, 0, err
	}
	if len(f.Tokens) != l.DP*l.ExtDP {
		return nil, 0, 0, fmt.Errorf("costmodel: %d token counts for %d DP ranks", len(f.Tokens), l.DP*l.ExtDP)
	}
	if f.Topology.NumGPUs() < l.World() {
		return nil, 0, 0, fmt.Errorf("costmodel: %d ranks on a topology of %d GPUs", l.World(), f.Topology.NumGPUs())
	}
	gpu := f.GPUOf
	if gpu == nil {
		gpu = func(r int) int { return r }
	}
	dt, err := c.ElementType()
	if err != nil {
		return nil, 0, 0, err
	}
	esz := float64(dt.Size())
	shards := make([]moe.Shard, l.World())
	for r := range shards {
		if shards[r], err = moe.NewShard(c, l, r); err != nil {
			return nil, 0, 0, err
		}
	}
	// rows is what rank r feeds the layer: its DP rank's tokens, its share under SP.
	rows := func(r int) int { return shards[r].Rows(f.Tokens[shards[r].Coord.DP]) }
	maxRows := 0
	for r := range shards {
		maxRows = max(maxRows, rows(r))
	}
	chunk := c.ChunkRows()
	chunks := rank.NumChunks(maxRows, 1, chunk)
	type groupRing struct {
		lk Link
		p  Params // f.Params for the group's ring size (ForRing)
	}
	links := map[[2]int]groupRing{}
	// ring is rank r's group of kind k, the link its ring sees and the parameters that cost
	// collectives on it: call ForOp of those.
	ring := func(k rank.GroupKind, r int) ([]int, Link, Params, error) {
		idx, _ := l.GroupOf(k, r)
		members := l.Groups(k)[idx]
		key := [2]int{int(k), idx}
		if gr, ok := links[key]; ok {
			return members, gr.lk, gr.p, nil
		}
		g := make([]int, len(members))
		for i, m := range members {
			g[i] = gpu(m)
		}
		p := f.Params.ForRing(len(g))
		lk, err := p.Ring(f.Topology, g)
		links[key] = groupRing{lk, p}
		return members, lk, p, err
	}
	hpad := float64(c.PaddedHidden())
	for r, s := range shards {
		var ph = map[string]float64{}
		// Each chunk's dispatch, experts, combine and shared experts, for the overlap.
		steps := make([]struct{ d, e, c, s float64 }, chunks)
		firstRows := 0 // the rows chunk 0 dispatches over the group
		for i := range chunks {
			d0, e0, c0, s0 := ph["dispatch"], ph["experts"], ph["combine"], ph["shared"]
			// Every member's rows in chunk i (a member whose rows ran out re-sends one).
			seen := rows(r)
			csz := func(m int) float64 {
				n := min(chunk, rows(m)-chunk*i)
				return float64(max(n, 1))
			}
			if s.Dispatch != "" {
				kind := rank.DP
				if s.Dispatch == "ep" {
					kind = rank.EP
				}
				members, lk, p, err := ring(kind, r)
				if err != nil {
					return nil, 0, 0, err
				}
				xb, lb := make([]float64, len(members)), make([]float64, len(members))
				seen = 0
				for j, m := range members {
					xb[j], lb[j] = csz(m)*hpad*esz, csz(m)*float64(c.Experts)*4
					seen += int(csz(m))
				}
				for _, b := range [][]float64{xb, lb} {
					t, err := vTime(AllGatherV, b, p, lk)
					if err != nil {
						return nil, 0, 0, err
					}
					ph["dispatch"] += t
				}
				t, err := vTime(ReduceScatterV, xb, p, lk)
				if err != nil {
					return nil, 0, 0, err
				}
				ph["combine"] += t
			} else {
				seen = int(csz(r))
			}
			if s.PCP {
				members, lk, p, err := ring(rank.PCP, r)
				if err != nil {
					return nil, 0, 0, err
				}
				n := float64(len(members))
				for _, b := range []float64{float64(seen) * hpad * esz, float64(seen) * float64(c.Experts) * 4} {
					t, _ := Time(AllGather, len(members), n*b, nil, p.ForOp(AllGather, lk))
					ph["pcp_gather"] += t
				}
				t, _ := Time(ReduceScatter, len(members), n*float64(seen)*hpad*esz, nil, p.ForOp(ReduceScatter, lk))
				ph["pcp_scatter"] += t
				seen *= len(members)
			}
			// The experts of this chunk.
			e, k := float64(c.Experts), float64(c.TopK)
			local := float64(len(s.Experts))
			touched := local * (1 - math.Pow(1-k/e, float64(seen)))
			slots := float64(seen) * k * local / e
			isl := float64(s.ISlice)
			bytes := touched * 3 * isl * hpad * esz
			flops := slots * 6 * isl * hpad
			ph["experts"] += max(bytes/f.Device.HBM, flops/f.Device.FLOPs)
			if c.SharedIntermediate > 0 {
				sh := 3 * float64(s.SharedSlice) * float64(c.Hidden)
				ph["shared"] += max(sh*esz/f.Device.HBM, 2*sh*csz(r)/f.Device.FLOPs)
			}
			steps[i].d, steps[i].e, steps[i].c, steps[i].s = ph["dispatch"]-d0, ph["experts"]-e0, ph["combine"]-c0, ph["shared"]-s0
			if i == 0 {
				firstRows = seen
			}
		}
		if f.OverlapRows > 0 && s.Dispatch != "" && !s.PCP && chunks > 1 && firstRows >= f.OverlapRows {
			// The main stream's work beside chunk i's experts: combine i−1, dispatch i+1.
			t, seq := steps[0].d, 0.0
			for i, st := range steps {
				beside := 0.0
				if i > 0 {
					beside += steps[i-1].c + steps[i-1].s
				}
				if i+1 < chunks {
					beside += steps[i+1].d
				}
				t += max(st.e, beside)
				seq += st.d + st.e + st.c + st.s
			}
			last := steps[chunks-1]
			t += last.c + last.s
			ph["overlap"] = t - seq
		}
		// The TP all-reduces after the chunks (G3).
		n := float64(rows(r))
		if s.LatentReduce || s.SharedReduce || s.FinalReduce {
			members, lk, p, err := ring(rank.TP, r)
			if err != nil {
				return nil, 0, 0, err
			}
			width := float64(c.Hidden)
			if s.LatentReduce {
				width = float64(c.Latent)
			}
			count := 0
			for _, on := range []bool{s.LatentReduce, s.SharedReduce, s.FinalReduce} {
				if on {
					count++
				}
			}
			t, _ := Time(AllReduce, len(members), n*width*esz, nil, p.ForOp(AllReduce, lk))
			ph["reduce"] += float64(count) * t
		}
		sum := 0.0
		for _, v := range ph {
			sum += v
		}
		if r == 0 || sum > total {
			total, slowest = sum, r
			phases = phases[:0]
			for _, name := range PhaseNames {
				phases = append(phases, Phase{name, ph[name]})
			}
		}
	}
	return phases, total, slowest, nil
}

// vTime costs a -v collective (AllGatherV or ReduceScatterV) with these blocks as the NCCL
// backend runs it: the plain collective when every block has the same, non-zero size.
func vTime(op Op, blocks []float64, p Params, lk Link) (float64, error) {
	var plain Op
	switch op {
	case AllGatherV:
		plain = AllGather
	case ReduceScatterV:
		plain = ReduceScatter
	}
	total, equal := 0.0, blocks[0] > 0
	for _, b := range blocks {
		total += b
		equal = equal && b == blocks[0]
	}
	if equal && plain != "" {
		return Time(plain, len(blocks), total, nil, p.ForOp(plain, lk))
	}
	return Time(op, len(blocks), 0, blocks, p.ForOp(op, lk))
}
