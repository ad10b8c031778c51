package moe_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/comm/commtest"
	"github.com/moerun/moerun/comm/tcp"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/cpu"
	"github.com/moerun/moerun/rank"
)

// job is one in-process run of the layer on every rank of a layout: each rank's final
// output rows (its DP rank's tokens, after the sequence-parallel gather) and inputs.
type rankResult struct {
	x, logits, out []float32
	tokens         int
	chunks         int
	besides        int // experts calls queued beside the main stream (overlap)
}

// runLayer runs cfg on layout l in this process (one goroutine per rank over the tcp
// backend) with tokens[d] tokens on DP rank d, and returns every rank's result.
func runLayer(t *testing.T, cfg moe.Config, l rank.Layout, tokens []int, seed uint64) []rankResult {
	t.Helper()
	return runLayerOverlap(t, cfg, l, tokens, seed, 0, false)
}

// queueOps is the CPU ops with a second queue (moe.Overlapper) shaped like a GPU's second
// stream: each Beside's work runs after the previous one's, on a goroutine (async) or at
// once, with the experts on a CPU device of their own (a stream's own scratch); Await
// waits for it, and every mark must be awaited once, in order. Async under -race, a
// buffer that both queues touch without an Await between them is a reported data race:
// the overlapped loop's buffer hazards, checked on the CPU.
type queueOps struct {
	moe.Ops
	side            *cpu.Ops
	async           bool
	last            *queueMark
	issued, awaited int
}

type queueMark struct {
	n    int
	done chan struct{}
	err  error
}

func (q *queueOps) Beside(f func() error) (moe.Mark, error) {
	q.issued++
	m, prev := &queueMark{n: q.issued, done: make(chan struct{})}, q.last
	q.last = m
	run := func() {
		if prev != nil {
			<-prev.done
		}
		m.err = f()
		close(m.done)
	}
	if q.async {
		go run()
	} else {
		run()
	}
	return m, nil
}

func (q *queueOps) Await(mark moe.Mark) error {
	m, ok := mark.(*queueMark)
	if !ok || m.n != q.awaited+1 {
		return fmt.Errorf("await of mark %v after %d of %d", mark, q.awaited, q.issued)
	}
	<-m.done
	q.awaited++
	return m.err
}

func (q *queueOps) Experts(x, weights, ids moe.Tensor, w *moe.ExpertWeights, expertMap []int32, act moe.Activation, onInput bool, out moe.Tensor) error {
	return q.side.Experts(x, weights, ids, w, expertMap, act, onInput, out)
}

