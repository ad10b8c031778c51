package moe

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe/router"
	"github.com/moerun/moerun/rank"
)

// Groups are the communicators of one rank that a forward pass may use (the groups of the
// rank grid; any of them may have one rank).
type Groups struct {
	TP, DP, PCP, EP comm.Communicator
}

// Runner runs the forward pass of one rank's shard of the layer: vLLM's DefaultMoERunner
// with the G3 reductions and the G2 chunked loop (§1).
type Runner struct {
	shard  Shard
	cfg    Config
	ops    Ops
	groups Groups
	dt     dtype.DType
	act    Activation
	rc     router.Config
	hpad   int // moe_config.hidden_dim

	experts   ExpertWeights
	onRoute   func(ids Tensor) error
	shared    *MLPWeights
	latentIn  Tensor // [L, H]
	latentOut Tensor // [H, L]

	dispatch comm.Communicator // the naive dispatch/combine group, nil for none
	pcp      comm.Communicator // nil when pcp == 1

	// Staging buffers sized for one chunk, allocated once (CUDA-graph address stability in
	// vLLM): the dispatched rows, their logits, routing, and the expert outputs.
	chunk             int
	xd, ld, xp, lp    Tensor
	weights, ids      Tensor
	yd, yp            Tensor
	counts, countsAll Tensor

	// Per-forward buffers, grown to the largest T seen.
	scratch map[string]Tensor

	// Chunks is the number of chunks of the last forward pass.
	Chunks int

	// tokens per DP rank when the caller has given them (SetTokensPerDP), else nil and
	// every forward pass exchanges the row counts of the dispatch group.
	tokens []int

	// overlap: the ops that queue work beside their main stream and the rows a chunk must
	// dispatch for its pass to overlap (SetOverlap); spare: the second set of staging
	// buffers that the overlapped loop uses in turn with the first.
	overlap     Overlapper
	overlapRows int
	spare       *staging
	// lastChunkRows: the rows the last forward pass's first (largest) chunk dispatched in
	// all, over the dispatch group (Overlaps).
	lastChunkRows int
}

// Overlaps reports whether a forward pass of the last one's sizes overlaps under the
// current setting (SetOverlap).
func (r *Runner) Overlaps() bool {
	return r.overlapRows > 0 && r.Chunks > 1 && r.lastChunkRows >= r.overlapRows
}

// staging is one set of the buffers a dispatched chunk goes through.
type staging struct{ xd, ld, weights, ids, yd Tensor }

// SetOverlap has every forward pass of two or more chunks whose chunks dispatch at least
// minRows rows each in all (over the dispatch group) overlap them: chunk i's experts run
// beside chunk i+1's all-gathers and chunk i−1's reduce-scatter. Results are those of the
// sequential loop (each row's experts and sums are the same). 0 turns it off. It needs
// ops that can overlap (Overlapper), a dispatch group and no PCP.
//
// A pass of one chunk is never split for it: on 4 × H200 the split cost more than the
// overlap hid (at 4096 tokens per rank, world 4, ms for one chunk / two chunks in turn /
// two overlapped: deepseek-v3 6.37 / 7.27 / 6.94, qwen3-30b-a3b 1.29 / 1.54 / 1.43; each
// chunk re-reads the weights it touches and pays its own routing, plan and launches).
func (r *Runner) SetOverlap(minRows int) error {
	if minRows <= 0 {
		r.overlapRows = 0
		return nil
	}
	o := OverlapperOf(r.ops)
	switch {
	case o == nil:
		return fmt.Errorf("moe: overlap needs ops with a second queue; %s has none", r.ops.Name())
	case r.dispatch == nil:
		return errors.New("moe: overlap needs a dispatch group (EP or DP > 1)")
	case r.pcp != nil:
		return errors.New("moe: overlap with PCP is not supported")
	}
	r.overlap, r.overlapRows = o, minRows
	return nil
}

