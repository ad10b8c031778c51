package router

import "math"

// sqrtSoftplusMinSum is the floor of the renormalisation sum for
// sqrtsoftplus scoring (vLLM clamps it with min=1e-20).
const sqrtSoftplusMinSum = 1e-20

// softplusThreshold mirrors torch.nn.functional.softplus: above it the
// result is the input itself.
const softplusThreshold = 20

// Route routes T tokens. logits is [T*E] row-major; weights and ids are the
// caller-allocated [T*K] outputs. Ids are in [0, E); weights are the
// (unbiased) scores of the chosen experts, renormalised if asked, then
// multiplied by the routed scaling factor for the Kinds that take it.
//
// Slot order within a token: descending by the selection score (the score
// plus the bias for the bias routers, the score otherwise), ties to the lower
// expert id. vLLM leaves the order unspecified (topk with sorted=False), so
// consumers must treat a token's K slots as a set; the order is fixed here
// only to make the output deterministic. A NaN score ranks below every
// number, so ids stay distinct and in range whatever the input.
//
// Renormalisation divides by the sum of the K weights; for sqrtsoftplus the
// sum is clamped to at least 1e-20 (as vLLM does), and for the other scorings
// a sum that is not positive is replaced by 1 (as vLLM's CUDA top-k kernels
// do), so an all-zero row gives zero weights, not NaN.
//
// Route computes in F (elementary functions go through float64): float32 for
// the runner, float64 for the reference. It allocates its scratch once per
// call, never per token.
func Route[F float32 | float64](c Config, logits []F, weights []F, ids []int32) error {
	if err := c.Validate(); err != nil {
		return err
	}
	e, k := c.NumExperts, c.TopK
	if len(logits)%e != 0 {
		return lengthErrorf("logits has %d values, not a whole number of rows of %d experts", len(logits), e)
	}
	t := len(logits) / e
	if len(weights) != t*k {
		return lengthErrorf("weights has %d slots, want %d (%d tokens × top-k %d)", len(weights), t*k, t, k)
	}
	if len(ids) != t*k {
		return lengthErrorf("ids has %d slots, want %d (%d tokens × top-k %d)", len(ids), t*k, t, k)
	}
	if t == 0 {
		return nil
	}

	kind := c.Kind()
	scoring := c.EffectiveScoring()
	scale := F(c.scale())

	p := make([]F, e) // scores: the weights come from here
	q := p            // selection scores: p, or p + bias
	var bias []F
	if c.Bias != nil { // Kind is FusedTopKBias or GroupedTopK
		q = make([]F, e)
		bias = make([]F, e)
		for i, b := range c.Bias {
			bias[i] = F(b)
		}
	}
	var (
		groups, groupSize, keepGroups int
		groupScore                    []F
		keep                          []bool
	)
	n := k
	if kind == GroupedTopK {
		groups, keepGroups = c.NumExpertGroup, c.TopKGroup
		groupSize = e / groups
		groupScore = make([]F, groups)
		keep = make([]bool, groups)
		n = max(n, keepGroups)
	}
	topVal := make([]F, n)
	topIdx := make([]int32, n)

	for tok := range t {
		score(scoring, logits[tok*e:(tok+1)*e], p)
		if bias != nil {
			for i := range q {
				q[i] = p[i] + bias[i]
			}
		}

		var mask []bool
		if kind == GroupedTopK {
			for gi := range groups {
				grp := q[gi*groupSize : (gi+1)*groupSize]
				if bias != nil {
					groupScore[gi] = top2Sum(grp)
				} else {
					groupScore[gi] = maxOf(grp)
				}
			}
			topK(groupScore, keepGroups, nil, 1, topIdx, topVal)
			clear(keep)
			for _, gi := range topIdx[:keepGroups] {
				keep[gi] = true
			}
			mask = keep
		}
		topK(q, k, mask, groupSize, topIdx, topVal)

		w := weights[tok*k : (tok+1)*k]
		var sum F
		for j, id := range topIdx[:k] {
			w[j] = p[id]
			sum += w[j]
		}
		if c.Renormalize {
			if scoring == SqrtSoftplus {
				if sum < sqrtSoftplusMinSum {
					sum = sqrtSoftplusMinSum
				}
			} else if !(sum > 0) {
				sum = 1
			}
			for j := range w {
				w[j] /= sum
			}
		}
		if scale != 1 {
			for j := range w {
				w[j] *= scale
			}
		}
		copy(ids[tok*k:(tok+1)*k], topIdx[:k])
	}
	return nil
}

// score writes the scores of one token's logits z into p.
func score[F float32 | float64](s Scoring, z, p []F) {
	switch s {
	case Softmax:
		m := z[0]
		for _, v := range z[1:] {
			if v > m {
				m = v
			}
		}
		var sum F
		for i, v := range z {
			p[i] = F(math.Exp(float64(v - m)))
			sum += p[i]
		}
		for i := range p {
			p[i] /= sum
		}
	case Sigmoid:
		for i, v := range z {
			p[i] = F(1 / (1 + math.Exp(-float64(v))))
		}
	case SqrtSoftplus:
		for i, v := range z {
			x := float64(v)
			if x <= softplusThreshold {
				x = math.Log1p(math.Exp(x))
			}
			p[i] = F(math.Sqrt(x))
		}
	}
}

// beats is the ranking order: larger first, NaN below every number. Equal
// values do not beat each other, so the earlier (lower) index keeps its rank.
func beats[F float32 | float64](a, b F) bool {
	return a > b || (b != b && a == a)
}

func maxOf[F float32 | float64](s []F) F {
	m := s[0]
	for _, v := range s[1:] {
		if beats(v, m) {
			m = v
		}
	}
	return m
}

// top2Sum is the bias group score: the sum of the two largest values.
func top2Sum[F float32 | float64](s []F) F {
	a, b := s[0], s[1]
	if beats(b, a) {
		a, b = b, a
	}
	for _, v := range s[2:] {
		if beats(v, a) {
			a, b = v, a
		} else if beats(v, b) {
			b = v
		}
	}
	return a + b
}

// topK writes the indices and values of the k best entries of s into
// idx[:k] and val[:k], best first, ties to the lower index. If mask is not
// nil, entry i takes part only if mask[i/groupSize]. It returns how many
// entries it found (k unless the mask leaves fewer; Validate rules that out).
func topK[F float32 | float64](s []F, k int, mask []bool, groupSize int, idx []int32, val []F) int {
	n := 0
	for i, v := range s {
		if mask != nil && !mask[i/groupSize] {
			continue
		}
		if n == k && !beats(v, val[k-1]) {
			continue
		}
		pos := n
		if n < k {
			n++
		} else {
			pos = k - 1
		}
		for pos > 0 && beats(v, val[pos-1]) {
			val[pos], idx[pos] = val[pos-1], idx[pos-1]
			pos--
		}
		val[pos], idx[pos] = v, int32(i)
	}
	return n
}
