package rank

// MoEParallel is the MoE view of one rank, as vLLM's fused_moe/config.py
// FusedMoEParallelConfig.make computes it (§4.1).
type MoEParallel struct {
	// UseEP is dp·pcp·tp > 1 && the EP switch: with a single rank in the flattened group there
	// is nothing to distribute experts over.
	UseEP bool
	// FlatSize = dp·pcp·tp, FlatRank = dp_rank·pcp·tp + pcp_rank·tp + tp_rank: the MoE layer
	// flattens DP, PCP and attention TP into one dimension.
	FlatSize, FlatRank int
	// TPSize/TPRank is the MoE tensor parallelism: the flattened group without EP (so DP and PCP
	// ranks also slice the intermediate dim), 1/0 with EP.
	TPSize, TPRank int
	// EPSize/EPRank is the flattened group with EP, 1/0 without. EPRank equals the rank's
	// position in its EP group (Layout.GroupOf(EP, rank)).
	EPSize, EPRank int

	DPSize, DPRank         int
	PCPSize, PCPRank       int
	AttnTPSize, AttnTPRank int // the configured tp: the group of the runner's final all-reduce

	// SequenceParallel is vLLM's ParallelConfig.use_sequence_parallel_moe for the default
	// allgather_reducescatter backend: EP && tp > 1 && dp > 1. SPSize is tp when on, else 1.
	SequenceParallel bool
	SPSize           int
	// UseAll2AllKernels = dp > 1 && UseEP.
	UseAll2AllKernels bool
}

// MoE returns the MoE parallel config of rank. moerun's dispatch backend is vLLM's default
// allgather_reducescatter, which qualifies for sequence-parallel MoE, so the backend is not an
// argument. PP does not enter: each pipeline stage has its own MoE layers and EP group. It
// returns the zero MoEParallel (FlatSize 0) for an invalid layout or an out-of-range rank.
func (l Layout) MoE(rank int) MoEParallel {
	if l.CheckRank(rank) != nil {
		return MoEParallel{}
	}
	c := l.Coord(rank)
	m := MoEParallel{
		FlatSize:   l.DP * l.PCP * l.TP,
		FlatRank:   (c.DP*l.PCP+c.PCP)*l.TP + c.TP,
		DPSize:     l.DP,
		DPRank:     c.DP,
		PCPSize:    l.PCP,
		PCPRank:    c.PCP,
		AttnTPSize: l.TP,
		AttnTPRank: c.TP,
		SPSize:     1,
	}
	m.UseEP = m.FlatSize > 1 && l.EP
	if m.UseEP {
		m.TPSize, m.TPRank = 1, 0
		m.EPSize, m.EPRank = m.FlatSize, m.FlatRank
	} else {
		m.TPSize, m.TPRank = m.FlatSize, m.FlatRank
		m.EPSize, m.EPRank = 1, 0
	}
	// vllm/config/parallel.py use_sequence_parallel_moe: backend qualifies && EP && tp>1 && dp>1.
	m.SequenceParallel = l.EP && l.TP > 1 && l.DP > 1
	if m.SequenceParallel {
		m.SPSize = l.TP
	}
	m.UseAll2AllKernels = l.DP > 1 && m.UseEP
	return m
}
