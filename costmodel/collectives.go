// Package costmodel predicts the time of collectives and of an MoE forward pass from link
// parameters: each collective costed the way NCCL runs it (rings, and trees for small
// all-reduces) over the slowest link its ring crosses.
package costmodel

import (
	"fmt"
	"math"
	"slices"

	"github.com/moerun/moerun/commbench"
)

// Link is what a collective sees of the links of its ring: the per-step latency (seconds)
// and the bandwidth (bytes per second, one direction, per GPU) of the slowest hop.
//
// NCCL moves small messages with its low-latency protocols (LL, LL128: little fixed cost,
// part of the bandwidth) and large ones with Simple (more fixed cost per step, the full
// bandwidth), picking per size. A Link with a bulk regime (BulkLatency, BulkBandwidth) is
// costed both ways and the faster counts; without one, Latency and Bandwidth serve every
// size. On 2 × H200 one regime cannot match both 1 MiB and 1 GiB within 25 %; two do.
type Link struct {
	Latency       float64 `json:"latency_s"`
	Bandwidth     float64 `json:"bandwidth_bytes_per_s"`
	BulkLatency   float64 `json:"bulk_latency_s,omitempty"`
	BulkBandwidth float64 `json:"bulk_bandwidth_bytes_per_s,omitempty"`
}

func (l Link) valid() error {
	if !(l.Latency >= 0) || !(l.Bandwidth > 0) {
		return fmt.Errorf("costmodel: link latency %g s and bandwidth %g B/s: expected latency ≥ 0 and bandwidth > 0", l.Latency, l.Bandwidth)
	}
	if l.hasBulk() && !(l.BulkLatency >= 0 && l.BulkBandwidth > 0) {
		return fmt.Errorf("costmodel: link bulk latency %g s and bandwidth %g B/s: expected latency ≥ 0 and bandwidth > 0", l.BulkLatency, l.BulkBandwidth)
	}
	return nil
}

func (l Link) hasBulk() bool { return l.BulkLatency != 0 || l.BulkBandwidth != 0 }

// regimes are the (latency, bandwidth) pairs a collective is costed with.
func (l Link) regimes() [][2]float64 {
	if l.hasBulk() {
		return [][2]float64{{l.Latency, l.Bandwidth}, {l.BulkLatency, l.BulkBandwidth}}
	}
	return [][2]float64{{l.Latency, l.Bandwidth}}
}

// bulk is the bulk regime, or the only one.
func (l Link) bulk() (latency, bandwidth float64) {
	if l.hasBulk() {
		return l.BulkLatency, l.BulkBandwidth
	}
	return l.Latency, l.Bandwidth
}

// Op names a collective, as the sweep (commbench) does.
type Op = commbench.Op

// The collectives, by commbench's names.
const (
	AllGather      = commbench.AllGather
	AllGatherV     = commbench.AllGatherV
	ReduceScatter  = commbench.ReduceScatter
	ReduceScatterV = commbench.ReduceScatterV
	AllReduce      = commbench.AllReduce
	Broadcast      = commbench.Broadcast
)

// Time is the predicted time in seconds of one collective over n ranks on link l. bytes is
// the size of the whole buffer (the gathered output, the reduce-scatter input, the
// all-reduce buffer, the broadcast buffer), as nccl-tests and commbench count it; for the
// -v collectives, blocks are the per-rank block sizes in bytes instead (bytes is ignored).
//
//   - ring all-gather and reduce-scatter: n−1 steps, each a latency and 1/n of the buffer;
//   - the -v variants run as NCCL has no all-gather-v: a group of broadcasts, one per
//     non-empty block, pipelined along the ring together — n−1 latencies and the whole
//     buffer's (n−1)/n share of traffic, plus one latency per extra broadcast;
//   - all-reduce: the faster of a ring (reduce-scatter then all-gather, 2(n−1) steps) and a
//     tree (2·log2 n latencies, the whole buffer twice over the link), as NCCL picks by
//     size;
//   - broadcast: a pipelined ring, n−1 latencies and the buffer once.
func Time(op Op, n int, bytes float64, blocks []float64, l Link) (float64, error) {
	if err := l.valid(); err != nil {
		return 0, err
	}
	if n < 1 {
		return 0, fmt.Errorf("costmodel: %s over %d ranks: expected at least 1", op, n)
	}
	if n == 1 {
		return 0, nil // a copy at most, nothing on a link
	}
	best := math.Inf(1)
	for _, r := range l.regimes() {
		t, err := regimeTime(op, n, bytes, blocks, r[0], r[1])
		if err != nil {
			return 0, err
		}
		best = min(best, t)
	}
	return best, nil
}

