// Package commbench measures and checks collectives on any comm.Communicator, the way
// nccl-tests does: a sweep over message sizes that prints size, count, type, reduction,
// time, algorithm and bus bandwidth, and the number of wrong elements in the result. The
// data patterns are exact in bf16 for up to 64 ranks, so "#wrong" counts real errors and
// the conformance tests of every backend use the same cases.
package commbench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/internal/parallel"
)

// Op names a collective as nccl-tests and our tables spell it.
type Op string

const (
	AllGather      Op = "all_gather"
	AllGatherV     Op = "all_gather_v"
	ReduceScatter  Op = "reduce_scatter"
	ReduceScatterV Op = "reduce_scatter_v"
	AllReduce      Op = "all_reduce"
	Broadcast      Op = "broadcast"
)

// Ops is every collective, in the order the sweep runs them.
var Ops = []Op{AllGather, AllGatherV, ReduceScatter, ReduceScatterV, AllReduce, Broadcast}

// ParseOps reads a comma-separated list of collectives ("all" for every one).
func ParseOps(s string) ([]Op, error) {
	if s == "" || s == "all" {
		return slices.Clone(Ops), nil
	}
	var out []Op
	for _, name := range strings.Split(s, ",") {
		op := Op(strings.TrimSpace(name))
		if !slices.Contains(Ops, op) {
			return nil, fmt.Errorf("unknown collective %q: expected one of %v or all", name, Ops)
		}
		out = append(out, op)
	}
	return out, nil
}

// BusFactor converts algorithm bandwidth to bus bandwidth (nccl-tests' PERFORMANCE.md):
// the share of the data that crosses each link of an optimal ring.
func (op Op) BusFactor(n int) float64 {
	switch op {
	case AllReduce:
		return 2 * float64(n-1) / float64(n)
	case Broadcast:
		return 1
	}
	return float64(n-1) / float64(n)
}

// Reduces reports whether the collective sums (its table column "redop" is "sum").
func (op Op) Reduces() bool {
	return op == ReduceScatter || op == ReduceScatterV || op == AllReduce
}

// Value is element i of rank r's input in the case tagged seed: an integer in [-6, 6], so
// that sums over up to 64 ranks are exact in bf16 and a misplaced block is visible. It
// repeats every valuePeriod elements.
func Value(seed, r, i int) float32 {
	return float32(mod(seed*5+r*7+i*3, valuePeriod) - 6)
}

const valuePeriod = 13

func mod(a, n int) int { return ((a % n) + n) % n }

// Case is one collective call with its buffers filled and its expected result known.
// Total is the element count of the full buffer: the gathered output of an all-gather,
// the input of a reduce-scatter, the buffer of an all-reduce or a broadcast.
type Case struct {
	Op     Op
	DType  dtype.DType
	Total  int
	Counts []int // per-rank blocks of Total (equal blocks for the non-v collectives)
	Root   int
	Seed   int

	rank, size int
	send, recv comm.Buffer // where the collective runs (device memory for GPU backends)
	hsend      comm.Buffer // host mirrors, where values are made and checked
	hrecv      comm.Buffer
	mem        comm.Memory // nil: send and recv are the host buffers
}