// SetTokensPerDP tells the runner every DP rank's token count for the next forward passes,
// as vLLM's DPMetadata does (num_tokens_across_dp, agreed on the host before the step), so
// that a forward pass exchanges no counts. nil goes back to exchanging them.
func (r *Runner) SetTokensPerDP(tokens []int) error {
	if tokens != nil && len(tokens) != r.shard.Layout.DP {
		return fmt.Errorf("moe: %d token counts for %d DP ranks", len(tokens), r.shard.Layout.DP)
	}
	for d, t := range tokens {
		if t < 1 {
			return fmt.Errorf("moe: DP rank %d has %d tokens: expected at least 1", d, t)
		}
	}
	r.tokens = slices.Clone(tokens)
	return nil
}

// dispatchSizes is the rows of every member of the dispatch group, in group order, from
// the tokens per DP rank: the DP ranks' counts, or under sequence parallelism sp_tokens
// (§6: each DP rank's ceil(T/sp) rows, sp times). It checks this rank's own count.
func (r *Runner) dispatchSizes(n int) ([]int, error) {
	s := r.shard
	var sizes []int
	switch s.Dispatch {
	case "ep":
		sizes = rank.SPTokens(r.tokens, s.Layout.TP)
	case "dp":
		sizes = slices.Clone(r.tokens)
	default:
		sizes = []int{n}
	}
	if want := s.Rows(r.tokens[s.Coord.DP]); n != want {
		return nil, fmt.Errorf("moe: this rank holds %d rows, but DP rank %d's %d tokens give %d", n, s.Coord.DP, r.tokens[s.Coord.DP], want)
	}
	return sizes, nil
}

// NewRunner generates this rank's weights on the device and allocates the staging
// buffers. seed selects the weights (the same on every rank).
func NewRunner(shard Shard, ops Ops, g Groups, seed uint64) (*Runner, error) {
	cfg := shard.Cfg
	r := &Runner{shard: shard, cfg: cfg, ops: ops, groups: g, hpad: cfg.PaddedHidden(), scratch: map[string]Tensor{}}
	r.dt, _ = cfg.ElementType()
	r.act, _ = cfg.ActivationKind()
	var err error
	if r.rc, err = cfg.RouterConfig(Bias(cfg, seed)); err != nil {
		return nil, err
	}
	switch shard.Dispatch {
	case "ep":
		r.dispatch = g.EP
	case "dp":
		r.dispatch = g.DP
	}
	if shard.PCP {
		r.pcp = g.PCP
	}
	for name, c := range map[string]comm.Communicator{"tp": g.TP, "dp": g.DP, "pcp": g.PCP, "ep": g.EP} {
		if c == nil {
			return nil, fmt.Errorf("moe: no %s communicator", name)
		}
	}
	if err := r.checkGroups(); err != nil {
		return nil, err
	}

	fill := func(rows, cols int, gen *Gen) (Tensor, error) {
		t, err := ops.Alloc(r.dt, rows, cols)
		if err != nil {
			return Tensor{}, err
		}
		return t, ops.Fill(t, gen)
	}
	el := len(shard.Experts)
	r.experts = ExpertWeights{Local: el, I: shard.ISlice, H: r.hpad}
	if r.experts.W13, err = fill(el*2*shard.ISlice, r.hpad, shard.w13Gen(seed)); err != nil {
		return nil, fmt.Errorf("moe: expert weights: %w", err)
	}
	if r.experts.W2, err = fill(el*r.hpad, shard.ISlice, shard.w2Gen(seed)); err != nil {
		return nil, fmt.Errorf("moe: expert weights: %w", err)
	}
	if shard.SharedSlice > 0 {
		r.shared = &MLPWeights{I: shard.SharedSlice, H: cfg.Hidden}
		if r.shared.W13, err = fill(2*shard.SharedSlice, cfg.Hidden, shard.sharedW13Gen(seed)); err != nil {
			return nil, fmt.Errorf("moe: shared expert weights: %w", err)
		}
		if r.shared.W2, err = fill(cfg.Hidden, shard.SharedSlice, shard.sharedW2Gen(seed)); err != nil {
			return nil, fmt.Errorf("moe: shared expert weights: %w", err)
		}
	}
	if cfg.Latent > 0 {
		if r.latentIn, err = fill(cfg.Latent, cfg.Hidden, latentInGen(seed, cfg)); err != nil {
			return nil, err
		}
		if r.latentOut, err = fill(cfg.Hidden, cfg.Latent, latentOutGen(seed, cfg)); err != nil {
			return nil, err
		}
	}

	r.chunk = cfg.ChunkRows()
	members := 1
	if r.dispatch != nil {
		members = r.dispatch.Size()
	}
	rows := r.chunk * members // dispatched rows of one chunk, at most
	prow := rows
	if r.pcp != nil {
		prow = rows * r.pcp.Size()
	}
	alloc := func(dt dtype.DType, rows, cols int) Tensor {
		if err != nil {
			return Tensor{}
		}
		var t Tensor
		t, err = ops.Alloc(dt, rows, cols)
		return t
	}
	r.xd = alloc(r.dt, rows, r.hpad)
	r.ld = alloc(dtype.Float32, rows, cfg.Experts)
	r.xp = alloc(r.dt, prow, r.hpad)
	r.lp = alloc(dtype.Float32, prow, cfg.Experts)
	r.weights = alloc(dtype.Float32, prow, cfg.TopK)
	r.ids = alloc(dtype.Int32, prow, cfg.TopK)
	r.yd = alloc(r.dt, prow, r.hpad)
	r.yp = alloc(r.dt, rows, r.hpad)
	r.counts = alloc(dtype.Float32, 1, 1)
	r.countsAll = alloc(dtype.Float32, 1, max(members, g.PCP.Size()))
	if err != nil {
		return nil, fmt.Errorf("moe: staging buffers: %w", err)
	}
	return r, nil
}