// regimeTime is Time in one regime (a per-step latency and a bandwidth).
func regimeTime(op Op, n int, bytes float64, blocks []float64, latency, bandwidth float64) (float64, error) {
	l := struct{ Latency, Bandwidth float64 }{latency, bandwidth}
	steps := float64(n - 1)
	share := steps / float64(n)
	switch op {
	case AllGather, ReduceScatter:
		return steps*l.Latency + share*bytes/l.Bandwidth, nil
	case AllGatherV, ReduceScatterV:
		if len(blocks) != n {
			return 0, fmt.Errorf("costmodel: %s over %d ranks with %d blocks: expected one block per rank", op, n, len(blocks))
		}
		total, nonEmpty := 0.0, 0
		for _, b := range blocks {
			total += b
			if b > 0 {
				nonEmpty++
			}
		}
		return (steps+float64(max(nonEmpty-1, 0)))*l.Latency + share*total/l.Bandwidth, nil
	case AllReduce:
		ring := 2*steps*l.Latency + 2*share*bytes/l.Bandwidth
		tree := 2*math.Ceil(math.Log2(float64(n)))*l.Latency + 2*bytes/l.Bandwidth
		return min(ring, tree), nil
	case Broadcast:
		return steps*l.Latency + bytes/l.Bandwidth, nil
	}
	return 0, fmt.Errorf("costmodel: unknown collective %q", op)
}

// BusBandwidth is nccl-tests' bus bandwidth of a collective that took t seconds (bytes
// per second): algorithm bandwidth × (n−1)/n, × 2(n−1)/n for all-reduce, × 1 for broadcast.
func BusBandwidth(op Op, n int, bytes, t float64) float64 {
	if t <= 0 || n < 1 {
		return 0
	}
	alg := bytes / t
	switch op {
	case AllReduce:
		return alg * 2 * float64(n-1) / float64(n)
	case Broadcast:
		return alg
	}
	return alg * float64(n-1) / float64(n)
}

// Sample is one measured collective: what Time takes, and the seconds it took.
type Sample struct {
	Op      Op
	N       int
	Bytes   float64
	Blocks  []float64 // -v collectives
	Seconds float64
}

// coefficients are a and b of Time = a·latency + b·bytes/bandwidth for the ring form of
// each collective (calibration uses sizes where NCCL runs rings).
func (s Sample) coefficients() (a, b float64, err error) {
	if s.N < 2 {
		return 0, 0, fmt.Errorf("costmodel: a sample of %d ranks says nothing about a link", s.N)
	}
	steps := float64(s.N - 1)
	share := steps / float64(s.N)
	switch s.Op {
	case AllGather, ReduceScatter:
		return steps, share * s.Bytes, nil
	case AllGatherV, ReduceScatterV:
		total, nonEmpty := 0.0, 0
		for _, b := range s.Blocks {
			total += b
			if b > 0 {
				nonEmpty++
			}
		}
		return steps + float64(max(nonEmpty-1, 0)), share * total, nil
	case AllReduce:
		return 2 * steps, 2 * share * s.Bytes, nil
	case Broadcast:
		return steps, s.Bytes, nil
	}
	return 0, 0, fmt.Errorf("costmodel: unknown collective %q", s.Op)
}

// Fit finds the Link whose ring-form times best match the samples in relative terms
// (least squares of (measured − predicted) / measured over latency and 1/bandwidth).
func Fit(samples []Sample) (Link, error) {
	var saa, sab, sbb, sa, sb float64
	for _, s := range samples {
		if !(s.Seconds > 0) {
			return Link{}, fmt.Errorf("costmodel: a sample of %s took %g s", s.Op, s.Seconds)
		}
		a, b, err := s.coefficients()
		if err != nil {
			return Link{}, err
		}
		a, b = a/s.Seconds, b/s.Seconds // relative residual: 1 − a·α − b·x
		saa, sab, sbb, sa, sb = saa+a*a, sab+a*b, sbb+b*b, sa+a, sb+b
	}
	det := saa*sbb - sab*sab
	if len(samples) < 2 || det == 0 {
		return Link{}, fmt.Errorf("costmodel: %d samples do not fix both latency and bandwidth (give small and large sizes)", len(samples))
	}
	alpha := (sa*sbb - sb*sab) / det
	x := (saa*sb - sab*sa) / det // 1/bandwidth
	if x <= 0 {
		return Link{}, fmt.Errorf("costmodel: the samples give no positive bandwidth")
	}
	return Link{Latency: max(alpha, 0), Bandwidth: 1 / x}, nil
}