// NewCase allocates and fills the buffers of rank's part in a group of size ranks, in mem
// (nil: host memory). For the equal-block collectives Total must be a multiple of size;
// counts is used by the -v collectives only (nil means UnevenCounts). Free releases it.
func NewCase(op Op, dt dtype.DType, total int, counts []int, rank, size, seed int, mem comm.Memory) (*Case, error) {
	k := &Case{Op: op, DType: dt, Total: total, Seed: seed, rank: rank, size: size, mem: mem}
	switch op {
	case AllGather, ReduceScatter:
		if total%size != 0 {
			return nil, fmt.Errorf("%s of %d elements over %d ranks: expected a multiple of the group size", op, total, size)
		}
		k.Counts = repeat(total/size, size)
	case AllGatherV, ReduceScatterV:
		if counts == nil {
			counts = UnevenCounts(total, size)
		}
		if len(counts) != size || sum(counts) != total {
			return nil, fmt.Errorf("%s: counts %v do not split %d elements over %d ranks", op, counts, total, size)
		}
		k.Counts = slices.Clone(counts)
	case AllReduce, Broadcast:
	default:
		return nil, fmt.Errorf("unknown collective %q", op)
	}
	if op == Broadcast {
		k.Root = seed % size
	}
	switch op {
	case AllGather, AllGatherV:
		k.hsend = comm.NewHost(dt, k.Counts[rank])
		k.hrecv = comm.NewHost(dt, total)
		off := offset(k.Counts, rank)
		fill(k.hsend, func(i int) float32 { return Value(seed, rank, off+i) })
	case ReduceScatter, ReduceScatterV:
		k.hsend = comm.NewHost(dt, total)
		k.hrecv = comm.NewHost(dt, k.Counts[rank])
		fill(k.hsend, func(i int) float32 { return Value(seed, rank, i) })
	case AllReduce:
		k.hsend = comm.NewHost(dt, total)
		k.hrecv = comm.NewHost(dt, total)
		fill(k.hsend, func(i int) float32 { return Value(seed, rank, i) })
	case Broadcast:
		k.hrecv = comm.NewHost(dt, total)
	}
	k.send, k.recv = k.hsend, k.hrecv
	if mem != nil {
		var err error
		if op != Broadcast {
			if k.send, err = mem.Alloc(dt, k.hsend.Len()); err != nil {
				return nil, err
			}
			if err := mem.Upload(k.send, k.hsend); err != nil {
				k.Free()
				return nil, err
			}
		}
		if k.recv, err = mem.Alloc(dt, k.hrecv.Len()); err != nil {
			k.Free()
			return nil, err
		}
	}
	if err := k.Reset(); err != nil {
		k.Free()
		return nil, err
	}
	return k, nil
}

// Free releases device buffers (nothing for host cases).
func (k *Case) Free() {
	if k.mem == nil {
		return
	}
	if k.send.OnDevice() {
		k.mem.Free(k.send)
	}
	if k.recv.OnDevice() {
		k.mem.Free(k.recv)
	}
}

// UnevenCounts splits total over n ranks unevenly, the way DP ranks hold different token
// counts: even ranks get about 1.5 shares and odd ranks 0.5 (one rank: everything).
func UnevenCounts(total, n int) []int {
	if n == 1 {
		return []int{total}
	}
	w := make([]int, n)
	sw := 0
	for i := range w {
		w[i] = 3 - 2*(i%2) // 3, 1, 3, 1, …
		sw += w[i]
	}
	counts := make([]int, n)
	given := 0
	for i := range counts {
		counts[i] = total * w[i] / sw
		given += counts[i]
	}
	counts[0] += total - given
	return counts
}

// Run issues the collective once.
func (k *Case) Run(ctx context.Context, c comm.Communicator) error {
	switch k.Op {
	case AllGather:
		return c.AllGather(ctx, k.send, k.recv)
	case AllGatherV:
		return c.AllGatherV(ctx, k.send, k.recv, k.Counts)
	case ReduceScatter:
		return c.ReduceScatter(ctx, k.send, k.recv)
	case ReduceScatterV:
		return c.ReduceScatterV(ctx, k.send, k.recv, k.Counts)
	case AllReduce:
		return c.AllReduce(ctx, k.send, k.recv)
	case Broadcast:
		return c.Broadcast(ctx, k.recv, k.Root)
	}
	return fmt.Errorf("unknown collective %q", k.Op)
}

// Reset puts a sentinel in the output (and the root's data back into a broadcast buffer),
// so that a collective that writes nothing is counted wrong.
func (k *Case) Reset() error {
	fill(k.hrecv, func(i int) float32 {
		if k.Op == Broadcast && k.rank == k.Root {
			return Value(k.Seed, k.Root, i)
		}
		return 99
	})
	if k.mem != nil {
		return k.mem.Upload(k.recv, k.hrecv)
	}
	return nil
}