// checkGroups verifies that the communicators match the shard's layout, so that a
// mis-wired group fails here and not as wrong numbers.
func (r *Runner) checkGroups() error {
	l := r.shard.Layout
	want := map[string][2]int{
		"tp":  {r.groups.TP.Size(), l.GroupSize(rank.TP)},
		"dp":  {r.groups.DP.Size(), l.GroupSize(rank.DP)},
		"pcp": {r.groups.PCP.Size(), l.GroupSize(rank.PCP)},
		"ep":  {r.groups.EP.Size(), l.GroupSize(rank.EP)},
	}
	for name, sz := range want {
		if sz[0] != sz[1] {
			return fmt.Errorf("moe: the %s communicator has %d ranks, the layout %v says %d", name, sz[0], l, sz[1])
		}
	}
	return nil
}

// SetRouteHook has f called with each chunk's expert ids [rows, K] (every row that this
// rank's experts see: after dispatch and the PCP gather) right after routing, or no more
// calls when f is nil. For statistics outside timed passes: f may wait for the device.
func (r *Runner) SetRouteHook(f func(ids Tensor) error) { r.onRoute = f }

// Shard is the plan this runner executes.
func (r *Runner) Shard() Shard { return r.shard }

// buffer returns a per-forward tensor of at least rows rows, grown as needed.
func (r *Runner) buffer(name string, dt dtype.DType, rows, cols int) (Tensor, error) {
	t, ok := r.scratch[name]
	if !ok || t.Rows < rows || t.Cols != cols || t.DType() != dt {
		if ok {
			r.ops.Free(t)
		}
		var err error
		if t, err = r.ops.Alloc(dt, max(rows, 1), cols); err != nil {
			return Tensor{}, err
		}
		r.scratch[name] = t
	}
	return t.RowSlice(0, rows), nil
}