// FitAll fits a Link with a bulk regime and each collective's bandwidth factor (FitOps):
// the samples are split by size at every point that leaves at least two sizes on each
// side, each side gets its own Fit, and the split whose model (the faster regime counting,
// as Time costs it, with the factors) has the smallest largest relative error wins. With
// fewer than four sizes the link has one regime.
func FitAll(samples []Sample) (Link, map[Op]float64, error) {
	sizes := map[float64]bool{}
	for _, s := range samples {
		sizes[s.size()] = true
	}
	cuts := make([]float64, 0, len(sizes))
	for b := range sizes {
		cuts = append(cuts, b)
	}
	slices.Sort(cuts)
	var best Link
	var bestOps map[Op]float64
	bestErr := math.Inf(1)
	try := func(l Link) error {
		ops, err := FitOps(samples, l)
		if err != nil {
			return nil // not a candidate
		}
		p := Params{OpBandwidth: ops}
		worst := 0.0
		for _, s := range samples {
			t, err := Time(s.Op, s.N, s.Bytes, s.Blocks, p.ForOp(s.Op, l))
			if err != nil {
				return err
			}
			worst = max(worst, math.Abs(t-s.Seconds)/s.Seconds)
		}
		if worst < bestErr {
			best, bestOps, bestErr = l, ops, worst
		}
		return nil
	}
	one, err := Fit(samples)
	if err != nil {
		return Link{}, nil, err
	}
	if err := try(one); err != nil {
		return Link{}, nil, err
	}
	for i := 2; i+2 <= len(cuts); i++ {
		var small, large []Sample
		for _, s := range samples {
			if s.size() < cuts[i] {
				small = append(small, s)
			} else {
				large = append(large, s)
			}
		}
		ls, err1 := Fit(small)
		ll, err2 := Fit(large)
		if err1 != nil || err2 != nil {
			continue
		}
		if err := try(Link{Latency: ls.Latency, Bandwidth: ls.Bandwidth, BulkLatency: ll.Latency, BulkBandwidth: ll.Bandwidth}); err != nil {
			return Link{}, nil, err
		}
	}
	if bestOps == nil {
		return Link{}, nil, fmt.Errorf("costmodel: no fit of %d samples gives every collective a positive bandwidth", len(samples))
	}
	return best, bestOps, nil
}

// size is the bytes a sample moves (the sum of the blocks for the -v collectives).
func (s Sample) size() float64 {
	if len(s.Blocks) == 0 {
		return s.Bytes
	}
	total := 0.0
	for _, b := range s.Blocks {
		total += b
	}
	return total
}

// FitOps finds, for each collective among the samples, the factor of l's bandwidths that
// best matches its samples in relative terms, l's latencies kept (least squares of
// (measured − predicted) / measured over 1/factor; each sample in the regime Time picks
// for it on l): the OpBandwidth of Params.
func FitOps(samples []Sample, l Link) (map[Op]float64, error) {
	if err := l.valid(); err != nil {
		return nil, err
	}
	num, den := map[Op]float64{}, map[Op]float64{}
	for _, s := range samples {
		if !(s.Seconds > 0) {
			return nil, fmt.Errorf("costmodel: a sample of %s took %g s", s.Op, s.Seconds)
		}
		a, b, err := s.coefficients()
		if err != nil {
			return nil, err
		}
		lat, bw := l.Latency, l.Bandwidth
		if l.hasBulk() {
			tSmall, _ := regimeTime(s.Op, s.N, s.Bytes, s.Blocks, l.Latency, l.Bandwidth)
			tBulk, _ := regimeTime(s.Op, s.N, s.Bytes, s.Blocks, l.BulkLatency, l.BulkBandwidth)
			if tBulk < tSmall {
				lat, bw = l.BulkLatency, l.BulkBandwidth
			}
		}
		// relative residual: (1 − a·latency/T) − c·y, with c = b/(bandwidth·T), y = 1/factor
		c := b / bw / s.Seconds
		num[s.Op] += c * (1 - a*lat/s.Seconds)
		den[s.Op] += c * c
	}
	out := map[Op]float64{}
	for op, d := range den {
		if d == 0 || num[op] <= 0 {
			return nil, fmt.Errorf("costmodel: the samples of %s give no positive bandwidth", op)
		}
		out[op] = d / num[op]
	}
	return out, nil
}