// runLayerOverlap is runLayer with SetOverlap(overlapRows) on CPU ops with a second queue
// (queueOps, async or not) when overlapRows > 0.
func runLayerOverlap(t *testing.T, cfg moe.Config, l rank.Layout, tokens []int, seed uint64, overlapRows int, async bool) []rankResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res := make([]rankResult, l.World())
	err := commtest.RunGroup(ctx, tcp.Open, l.World(), func(ctx context.Context, world comm.Communicator) error {
		r := world.Rank()
		var g moe.Groups
		for _, kind := range rank.AllGroupKinds {
			color, key := l.GroupOf(kind, r)
			sub, err := world.Split(ctx, color, key)
			if err != nil {
				return err
			}
			defer sub.Close()
			switch kind {
			case rank.TP:
				g.TP = sub
			case rank.DP:
				g.DP = sub
			case rank.PCP:
				g.PCP = sub
			case rank.EP:
				g.EP = sub
			}
		}
		shard, err := moe.NewShard(cfg, l, r)
		if err != nil {
			return err
		}
		var ops moe.Ops = cpu.New()
		beside := &queueOps{Ops: ops, side: cpu.New(), async: async}
		if overlapRows > 0 {
			ops = beside
		}
		runner, err := moe.NewRunner(shard, ops, g, seed)
		if err != nil {
			return err
		}
		defer runner.Close()
		if err := runner.SetOverlap(overlapRows); err != nil {
			return err
		}
		dt, _ := cfg.ElementType()
		tk := tokens[shard.Coord.DP]
		n := shard.Rows(tk)
		rows := tk
		if shard.SP {
			rows = n * l.TP
		}
		x, _ := ops.Alloc(dt, rows, cfg.Hidden)
		if err := ops.Fill(x, moe.XGen(seed, shard.Source(), rows, tk)); err != nil {
			return err
		}
		gate, _ := ops.Alloc(dt, cfg.Experts, cfg.Hidden)
		if err := ops.Fill(gate, moe.RouterGen(seed, cfg.Hidden)); err != nil {
			return err
		}
		logits, _ := ops.Alloc(dtype.Float32, rows, cfg.Experts)
		if err := ops.Logits(x, gate, logits); err != nil {
			return err
		}
		mx, ml := x, logits
		if shard.SP {
			mx, ml = x.RowSlice(shard.Coord.TP*n, n), logits.RowSlice(shard.Coord.TP*n, n)
		}
		out, _ := ops.Alloc(dt, n, cfg.Hidden)
		// Two passes: the second reuses every buffer of the first. The first exchanges the
		// dispatch group's row counts; the second is told them, as vLLM's DPMetadata does.
		first := make([]float32, n*cfg.Hidden)
		for pass := range 2 {
			if pass == 1 {
				if err := ops.Download(out, first); err != nil {
					return err
				}
				if err := runner.SetTokensPerDP(tokens); err != nil {
					return err
				}
			}
			if err := runner.Forward(ctx, mx, ml, out); err != nil {
				return err
			}
		}
		second := make([]float32, n*cfg.Hidden)
		if err := ops.Download(out, second); err != nil {
			return err
		}
		for i := range first {
			if first[i] != second[i] {
				return fmt.Errorf("rank %d: element %d is %v with exchanged counts and %v with given ones", r, i, first[i], second[i])
			}
		}
		final := out
		if shard.SP {
			final, _ = ops.Alloc(dt, rows, cfg.Hidden)
			if err := g.TP.AllGather(ctx, out.Buf, final.Buf); err != nil {
				return err
			}
		}
		if beside.awaited != beside.issued {
			return fmt.Errorf("rank %d: %d experts calls queued beside, %d awaited", r, beside.issued, beside.awaited)
		}
		rr := rankResult{tokens: tk, chunks: runner.Chunks, besides: beside.issued,
			x: make([]float32, tk*cfg.Hidden), logits: make([]float32, tk*cfg.Experts), out: make([]float32, tk*cfg.Hidden)}
		if err := ops.Download(x.RowSlice(0, tk), rr.x); err != nil {
			return err
		}
		if err := ops.Download(logits.RowSlice(0, tk), rr.logits); err != nil {
			return err
		}
		if err := ops.Download(final.RowSlice(0, tk), rr.out); err != nil {
			return err
		}
		res[r] = rr
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tolerance is vLLM's layer-level one for bf16 (§9 oracle 5), and tight for float32.
func tolerance(cfg moe.Config) float64 {
	if dt, _ := cfg.ElementType(); dt == dtype.Float32 {
		return 1e-4
	}
	return 3.5e-2
}

// checkAgainstReference compares every output row of every rank with the float64
// reference and returns the largest error.
func checkAgainstReference(t *testing.T, cfg moe.Config, res []rankResult, seed uint64) float64 {
	t.Helper()
	ref, err := moe.NewReference(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	tol := tolerance(cfg)
	worst := 0.0
	for r, rr := range res {
		want, err := ref.Forward(rr.x, rr.logits, rr.tokens)
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range rr.out {
			w := want[i]
			e := math.Abs(float64(g) - w)
			if math.IsNaN(float64(g)) || e > tol+tol*math.Abs(w) {
				t.Fatalf("rank %d row %d col %d: got %v want %v (err %.3g > tol %.3g)", r, i/cfg.Hidden, i%cfg.Hidden, g, w, e, tol)
			}
			worst = max(worst, e)
		}
	}
	return worst
}

func preset(t *testing.T, name string) moe.Config {
	t.Helper()
	c, err := moe.Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The distributed matrix: every layout of the issue on every tiny preset, with uneven
// tokens per DP rank (one rank with a single token), against the float64 reference.
func TestLayoutsMatchReference(t *testing.T) {
	layouts := []struct {
		name               string
		world, tp, pcp, dp int
		ep                 bool
	}{
		{"single", 1, 1, 1, 1, false},
		{"tp2", 2, 2, 1, 1, false},
		{"tp4", 4, 4, 1, 1, false},
		{"dp2-ep", 2, 1, 1, 2, true},
		{"dp4-ep", 4, 1, 1, 4, true},
		{"tp2-dp2-ep-sp", 4, 2, 1, 2, true},
		{"dp2-noep", 2, 1, 1, 2, false},
		{"tp2-dp2-noep", 4, 2, 1, 2, false},
		{"pcp2", 2, 1, 2, 1, false},
		{"tp2-pcp2", 4, 2, 2, 1, false},
		{"tp2-pcp2-ep", 4, 2, 2, 1, true},
		{"tp2-ep", 2, 2, 1, 1, true},
	}
	for _, name := range []string{"tiny", "tiny-deepseek", "tiny-latent"} {
		for _, lc := range layouts {
			t.Run(name+"/"+lc.name, func(t *testing.T) {
				t.Parallel()
				cfg := preset(t, name)
				cfg.Chunk = 3
				l, err := rank.NewLayout(lc.world, lc.tp, lc.pcp, 1, lc.dp, lc.ep)
				if err != nil {
					t.Fatal(err)
				}
				tokens := []int{7, 1, 10, 4}[:lc.dp]
				res := runLayer(t, cfg, l, tokens, 11)
				checkAgainstReference(t, cfg, res, 11)
			})
		}
	}
}

// §1.5: chunk sizes 1, 3 and 256 (one chunk), with one DP rank holding far more rows than
// a chunk, give the same numbers; every rank runs ceil(max/C) chunks in lockstep.
func TestChunkSizes_Section1_5(t *testing.T) {
	l, err := rank.NewLayout(4, 2, 1, 1, 2, true) // sequence parallel: rows per rank ceil(T/2)
	if err != nil {
		t.Fatal(err)
	}
	tokens := []int{37, 2}
	var first []rankResult
	for _, c := range []int{1, 3, 256} {
		cfg := preset(t, "tiny-deepseek")
		cfg.DType = "float32"
		cfg.Chunk = c
		res := runLayer(t, cfg, l, tokens, 5)
		checkAgainstReference(t, cfg, res, 5)
		wantChunks := (19 + c - 1) / c // ceil(37/2) = 19 rows on DP rank 0's TP ranks
		for r, rr := range res {
			if rr.chunks != wantChunks {
				t.Errorf("chunk %d: rank %d ran %d chunks, want %d", c, r, rr.chunks, wantChunks)
			}
		}
		if first == nil {
			first = res
			continue
		}
		for r := range res {
			for i, v := range res[r].out {
				if d := math.Abs(float64(v - first[r].out[i])); d > 1e-5 {
					t.Fatalf("chunk %d: rank %d element %d differs from chunk 1 by %g", c, r, i, d)
				}
			}
		}
	}
}

// §9 oracle 14: sequence parallelism (T=5, tp=2: chunks of 3 rows, one of them padding)
// gives the same output, after the TP gather and trim, as the same DP ranks without it.
func TestSequenceParallel_Section9_14(t *testing.T) {
	cfg := preset(t, "tiny-deepseek")
	cfg.DType = "float32"
	sp, _ := rank.NewLayout(4, 2, 1, 1, 2, true)
	plain, _ := rank.NewLayout(2, 1, 1, 1, 2, true)
	a := runLayer(t, cfg, sp, []int{5, 2}, 3)
	b := runLayer(t, cfg, plain, []int{5, 2}, 3)
	// SP ranks 0,1 are DP rank 0 and ranks 2,3 DP rank 1; plain ranks 0 and 1.
	for r, d := range []int{0, 0, 1, 1} {
		for i, v := range a[r].out {
			if e := math.Abs(float64(v - b[d].out[i])); e > 1e-5 {
				t.Fatalf("SP rank %d element %d: %v, without SP %v", r, i, v, b[d].out[i])
			}
		}
	}
}

// §9 oracle 16: out = shared + s·fused for bf16 and float32 (the fp16 branch does not
// apply to either).
func TestRoutedScale_Section9_16(t *testing.T) {
	l, _ := rank.NewLayout(1, 1, 1, 1, 1, false)
	base := preset(t, "tiny-deepseek")
	base.DType = "float32"
	noShared := base
	noShared.SharedIntermediate = 0
	scaled := base
	scaled.RoutedScaling = 2.5
	one := base
	one.RoutedScaling = 1
	fusedOnly := noShared
	fusedOnly.RoutedScaling = 1
	sharedOnly := runLayer(t, one, l, []int{6}, 9)[0].out
	fused := runLayer(t, fusedOnly, l, []int{6}, 9)[0].out
	got := runLayer(t, scaled, l, []int{6}, 9)[0].out
	for i := range got {
		shared := sharedOnly[i] - fused[i]
		want := shared + 2.5*fused[i]
		if math.Abs(float64(got[i]-want)) > 1e-4 {
			t.Fatalf("element %d: got %v, want shared %v + 2.5·fused %v", i, got[i], shared, fused[i])
		}
	}
}

// Overlapping each chunk's experts with the next chunk's dispatch and the last one's
// combine gives the sequential loop's bits: with uneven tokens (a rank that runs out
// re-sends one row), sequence parallelism, shared experts and the latent transform; with
// the second queue on a goroutine too, where -race finds any buffer both queues touch.
// Passes of one chunk, or of chunks that dispatch fewer rows than the setting, run in turn.
func TestOverlapSameBits(t *testing.T) {
	for _, c := range []struct {
		preset      string
		tp, dp      int
		tokens      []int
		chunk       int
		minRows     int
		wantOverlap bool
	}{
		{"tiny", 1, 2, []int{3, 300}, 64, 2, true},
		{"tiny-deepseek", 2, 2, []int{40, 7}, 8, 2, true},
		{"tiny-latent", 1, 2, []int{17, 29}, 5, 10, true},  // chunks of 5 + 5 rows
		{"tiny-latent", 1, 2, []int{17, 29}, 5, 11, false}, // too few rows a chunk
		{"tiny", 1, 2, []int{3, 200}, 0, 2, false},         // one chunk: never split
		{"tiny", 1, 2, []int{1, 1}, 0, 1, false},           // one row each
	} {
		cfg := preset(t, c.preset)
		if c.chunk > 0 {
			cfg.Chunk = c.chunk
		}
		l, err := rank.NewLayout(c.tp*c.dp, c.tp, 1, 1, c.dp, true)
		if err != nil {
			t.Fatal(err)
		}
		seq := runLayer(t, cfg, l, c.tokens, 5)
		for _, async := range []bool{false, true} {
			ovl := runLayerOverlap(t, cfg, l, c.tokens, 5, c.minRows, async)
			for r := range seq {
				if !slices.Equal(seq[r].out, ovl[r].out) {
					t.Fatalf("%s %v chunk %d: rank %d differs overlapped", c.preset, c.tokens, c.chunk, r)
				}
				want := 0 // experts calls beside in two passes: one a chunk when overlapped
				if c.wantOverlap {
					want = 2 * ovl[r].chunks
				}
				if ovl[r].chunks != seq[r].chunks || ovl[r].besides != want {
					t.Errorf("%s %v chunk %d min %d rank %d: %d chunks (sequential %d), %d experts calls beside (want %d)",
						c.preset, c.tokens, c.chunk, c.minRows, r, ovl[r].chunks, seq[r].chunks, ovl[r].besides, want)
				}
			}
		}
	}
}

// Overlap needs ops that can overlap, a dispatch group and no PCP.
func TestSetOverlapRefuses(t *testing.T) {
	cfg := preset(t, "tiny")
	err := commtest.RunGroup(t.Context(), tcp.Open, 1, func(ctx context.Context, world comm.Communicator) error {
		l, _ := rank.NewLayout(1, 1, 1, 1, 1, false)
		shard, err := moe.NewShard(cfg, l, 0)
		if err != nil {
			return err
		}
		g := moe.Groups{TP: world, DP: world, PCP: world, EP: world}
		for _, c := range []struct {
			ops  moe.Ops
			want string
		}{{cpu.New(), "needs ops with a second queue"}, {&queueOps{Ops: cpu.New(), side: cpu.New()}, "needs a dispatch group"}} {
			runner, err := moe.NewRunner(shard, c.ops, g, 1)
			if err != nil {
				return err
			}
			err = runner.SetOverlap(1)
			runner.Close()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				return fmt.Errorf("SetOverlap: %v, want %q", err, c.want)
			}
			if err := runner.SetOverlap(0); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Same weights and inputs on every run: the generator is a pure function of the seed.
func TestDeterministic(t *testing.T) {
	l, _ := rank.NewLayout(2, 1, 1, 1, 2, true)
	cfg := preset(t, "tiny")
	a := runLayer(t, cfg, l, []int{3, 4}, 1)
	b := runLayer(t, cfg, l, []int{3, 4}, 1)
	c := runLayer(t, cfg, l, []int{3, 4}, 2)
	same, differ := true, false
	for r := range a {
		for i := range a[r].out {
			same = same && a[r].out[i] == b[r].out[i]
			differ = differ || a[r].out[i] != c[r].out[i]
		}
	}
	if !same || !differ {
		t.Errorf("same seed same output: %v; other seed other output: %v", same, differ)
	}
}

func ExampleShard_Describe() {
	cfg, _ := moe.Preset("tiny-deepseek")
	l, _ := rank.NewLayout(4, 2, 1, 1, 2, true)
	s, _ := moe.NewShard(cfg, l, 3)
	fmt.Println(s.Describe())
	// Output:
	// rank 3 {ExtDP:0 DP:1 PP:0 PCP:0 TP:1}: experts 4 [12 13 14 15], intermediate [0, 48) of 48, shared [0, 48), dispatch ep, pcp false, sp true, reduce latent false shared false final false
}

// §9 oracle 12 (§5.1): with sizes [3, 1] the dispatch gathers 4 rows, rank 0's first, and
// combine(dispatch(x)) with identity experts is dp·x on every rank.
func TestAgRs_Section9_12(t *testing.T) {
	const h = 4
	sizes := []int{3, 1}
	err := commtest.RunGroup(t.Context(), tcp.Open, 2, func(ctx context.Context, c comm.Communicator) error {
		r := c.Rank()
		x := make([]float32, sizes[r]*h)
		for i := range x {
			x[i] = float32(10*r + i)
		}
		all := make([]float32, 4*h)
		if err := c.AllGatherV(ctx, comm.Float32s(x), comm.Float32s(all), []int{3 * h, 1 * h}); err != nil {
			return err
		}
		for i, v := range all {
			want := float32(i)
			if i >= 3*h {
				want = float32(10 + i - 3*h)
			}
			if v != want {
				return fmt.Errorf("rank %d: gathered[%d] = %v, want %v", r, i, v, want)
			}
		}
		back := make([]float32, len(x))
		if err := c.ReduceScatterV(ctx, comm.Float32s(all), comm.Float32s(back), []int{3 * h, 1 * h}); err != nil {
			return err
		}
		for i, v := range back {
			if v != 2*x[i] {
				return fmt.Errorf("rank %d: combine(dispatch(x))[%d] = %v, want 2·%v", r, i, v, x[i])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Token counts given by the caller are checked against the layout and this rank's rows.
func TestSetTokensPerDP(t *testing.T) {
	l, _ := rank.NewLayout(2, 1, 1, 1, 2, true)
	cfg := preset(t, "tiny")
	err := commtest.RunGroup(t.Context(), tcp.Open, 2, func(ctx context.Context, world comm.Communicator) error {
		g := moe.Groups{TP: world, DP: world, PCP: world, EP: world}
		one, err := world.Split(ctx, world.Rank(), 0)
		if err != nil {
			return err
		}
		defer one.Close()
		g.TP, g.PCP = one, one
		shard, err := moe.NewShard(cfg, l, world.Rank())
		if err != nil {
			return err
		}
		ops := cpu.New()
		runner, err := moe.NewRunner(shard, ops, g, 1)
		if err != nil {
			return err
		}
		if err := runner.SetTokensPerDP([]int{3}); err == nil {
			return fmt.Errorf("one count for two DP ranks accepted")
		}
		if err := runner.SetTokensPerDP([]int{3, 0}); err == nil {
			return fmt.Errorf("a DP rank with no tokens accepted")
		}
		if err := runner.SetTokensPerDP([]int{3, 4}); err != nil {
			return err
		}
		// This rank holds 2 rows, but the counts say 3 (rank 0) or 4 (rank 1).
		x, _ := ops.Alloc(dtype.BFloat16, 2, cfg.Hidden)
		lg, _ := ops.Alloc(dtype.Float32, 2, cfg.Experts)
		out, _ := ops.Alloc(dtype.BFloat16, 2, cfg.Hidden)
		if err := runner.Forward(ctx, x, lg, out); err == nil || !strings.Contains(err.Error(), "this rank holds 2 rows") {
			return fmt.Errorf("rows that contradict the counts: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