// exchangeCounts all-gathers every member's row count (through the device, so that any
// backend can carry it).
func (r *Runner) exchangeCounts(ctx context.Context, c comm.Communicator, n int) ([]int, error) {
	if err := r.ops.Upload(r.counts, []float32{float32(n)}); err != nil {
		return nil, err
	}
	all := r.countsAll.Buf.Slice(0, c.Size())
	if err := c.AllGather(ctx, r.counts.Buf, all); err != nil {
		return nil, fmt.Errorf("exchange token counts: %w", err)
	}
	host := make([]float32, c.Size())
	if err := r.ops.Download(Tensor{Buf: all, Rows: 1, Cols: c.Size()}, host); err != nil {
		return nil, err
	}
	out := make([]int, len(host))
	for i, v := range host {
		out[i] = int(v)
	}
	return out, nil
}

// Forward computes out [n, H] for this rank's rows x [n, H] and their router logits
// [n, E] (float32). Every rank of the layout calls it at the same time; n may differ
// between DP ranks but must be at least 1, and equal across PCP ranks.
func (r *Runner) Forward(ctx context.Context, x, logits, out Tensor) error {
	cfg, ops := r.cfg, r.ops
	n := x.Rows
	switch {
	case n < 1:
		return fmt.Errorf("moe: forward of %d rows: expected at least 1 (idle DP ranks run a dummy row)", n)
	case x.Cols != cfg.Hidden || x.DType() != r.dt:
		return fmt.Errorf("moe: input is %v, want %d×%d %v", x, n, cfg.Hidden, r.dt)
	case logits.Rows != n || logits.Cols != cfg.Experts || logits.DType() != dtype.Float32:
		return fmt.Errorf("moe: logits are %v, want %d×%d float32", logits, n, cfg.Experts)
	case out.Rows != n || out.Cols != cfg.Hidden || out.DType() != r.dt:
		return fmt.Errorf("moe: output is %v, want %d×%d %v", out, n, cfg.Hidden, r.dt)
	}

	sizes := []int{n}
	switch {
	case r.tokens != nil:
		// The host already knows every DP rank's tokens (vLLM's DPMetadata): no exchange.
		var err error
		if sizes, err = r.dispatchSizes(n); err != nil {
			return err
		}
	case r.dispatch != nil:
		var err error
		if sizes, err = r.exchangeCounts(ctx, r.dispatch, n); err != nil {
			return err
		}
	}
	if r.pcp != nil && r.tokens == nil {
		peers, err := r.exchangeCounts(ctx, r.pcp, n)
		if err != nil {
			return err
		}
		for c, m := range peers {
			if m != n {
				return fmt.Errorf("moe: pcp rank %d holds %d rows and this rank %d: PCP ranks must hold equal rows (§5.5)", c, m, n)
			}
		}
	}
	maxRows := slices.Max(sizes)

	// §1.2 steps 1–2: routed-input transform and padding to hidden_dim.
	width := cfg.ExpertHidden()
	xr := x
	if cfg.Latent > 0 {
		lat, err := r.buffer("latent", r.dt, n, cfg.Latent)
		if err != nil {
			return err
		}
		if err := ops.Linear(x, r.latentIn, lat); err != nil {
			return err
		}
		xr = lat
	}
	if r.hpad != width {
		padded, err := r.buffer("padded", r.dt, n, r.hpad)
		if err != nil {
			return err
		}
		if err := ops.CopyCols(padded, xr); err != nil {
			return err
		}
		xr = padded
	}

	// The fused output goes straight into out when it has out's shape.
	fused := out
	if !r.fusedIsOut() {
		var err error
		if fused, err = r.buffer("fused", r.dt, n, r.hpad); err != nil {
			return err
		}
	}
	var sharedOut Tensor
	if r.shared != nil {
		var err error
		if sharedOut, err = r.buffer("shared", r.dt, n, cfg.Hidden); err != nil {
			return err
		}
	}

	// §1.5: every member of the dispatch group runs ceil(M/C) chunks in lockstep.
	r.Chunks, r.lastChunkRows = rank.NumChunks(maxRows, 1, r.chunk), 0
	for _, m := range sizes {
		r.lastChunkRows += min(m, r.chunk)
	}
	shared := func(s, e int) error {
		// Shared experts on the local, pre-dispatch input of the same rows (§1.4).
		if r.shared == nil {
			return nil
		}
		if err := ops.MLP(x.RowSlice(s, e-s), r.shared, r.act, sharedOut.RowSlice(s, e-s)); err != nil {
			return fmt.Errorf("moe: shared experts: %w", err)
		}
		return nil
	}
	if r.Overlaps() {
		if err := r.overlapped(ctx, sizes, xr, logits, fused, shared); err != nil {
			return err
		}
		return r.finish(ctx, fused, sharedOut, out)
	}
	for i := 0; i < r.Chunks; i++ {
		s, e := rank.ChunkRows(n, maxRows, r.chunk, i)
		if err := r.chunkStep(ctx, i, sizes, xr.RowSlice(s, e-s), logits.RowSlice(s, e-s), fused.RowSlice(s, e-s)); err != nil {
			return fmt.Errorf("moe: chunk %d of %d: %w", i+1, r.Chunks, err)
		}
		if err := shared(s, e); err != nil {
			return err
		}
	}
	return r.finish(ctx, fused, sharedOut, out)
}