// expectation returns the expected element i of this rank's output, for i asked in
// increasing order (from any first i). Sums are taken from a table: Value has period
// valuePeriod in i.
func (k *Case) expectation() func(i int) float32 {
	var sums [valuePeriod]float32
	for j := range sums {
		for r := 0; r < k.size; r++ {
			sums[j] += Value(k.Seed, r, j)
		}
	}
	switch k.Op {
	case AllGather, AllGatherV:
		// Callers ask in increasing i: walk the block boundaries along.
		r, end := 0, k.Counts[0]
		return func(i int) float32 {
			for i >= end && r < len(k.Counts)-1 {
				r++
				end += k.Counts[r]
			}
			return Value(k.Seed, r, i)
		}
	case ReduceScatter, ReduceScatterV:
		off := offset(k.Counts, k.rank)
		return func(i int) float32 { return sums[(off+i)%valuePeriod] }
	case AllReduce:
		return func(i int) float32 { return sums[i%valuePeriod] }
	}
	return func(i int) float32 { return Value(k.Seed, k.Root, i) }
}

// Wrong counts the output elements that differ from the expected ones (exact comparison:
// every value and partial sum is an exactly representable integer). On a device it waits
// for the collective and reads the output back first. Large outputs are checked on every
// CPU: a GiB one element at a time took seconds, and the sweep checks several.
func (k *Case) Wrong(ctx context.Context) (int, error) {
	if k.mem != nil {
		if err := k.mem.Sync(ctx); err != nil {
			return 0, err
		}
		if err := k.mem.Download(k.hrecv, k.recv); err != nil {
			return 0, err
		}
	}
	var wrong atomic.Int64
	parallel.Ranges(k.hrecv.Len(), minPiece, func(lo, hi int) {
		want := k.expectation() // one per piece: it walks the blocks forward from lo
		bad := 0
		switch k.DType {
		case dtype.Float32:
			for i, v := range k.hrecv.Float32s()[lo:hi] {
				if v != want(lo+i) {
					bad++
				}
			}
		case dtype.BFloat16:
			for i, v := range k.hrecv.BF16s()[lo:hi] {
				if v.Float32() != want(lo+i) {
					bad++
				}
			}
		}
		wrong.Add(int64(bad))
	})
	return int(wrong.Load()), nil
}

// minPiece is the fewest elements filled or checked on a goroutine of their own.
const minPiece = 1 << 20

// Output is this rank's result in host memory (after Wrong).
func (k *Case) Output() comm.Buffer { return k.hrecv }

// fill sets element i of b to f(i), where f repeats every valuePeriod elements (as every
// pattern here does: Value, a constant): one run of whole periods is computed and copied
// along, in pieces on every CPU, so a GiB costs a parallel memory copy rather than seconds
// of conversions (and no copy is long enough to hold off the garbage collector).
func fill(b comm.Buffer, f func(i int) float32) {
	switch b.DType() {
	case dtype.Float32:
		fillRepeating(b.Float32s(), f)
	case dtype.BFloat16:
		fillRepeating(b.BF16s(), func(i int) dtype.BF16 { return dtype.FromFloat32(f(i)) })
	}
}

func fillRepeating[T any](s []T, f func(i int) T) {
	run := make([]T, min(len(s), valuePeriod*4096)) // whole periods
	for i := range run {
		run[i] = f(i % valuePeriod)
	}
	parallel.Ranges(len(s), minPiece, func(lo, hi int) {
		for i := lo; i < hi; {
			i += copy(s[i:hi], run[i%valuePeriod:]) // ends on a period's start, or at hi
		}
	})
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func sum(s []int) int {
	t := 0
	for _, v := range s {
		t += v
	}
	return t
}

func offset(counts []int, r int) int { return sum(counts[:r]) }
