package rank

// The functions below mirror vLLM's vllm/forward_context.py DPMetadata (§6) and the chunk loop
// of G2's forward_impl_chunked / ChunkingMoERunner (§1.5). They take the per-DP-rank token
// counts (num_tokens_across_dp) as a slice and have no error return: invalid input (sp < 1,
// chunk < 1, i < 0, a negative count) yields nil slices and -1 counts, never a panic.

func ceilDiv(a, b int) int { return (a + b - 1) / b }

func validCounts(tokensPerDP []int, sp int) bool {
	if sp < 1 {
		return false
	}
	for _, n := range tokensPerDP {
		if n < 0 {
			return false
		}
	}
	return true
}

// SPTokens is DPMetadata's sp_tokens: repeat_each(ceil(n_d/sp), sp), of length dp·sp. Entry
// d·sp + t is the row count of TP rank t of DP rank d under sequence parallelism (each DP rank's
// T rows padded to a multiple of sp and split evenly, models/utils.py sequence_parallel_chunk).
// These are the sizes of the EP all-gather-v / reduce-scatter-v (sp_local_sizes).
func SPTokens(tokensPerDP []int, sp int) []int {
	if !validCounts(tokensPerDP, sp) {
		return nil
	}
	out := make([]int, 0, len(tokensPerDP)*sp)
	for _, n := range tokensPerDP {
		for range sp {
			out = append(out, ceilDiv(n, sp))
		}
	}
	return out
}

// CuSPTokens is DPMetadata's cu_tokens_across_sp: the running sum of SPTokens.
func CuSPTokens(tokensPerDP []int, sp int) []int {
	out := SPTokens(tokensPerDP, sp)
	for i := 1; i < len(out); i++ {
		out[i] += out[i-1]
	}
	return out
}

// ChunkedSizes is DPMetadata's chunked_sizes(sp, C, i): entry k is min(C, sp_tokens[k] − C·i),
// replaced by 1 when ≤ 0 so that an exhausted rank stays in lockstep by re-sending one row.
func ChunkedSizes(tokensPerDP []int, sp, chunk, i int) []int {
	if chunk < 1 || i < 0 {
		return nil
	}
	out := SPTokens(tokensPerDP, sp)
	for k, n := range out {
		out[k] = min(chunk, n-chunk*i)
		if out[k] <= 0 {
			out[k] = 1
		}
	}
	return out
}

// NumChunks is the lockstep iteration count of the chunk loop, the same on every rank:
// M = maxTokens (max_tokens_across_dp), M = ceil(M/sp) when sp > 1, then ceil(M/C).
// It returns -1 for maxTokens < 0, sp < 1 or chunk < 1.
func NumChunks(maxTokens, sp, chunk int) int {
	if maxTokens < 0 || sp < 1 || chunk < 1 {
		return -1
	}
	m := maxTokens
	if sp > 1 {
		m = ceilDiv(m, sp)
	}
	return ceilDiv(m, chunk)
}

// ChunkRows is the row range [start, end) a rank with n rows copies in chunk i of the loop
// whose bound is m (max_tokens_across_dp, divided by sp under SP): s0 = i·C, e0 = min(s0+C, m),
// start = min(s0, n−1), end = min(e0, n). An exhausted rank therefore re-sends its last row
// [n−1, n), matching ChunkedSizes' 1. For n == 0 vLLM slices [-1:0], which is empty in Python;
// ChunkRows returns (0, 0) for it. Invalid input (n < 0, m < n, chunk < 1, i < 0) gives (-1, -1):
// m is a maximum over ranks, so it is never below this rank's n.
func ChunkRows(n, m, chunk, i int) (start, end int) {
	if n < 0 || m < n || chunk < 1 || i < 0 {
		return -1, -1
	}
	if n == 0 {
		return 0, 0
	}
	s0 := i * chunk
	e0 := min(s0+chunk, m)
	return min(s0, n-1), min(e0, n)
}