// overlapped is the chunk loop with chunk i's experts queued beside the main stream
// (Overlapper), so that they run while chunk i+1 is dispatched and chunk i−1 combined.
// Chunks use the two sets of staging buffers in turn: chunk i+2 dispatches into chunk
// i's only after the main stream has waited for chunk i's experts (before combining it),
// and its experts write there only after that combine is queued.
func (r *Runner) overlapped(ctx context.Context, sizes []int, xr, logits, fused Tensor, shared func(s, e int) error) error {
	if r.spare == nil {
		rows, ne := r.xd.Rows, r.cfg.Experts
		sp := &staging{}
		var err error
		for _, b := range []struct {
			t          *Tensor
			dt         dtype.DType
			rows, cols int
		}{{&sp.xd, r.dt, rows, r.hpad}, {&sp.ld, dtype.Float32, rows, ne}, {&sp.weights, dtype.Float32, rows, r.cfg.TopK},
			{&sp.ids, dtype.Int32, rows, r.cfg.TopK}, {&sp.yd, r.dt, rows, r.hpad}} {
			if *b.t, err = r.ops.Alloc(b.dt, b.rows, b.cols); err != nil {
				for _, t := range []Tensor{sp.xd, sp.ld, sp.weights, sp.ids} {
					r.ops.Free(t) // the ones not made yet are zero: nothing to free
				}
				return fmt.Errorf("moe: overlap staging buffers: %w", err)
			}
		}
		r.spare = sp
	}
	sets := [2]staging{r.staged(), *r.spare}
	n, maxRows := xr.Rows, slices.Max(sizes)
	type queued struct {
		i, s, e int
		y       Tensor
		csz     []int
		done    Mark
	}
	combine := func(q queued) error {
		if err := r.overlap.Await(q.done); err != nil {
			return fmt.Errorf("moe: chunk %d of %d: %w", q.i+1, r.Chunks, err)
		}
		if err := r.dispatch.ReduceScatterV(ctx, q.y.Buf, fused.RowSlice(q.s, q.e-q.s).Buf, scaled(q.csz, r.hpad)); err != nil {
			return fmt.Errorf("moe: chunk %d of %d: combine: %w", q.i+1, r.Chunks, err)
		}
		return shared(q.s, q.e)
	}
	var prev *queued
	for i := 0; i < r.Chunks; i++ {
		s, e := rank.ChunkRows(n, maxRows, r.chunk, i)
		set := sets[i%2]
		x, l, csz, err := r.gather(ctx, i, sizes, xr.RowSlice(s, e-s), logits.RowSlice(s, e-s), set)
		if err != nil {
			return fmt.Errorf("moe: chunk %d of %d: %w", i+1, r.Chunks, err)
		}
		w, ids, err := r.route(l, set)
		if err != nil {
			return fmt.Errorf("moe: chunk %d of %d: %w", i+1, r.Chunks, err)
		}
		y := set.yd.RowSlice(0, x.Rows)
		done, err := r.overlap.Beside(func() error {
			return r.ops.Experts(x, w, ids, &r.experts, r.shard.ExpertMap, r.act, r.cfg.WeightOnInput, y)
		})
		if err != nil {
			return fmt.Errorf("moe: chunk %d of %d: experts: %w", i+1, r.Chunks, err)
		}
		if prev != nil {
			if err := combine(*prev); err != nil {
				return err
			}
		}
		prev = &queued{i, s, e, y, csz, done}
	}
	return combine(*prev)
}

