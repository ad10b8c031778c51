package moe

import (
	"fmt"

	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/rank"
)

// Shard is what one rank holds and does in the layer: a pure function of the config, the
// layout and the rank (no I/O), so it can be printed and tested without processes.
type Shard struct {
	Cfg    Config
	Layout rank.Layout
	Rank   int
	Coord  rank.Coord
	MoE    rank.MoEParallel

	// Experts: the global ids held here, in local-id order; ExpertMap is vLLM's
	// global→local map (-1: elsewhere), nil when every expert is local.
	Experts   []int
	ExpertMap []int32
	// The slice of every expert's intermediate dimension held here (without EP the MoE
	// TP ranks split it: §4.1).
	ISlice, IOffset int
	// The slice of the shared experts' intermediate dimension: split over the attention TP
	// group (RowParallel with reduce_results=False), whole under sequence parallelism.
	SharedSlice, SharedOffset int

	// SP: sequence-parallel MoE (§5.4): the rank holds a 1/tp chunk of its DP rank's
	// tokens, dispatches over the EP group, and nothing is all-reduced.
	SP bool
	// Dispatch names the group of the naive dispatch/combine (§5.1): "ep" under SP, "dp"
	// when dp > 1, "" for none.
	Dispatch string
	// PCP: all-gather and reduce-scatter over the PCP group around the experts (§5.5).
	PCP bool
	// LatentReduce: all-reduce the fused output in latent space (G3 latent pre-reduce).
	LatentReduce bool
	// SharedReduce: all-reduce the shared output alone (G3 early shared reduce).
	SharedReduce bool
	// FinalReduce: all-reduce shared + fused over the attention TP group (G3 late reduce).
	FinalReduce bool
}

// NewShard plans rank r's part of the layer. Errors name what does not fit.
func NewShard(cfg Config, l rank.Layout, r int) (Shard, error) {
	if err := cfg.Validate(); err != nil {
		return Shard{}, err
	}
	if err := l.Validate(); err != nil {
		return Shard{}, err
	}
	if err := l.CheckRank(r); err != nil {
		return Shard{}, err
	}
	s := Shard{Cfg: cfg, Layout: l, Rank: r, Coord: l.Coord(r), MoE: l.MoE(r)}
	m := s.MoE
	s.SP = m.SequenceParallel
	if s.SP && l.PCP > 1 {
		return Shard{}, fmt.Errorf("%w: sequence-parallel MoE (ep with tp %d > 1 and dp %d > 1) does not combine with pcp %d", ErrConfig, l.TP, l.DP, l.PCP)
	}

	placement, err := cfg.PlacementKind()
	if err != nil {
		return Shard{}, err
	}
	placement = rank.EffectivePlacement(placement, cfg.ExpertGroups, 0, false)
	if m.UseEP {
		var emap []int32
		switch {
		case cfg.PlacementRanks != nil && len(cfg.PlacementRanks) != m.EPSize:
			err = fmt.Errorf("%d rank lists for an EP group of %d", len(cfg.PlacementRanks), m.EPSize)
		case cfg.PlacementRanks != nil:
			_, emap, err = rank.ExplicitExpertMap(cfg.Experts, cfg.PlacementRanks, m.EPRank)
		default:
			_, emap, err = rank.ExpertMap(cfg.Experts, m.EPSize, m.EPRank, placement)
		}
		if err != nil {
			return Shard{}, fmt.Errorf("%w: expert placement: %w", ErrConfig, err)
		}
		s.ExpertMap = emap
		s.Experts = rank.LocalExperts(emap)
	} else {
		if cfg.PlacementRanks != nil {
			return Shard{}, fmt.Errorf("%w: an explicit expert placement needs expert parallelism (--ep)", ErrConfig)
		}
		for e := 0; e < cfg.Experts; e++ {
			s.Experts = append(s.Experts, e)
		}
	}
	if cfg.Intermediate%m.TPSize != 0 {
		return Shard{}, fmt.Errorf("%w: moe_intermediate_size %d is not divisible by the MoE TP size %d (without EP every tp·dp·pcp rank holds a slice)", ErrConfig, cfg.Intermediate, m.TPSize)
	}
	s.ISlice = cfg.Intermediate / m.TPSize
	s.IOffset = m.TPRank * s.ISlice

	if cfg.SharedIntermediate > 0 {
		if s.SP || l.TP == 1 {
			s.SharedSlice = cfg.SharedIntermediate
		} else {
			if cfg.SharedIntermediate%l.TP != 0 {
				return Shard{}, fmt.Errorf("%w: shared_intermediate_size %d is not divisible by tp %d", ErrConfig, cfg.SharedIntermediate, l.TP)
			}
			s.SharedSlice = cfg.SharedIntermediate / l.TP
			s.SharedOffset = s.Coord.TP * s.SharedSlice
		}
	}

	switch {
	case s.SP:
		s.Dispatch = "ep"
	case l.DP > 1:
		s.Dispatch = "dp"
	}
	s.PCP = l.PCP > 1

	// §1.3, G3: R starts false (no kernel reduces its own output here).
	partial := !s.SP && (m.TPSize > 1 || m.EPSize > 1)
	reduced := false
	if cfg.Latent > 0 && partial {
		s.LatentReduce, reduced = true, true
	}
	if cfg.SharedIntermediate > 0 && !s.SP && reduced {
		s.SharedReduce = true
	}
	s.FinalReduce = partial && !reduced
	if l.TP == 1 {
		// The attention TP group has one rank: its all-reduces are the identity.
		s.LatentReduce, s.SharedReduce, s.FinalReduce = false, false, false
	}
	return s, nil
}

