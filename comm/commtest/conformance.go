package commtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/commbench"
	"github.com/moerun/moerun/dtype"
)

// Conformance checks that a backend implements every collective correctly: world sizes
// 1 to 8, both element types, sizes that do not divide by the world size, -v counts with
// zeros, in-place calls, sub-groups, argument errors and deadlines. Every backend's tests
// call it with the backend's OpenFunc.
func Conformance(t *testing.T, open comm.OpenFunc) { conformance(t, open, 8, true) }

// ConformanceUpTo is Conformance for a GPU backend in one process: groups of at most
// maxSize ranks (one a GPU), and one world size after another, because NCCL communicators
// that share a device can deadlock when used at once (NCCL's guide, "Using multiple NCCL
// communicators concurrently"; on 4 GPUs, worlds 2, 3 and 4 side by side hung until the
// deadline).
func ConformanceUpTo(t *testing.T, open comm.OpenFunc, maxSize int) {
	conformance(t, open, maxSize, false)
}

// conformance runs the checks; parallel runs the world sizes of the collectives side by
// side (host backends, where ranks of different groups never share a device).
func conformance(t *testing.T, open comm.OpenFunc, maxSize int, parallel bool) {
	t.Run("collectives", func(t *testing.T) { testCollectives(t, open, maxSize, parallel) })
	t.Run("in-place", func(t *testing.T) { testInPlace(t, open, maxSize) })
	t.Run("split", func(t *testing.T) {
		if maxSize < 6 {
			t.Skipf("the split test needs 6 ranks, this backend runs %d here", maxSize)
		}
		testSplit(t, open)
	})
	t.Run("bad-arguments", func(t *testing.T) { testBadArguments(t, open) })
	t.Run("deadline", func(t *testing.T) { testDeadline(t, open) })
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// vCounts are -v splits of a group of n ranks: with zeros in every position, and equal.
func vCounts(n int) [][]int {
	var out [][]int
	out = append(out, make([]int, n)) // nothing at all
	one := make([]int, n)
	one[n-1] = 5 // everything on the last rank
	out = append(out, one)
	var mixed, big, equal []int
	for r := 0; r < n; r++ {
		mixed = append(mixed, []int{0, 3, 1, 0, 7, 2}[r%6])
		big = append(big, (r+1)*40_001%70_000)
		equal = append(equal, 6) // DP ranks with the same tokens (NCCL: the plain collective)
	}
	big[0] = 0
	return append(out, mixed, big, equal)
}

func testCollectives(t *testing.T, open comm.OpenFunc, maxSize int, parallel bool) {
	for size := 1; size <= maxSize; size++ {
		t.Run(fmt.Sprintf("world%d", size), func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			err := RunGroup(testContext(t), open, size, func(ctx context.Context, c comm.Communicator) error {
				seed := 0
				check := func(op commbench.Op, dt dtype.DType, total int, counts []int) error {
					seed++
					k, err := commbench.NewCase(op, dt, total, counts, c.Rank(), c.Size(), seed, comm.MemoryOf(c))
					if err != nil {
						return err
					}
					defer k.Free()
					if err := k.Run(ctx, c); err != nil {
						return fmt.Errorf("%s %v total %d counts %v: %w", op, dt, total, counts, err)
					}
					w, err := k.Wrong(ctx)
					if err != nil {
						return fmt.Errorf("%s %v total %d counts %v: %w", op, dt, total, counts, err)
					}
					if w != 0 {
						return fmt.Errorf("%s %v total %d counts %v: %d wrong elements", op, dt, total, counts, w)
					}
					return nil
				}
				for _, dt := range []dtype.DType{dtype.Float32, dtype.BFloat16} {
					for _, per := range []int{0, 1, 3, 1000, 140_001} {
						for _, op := range []commbench.Op{commbench.AllGather, commbench.ReduceScatter} {
							if err := check(op, dt, per*size, nil); err != nil {
								return err
							}
						}
					}
					// Totals that the world size does not divide.
					for _, total := range []int{0, 1, 7, 1001, 300_007} {
						for _, op := range []commbench.Op{commbench.AllReduce, commbench.Broadcast, commbench.AllGatherV, commbench.ReduceScatterV} {
							if err := check(op, dt, total, nil); err != nil {
								return err
							}
						}
					}
					for _, counts := range vCounts(size) {
						total := 0
						for _, n := range counts {
							total += n
						}
						for _, op := range []commbench.Op{commbench.AllGatherV, commbench.ReduceScatterV} {
							if err := check(op, dt, total, counts); err != nil {
								return err
							}
						}
					}
				}
				// Every rank as the root of a broadcast.
				for root := 0; root < size; root++ {
					seed = root - 1 + size // NewCase picks root = seed % size
					if err := check(commbench.Broadcast, dtype.Float32, 777, nil); err != nil {
						return err
					}
				}
				return c.Barrier(ctx)
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// errSkipHost marks a test written with host buffers, run by the host backends only.
var errSkipHost = errors.New("host-memory test")

// testInPlace: an all-reduce whose send is its recv, and an all-gather whose send is this
// rank's block of recv, as vLLM and NCCL callers do.
func testInPlace(t *testing.T, open comm.OpenFunc, maxSize int) {
	for _, size := range []int{1, 2, 3, 5} {
		if size > maxSize {
			continue
		}
		err := RunGroup(testContext(t), open, size, func(ctx context.Context, c comm.Communicator) error {
			if comm.MemoryOf(c) != nil {
				return errSkipHost
			}
			const n = 100_003
			buf := make([]float32, n)
			for i := range buf {
				buf[i] = commbench.Value(1, c.Rank(), i)
			}
			b := comm.Float32s(buf)
			if err := c.AllReduce(ctx, b, b); err != nil {
				return err
			}
			for i, v := range buf {
				var want float32
				for r := 0; r < size; r++ {
					want += commbench.Value(1, r, i)
				}
				if v != want {
					return fmt.Errorf("in-place all-reduce: element %d = %v, want %v", i, v, want)
				}
			}
			const per = 1001
			all := make([]float32, per*size)
			mine := all[per*c.Rank() : per*(c.Rank()+1)]
			for i := range mine {
				mine[i] = float32(c.Rank()*per + i)
			}
			if err := c.AllGather(ctx, comm.Float32s(mine), comm.Float32s(all)); err != nil {
				return err
			}
			for i, v := range all {
				if v != float32(i) {
					return fmt.Errorf("in-place all-gather: element %d = %v", i, v)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("world %d: %v", size, err)
		}
	}
}

// testSplit: groups by color ordered by key (here reversed), a rank with a negative color
// joining no group, and a split of a split.
func testSplit(t *testing.T, open comm.OpenFunc) {
	const size = 6
	err := RunGroup(testContext(t), open, size, func(ctx context.Context, c comm.Communicator) error {
		r := c.Rank()
		color := r % 2
		if r == 5 {
			color = -1
		}
		sub, err := c.Split(ctx, color, -r)
		if err != nil {
			return err
		}
		if r == 5 {
			if sub != nil {
				return errors.New("negative color: got a communicator, want none")
			}
			return nil
		}
		defer sub.Close()
		members := map[int][]int{0: {4, 2, 0}, 1: {3, 1}} // key = -rank: descending ranks
		want := members[color]
		if sub.Size() != len(want) || want[sub.Rank()] != r {
			return fmt.Errorf("split: rank %d got position %d of %d, want position %d of %v", r, sub.Rank(), sub.Size(), slices.Index(want, r), want)
		}
		// An all-gather of parent ranks shows the group's order.
		got := make([]float32, sub.Size())
		if err := comm.AllGatherFloats(ctx, sub, []float32{float32(r)}, got); err != nil {
			return err
		}
		for i, w := range want {
			if got[i] != float32(w) {
				return fmt.Errorf("split group of rank %d gathered %v, want %v", r, got, want)
			}
		}
		// The sub-group splits again: singletons.
		solo, err := sub.Split(ctx, sub.Rank(), 0)
		if err != nil {
			return err
		}
		defer solo.Close()
		if solo.Size() != 1 || solo.Rank() != 0 {
			return fmt.Errorf("second split: size %d rank %d", solo.Size(), solo.Rank())
		}
		x := make([]float32, 1)
		if err := comm.AllGatherFloats(ctx, solo, []float32{float32(r)}, x); err != nil || x[0] != float32(r) {
			return fmt.Errorf("singleton all-gather: %v, %v", x, err)
		}
		return sub.Barrier(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testBadArguments(t *testing.T, open comm.OpenFunc) {
	err := RunGroup(testContext(t), open, 2, func(ctx context.Context, c comm.Communicator) error {
		f := func(n int) comm.Buffer { return comm.NewHost(dtype.Float32, n) }
		bad := []struct {
			name string
			call func() error
		}{
			{"all-gather recv too small", func() error { return c.AllGather(ctx, f(3), f(5)) }},
			{"all-gather mixed types", func() error { return c.AllGather(ctx, f(3), comm.NewHost(dtype.BFloat16, 6)) }},
			{"all-gather-v count mismatch", func() error { return c.AllGatherV(ctx, f(3), f(8), []int{4, 4}) }},
			{"all-gather-v wrong number of counts", func() error { return c.AllGatherV(ctx, f(2), f(2), []int{2}) }},
			{"all-gather-v negative count", func() error { return c.AllGatherV(ctx, f(0), f(0), []int{1, -1}) }},
			{"reduce-scatter send too small", func() error { return c.ReduceScatter(ctx, f(3), f(2)) }},
			{"reduce-scatter-v recv mismatch", func() error { return c.ReduceScatterV(ctx, f(4), f(1), []int{2, 2}) }},
			{"all-reduce lengths", func() error { return c.AllReduce(ctx, f(4), f(3)) }},
			{"broadcast root", func() error { return c.Broadcast(ctx, f(4), 2) }},
			{"broadcast negative root", func() error { return c.Broadcast(ctx, f(4), -1) }},
			{"invalid dtype", func() error { return c.AllReduce(ctx, comm.Buffer{}, comm.Buffer{}) }},
		}
		for _, b := range bad {
			err := b.call()
			if err == nil {
				return fmt.Errorf("%s: no error", b.name)
			}
			if want := fmt.Sprintf("rank %d of 2:", c.Rank()); !strings.Contains(err.Error(), want) {
				return fmt.Errorf("%s: error %q does not name the rank (%q)", b.name, err, want)
			}
		}
		// The group is still usable: argument errors are caught before any transfer.
		return c.Barrier(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testDeadline: rank 1 never joins the all-reduce, so rank 0's call must end with the
// context's deadline, and the communicator must refuse further work.
func testDeadline(t *testing.T, open comm.OpenFunc) {
	done := make(chan struct{})
	err := RunGroup(testContext(t), open, 2, func(ctx context.Context, c comm.Communicator) error {
		if comm.MemoryOf(c) != nil {
			if c.Rank() == 0 {
				close(done)
			}
			return errSkipHost
		}
		if c.Rank() == 1 {
			<-done // stay connected but silent until rank 0 has given up
			return nil
		}
		defer close(done)
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		b := comm.NewHost(dtype.Float32, 1<<20)
		err := c.AllReduce(short, b, b)
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("all-reduce without a peer: got %v, want a deadline error", err)
		}
		if err := c.Barrier(ctx); err == nil {
			return errors.New("the communicator still works after a failed collective")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