// gather all-gathers chunk i's rows and router logits over the dispatch group into set:
// the dispatched rows and logits, and every member's rows of the chunk.
func (r *Runner) gather(ctx context.Context, i int, sizes []int, xs, ls Tensor, set staging) (x, l Tensor, csz []int, err error) {
	csz = chunkSizes(r.chunk, i, sizes)
	total := 0
	for _, m := range csz {
		total += m
	}
	x, l = set.xd.RowSlice(0, total), set.ld.RowSlice(0, total)
	if err := r.dispatch.AllGatherV(ctx, xs.Buf, x.Buf, scaled(csz, r.hpad)); err != nil {
		return x, l, nil, fmt.Errorf("dispatch: %w", err)
	}
	if err := r.dispatch.AllGatherV(ctx, ls.Buf, l.Buf, scaled(csz, r.cfg.Experts)); err != nil {
		return x, l, nil, fmt.Errorf("dispatch router logits: %w", err)
	}
	return x, l, csz, nil
}

// route routes the rows of logits l into set's weights and ids, and shows the ids to the
// route hook.
func (r *Runner) route(l Tensor, set staging) (w, ids Tensor, err error) {
	w, ids = set.weights.RowSlice(0, l.Rows), set.ids.RowSlice(0, l.Rows)
	if err := r.ops.Route(r.rc, l, w, ids); err != nil {
		return w, ids, fmt.Errorf("route: %w", err)
	}
	if r.onRoute != nil {
		if err := r.onRoute(ids); err != nil {
			return w, ids, fmt.Errorf("route hook: %w", err)
		}
	}
	return w, ids, nil
}

// staged is the runner's first set of staging buffers (the overlapped loop's other one is
// spare).
func (r *Runner) staged() staging { return staging{r.xd, r.ld, r.weights, r.ids, r.yd} }

// chunkSizes is every member's rows of chunk i (chunked_sizes: a member whose rows ran out
// re-sends one, §6).
func chunkSizes(chunk, i int, sizes []int) []int {
	csz := make([]int, len(sizes))
	for k, m := range sizes {
		csz[k] = min(chunk, m-chunk*i)
		if csz[k] <= 0 {
			csz[k] = 1
		}
	}
	return csz
}

// chunkStep dispatches one chunk, runs the local experts, and combines the result into
// dst (this rank's rows of the chunk).
func (r *Runner) chunkStep(ctx context.Context, i int, sizes []int, xs, ls, dst Tensor) error {
	ops, hp := r.ops, r.hpad
	set := r.staged()
	x, l := xs, ls
	var csz []int
	if r.dispatch != nil {
		var err error
		if x, l, csz, err = r.gather(ctx, i, sizes, xs, ls, set); err != nil {
			return err
		}
	}
	rows := x.Rows
	if r.pcp != nil {
		p := r.pcp.Size()
		xp, lp := r.xp.RowSlice(0, p*rows), r.lp.RowSlice(0, p*rows)
		if err := r.pcp.AllGather(ctx, x.Buf, xp.Buf); err != nil {
			return fmt.Errorf("pcp all-gather: %w", err)
		}
		if err := r.pcp.AllGather(ctx, l.Buf, lp.Buf); err != nil {
			return fmt.Errorf("pcp all-gather of router logits: %w", err)
		}
		x, l = xp, lp
	}
	w, ids, err := r.route(l, set)
	if err != nil {
		return err
	}
	y := dst
	if r.dispatch != nil || r.pcp != nil {
		y = r.yd.RowSlice(0, x.Rows)
	}
	if err := ops.Experts(x, w, ids, &r.experts, r.shard.ExpertMap, r.act, r.cfg.WeightOnInput, y); err != nil {
		return fmt.Errorf("experts: %w", err)
	}

	if r.pcp != nil {
		to := dst
		if r.dispatch != nil {
			to = r.yp.RowSlice(0, rows)
		}
		if err := r.pcp.ReduceScatter(ctx, y.Buf, to.Buf); err != nil {
			return fmt.Errorf("pcp reduce-scatter: %w", err)
		}
		y = to
	}
	if r.dispatch != nil {
		if err := r.dispatch.ReduceScatterV(ctx, y.Buf, dst.Buf, scaled(csz, hp)); err != nil {
			return fmt.Errorf("combine: %w", err)
		}
	}
	return nil
}