// Rows is how many rows of its DP rank's tokens this rank holds: all of them, or its
// sequence-parallel chunk (§5.4: T padded to a multiple of tp, ceil(T/tp) rows each).
func (s Shard) Rows(tokens int) int {
	if s.SP {
		return (tokens + s.Layout.TP - 1) / s.Layout.TP
	}
	return tokens
}

// Source is the index of the token source this rank reads: each (DP, PCP) rank has its
// own tokens, and the TP ranks of one source share them.
func (s Shard) Source() int { return s.Coord.DP*s.Layout.PCP + s.Coord.PCP }

// Describe is a multi-line summary of the shard for logs and --verbose.
func (s Shard) Describe() string {
	d := s.Dispatch
	if d == "" {
		d = "none"
	}
	experts := fmt.Sprintf("all %d", len(s.Experts))
	if s.ExpertMap != nil {
		experts = fmt.Sprintf("%d %v", len(s.Experts), s.Experts)
	}
	return fmt.Sprintf("rank %d %+v: experts %s, intermediate [%d, %d) of %d, shared [%d, %d), dispatch %s, pcp %v, sp %v, reduce latent %v shared %v final %v",
		s.Rank, s.Coord, experts, s.IOffset, s.IOffset+s.ISlice, s.Cfg.Intermediate, s.SharedOffset, s.SharedOffset+s.SharedSlice,
		d, s.PCP, s.SP, s.LatentReduce, s.SharedReduce, s.FinalReduce)
}

// generators of every tensor; the scales keep activations of order 1 at any size.

func (s Shard) elem() dtype.DType { t, _ := s.Cfg.ElementType(); return t }

// XGen fills a [rows, H] input of token source src: rows at or past tokens are zero
// (sequence-parallel padding).
func XGen(seed uint64, src, rows, tokens int) *Gen {
	return &Gen{Seed: seed, A: TensorX, BlockRows: rows, Experts: []int{src}, ValidRows: tokens, Scale: uniformScale(1)}
}

// RouterGen fills the router gate [E, H].
func RouterGen(seed uint64, hidden int) *Gen {
	return &Gen{Seed: seed, A: TensorRouter, Scale: uniformScale(1 / sqrt(hidden))}
}

// BiasValue is element e of the score-correction bias (float32, as in DeepSeek).
func BiasValue(seed uint64, e int) float32 { return Uniform(seed, TensorBias, 0, 0, e) * 0.1 }

// Bias is the layer's generated score-correction bias, or nil when it has none.
func Bias(cfg Config, seed uint64) []float32 {
	if !cfg.ScoreBias {
		return nil
	}
	b := make([]float32, cfg.Experts)
	for e := range b {
		b[e] = BiasValue(seed, e)
	}
	return b
}

// unsharded is the layer held whole by one rank: every expert and the whole intermediate
// size (the reference's and the state dict's view).
func unsharded(cfg Config) (Shard, error) {
	one, err := rank.NewLayout(1, 1, 1, 1, 1, false)
	if err != nil {
		return Shard{}, err
	}
	cfg.PlacementRanks = nil // one rank holds every expert, wherever EP would put them
	return NewShard(cfg, one, 0)
}

// w13Gen fills this rank's W13: per local expert 2·I rows, gate then up, of the slice
// [IOffset, IOffset+ISlice), with zero columns past the unpadded width.
func (s Shard) w13Gen(seed uint64) *Gen {
	return &Gen{Seed: seed, A: TensorGate, B: TensorUp, BlockRows: 2 * s.ISlice, SplitAt: s.ISlice,
		Experts: s.Experts, RowOffset: s.IOffset, ValidCols: s.Cfg.ExpertHidden(),
		Scale: uniformScale(1 / sqrt(s.Cfg.ExpertHidden()))}
}

// w2Gen fills this rank's W2: per local expert Hpad rows (zero past the unpadded width) of
// the columns [IOffset, IOffset+ISlice).
func (s Shard) w2Gen(seed uint64) *Gen {
	return &Gen{Seed: seed, A: TensorDown, BlockRows: s.Cfg.PaddedHidden(), Experts: s.Experts,
		ColOffset: s.IOffset, ValidRows: s.Cfg.ExpertHidden(), Scale: uniformScale(1 / sqrt(s.Cfg.Intermediate))}
}

func (s Shard) sharedW13Gen(seed uint64) *Gen {
	return &Gen{Seed: seed, A: TensorSharedGate, B: TensorSharedUp, BlockRows: 2 * s.SharedSlice, SplitAt: s.SharedSlice,
		RowOffset: s.SharedOffset, Scale: uniformScale(1 / sqrt(s.Cfg.Hidden))}
}

func (s Shard) sharedW2Gen(seed uint64) *Gen {
	return &Gen{Seed: seed, A: TensorSharedDown, ColOffset: s.SharedOffset, Scale: uniformScale(1 / sqrt(s.Cfg.SharedIntermediate))}
}

func latentInGen(seed uint64, c Config) *Gen {
	return &Gen{Seed: seed, A: TensorLatentIn, Scale: uniformScale(1 / sqrt(c.Hidden))}
}

func latentOutGen(seed uint64, c Config) *Gen {
	return &Gen{Seed: seed, A: TensorLatentOut, Scale: uniformScale(1 / sqrt(c.Latent))}
}