// finish applies §1.3 (G3) after the chunk loop: truncation, latent pre-reduce, early
// shared reduce, routed scaling, output transform, shared + fused, late all-reduce.
func (r *Runner) finish(ctx context.Context, fused, sharedOut, out Tensor) error {
	cfg, ops, s := r.cfg, r.ops, r.shard
	n := out.Rows
	f := fused
	if width := cfg.ExpertHidden(); r.hpad != width {
		t, err := r.buffer("truncated", r.dt, n, width)
		if err != nil {
			return err
		}
		if err := ops.CopyCols(t, fused); err != nil {
			return err
		}
		f = t
	}
	if s.LatentReduce {
		if err := r.groups.TP.AllReduce(ctx, f.Buf, f.Buf); err != nil {
			return fmt.Errorf("moe: latent all-reduce: %w", err)
		}
	}
	if s.SharedReduce {
		if err := r.groups.TP.AllReduce(ctx, sharedOut.Buf, sharedOut.Buf); err != nil {
			return fmt.Errorf("moe: shared-expert all-reduce: %w", err)
		}
	}
	if scale := cfg.Scale(); scale != 1 {
		if err := ops.Axpby(float32(scale), f, 0, f); err != nil {
			return err
		}
	}
	if cfg.Latent > 0 {
		if err := ops.Linear(f, r.latentOut, out); err != nil {
			return err
		}
	} else if !r.fusedIsOut() {
		if err := ops.Copy(out, f); err != nil {
			return err
		}
	}
	if r.shared != nil {
		if err := ops.Axpby(1, out, 1, sharedOut); err != nil {
			return err
		}
	}
	if s.FinalReduce {
		if err := r.groups.TP.AllReduce(ctx, out.Buf, out.Buf); err != nil {
			return fmt.Errorf("moe: final all-reduce: %w", err)
		}
	}
	return nil
}

// fusedIsOut: without a latent transform or padding the fused output has the output's
// shape, and the chunks write it in place.
func (r *Runner) fusedIsOut() bool { return r.cfg.Latent == 0 && r.hpad == r.cfg.Hidden }

func scaled(counts []int, k int) []int {
	out := make([]int, len(counts))
	for i, c := range counts {
		out[i] = c * k
	}
	return out
}

// Close frees the device memory of the runner.
func (r *Runner) Close() {
	for _, t := range []Tensor{r.experts.W13, r.experts.W2, r.latentIn, r.latentOut, r.xd, r.ld, r.xp, r.lp, r.weights, r.ids, r.yd, r.yp, r.counts, r.countsAll} {
		r.ops.Free(t)
	}
	if r.shared != nil {
		r.ops.Free(r.shared.W13)
		r.ops.Free(r.shared.W2)
	}
	for _, t := range r.scratch {
		r.ops.Free(t)
	}
	if sp := r.spare; sp != nil {
		for _, t := range []Tensor{sp.xd, sp.ld, sp.weights, sp.ids, sp.yd} {
			r.ops.Free(t)
		}
	}
}
