package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/costmodel"
	"github.com/moerun/moerun/cuda"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/internal/atomicfile"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/cpu"
	"github.com/moerun/moerun/moe/gpu"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:         "run",
		OnUsageError: flagError,
		Usage:        "time forward passes of one MoE layer (and check them against the float64 reference)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "preset", Usage: "layer preset: " + strings.Join(moe.PresetNames(), ", ")},
			&cli.StringFlag{Name: "config", Usage: "layer config JSON file (instead of --preset)"},
			&cli.StringFlag{Name: "tokens", Usage: "tokens per DP rank, one table row each (default 1,16,128)"},
			&cli.StringFlag{Name: "tokens-per-rank", Usage: "one row with these tokens on DP ranks 0, 1, … (one count per DP rank)"},
			&cli.IntFlag{Name: "iters", Aliases: []string{"n"}, Value: 5, Usage: "timed forward passes per row"},
			&cli.IntFlag{Name: "warmup", Aliases: []string{"w"}, Value: 1, Usage: "untimed forward passes before each row"},
			&cli.IntFlag{Name: "chunk", Usage: "rows per rank of one chunk (default: the config's, else 256)"},
			&cli.StringFlag{Name: "placement", Usage: "experts on EP ranks: linear, round_robin, or FILE.json ({\"ranks\": [[experts of EP rank 0], …]}, every expert exactly once)"},
			&cli.Uint64Flag{Name: "seed", Usage: "selects the generated weights and tokens"},
			&cli.BoolFlag{Name: "check", Usage: "compare every output row with the float64 reference (a sample for large layers)"},
			&cli.StringFlag{Name: "save", Usage: "write inputs, logits, outputs (and weights under 1 GiB) as safetensors into this directory"},
			&cli.StringFlag{Name: "json", Usage: "also write the table to this file as JSON (rank 0)"},
			&cli.IntFlag{Name: "overlap", Value: moe.DefaultOverlapRows, Usage: "in a forward pass of several chunks that dispatch at least this many rows each (over the dispatch group), run each chunk's experts on a second stream beside the next chunk's dispatch and the last one's combine (GPU; 0: off; the default applies where the device and layout can)"},
			&cli.StringFlag{Name: "graph", Value: "auto", Usage: "CUDA graphs: auto replays each row's forward pass from a graph on a GPU when nothing in it waits for the host (decode sizes); off never"},
			&cli.BoolFlag{Name: "phases", Usage: "print each row's device time by phase (rank 0's profile pass: route, experts, collectives, …)"},
			&cli.BoolFlag{Name: "predict", Usage: "no job: predict each row's forward pass by phase from --topology-file (one process, no GPU; layout from the global --tp/--dp/--pcp/--pp/--ep)"},
			&cli.StringFlag{Name: "topology-file", Usage: "topology JSON file or shipped name (" + strings.Join(topology.Shipped(), ", ") + ") for --predict"},
			&cli.IntFlag{Name: "np", Usage: "with --predict: ranks (default: every GPU of the topology)"},
			&cli.BoolFlag{Name: "match-ref", Usage: "make the layer ../shared/bench/moe_ref.py's: softmax top-k renormalised, no shared experts, bf16, silu, not chunked unless --chunk"},
		},
		Action: runLayer,
	}
}

// layerConfig reads --preset or --config and applies --chunk.
func layerConfig(cmd *cli.Command) (moe.Config, error) {
	preset, file := cmd.String("preset"), cmd.String("config")
	var cfg moe.Config
	var err error
	switch {
	case preset != "" && file != "":
		return cfg, usagef("--preset %s and --config %s: give one of them", preset, file)
	case preset != "":
		if cfg, err = moe.Preset(preset); err != nil {
			return cfg, usageError{err}
		}
	case file != "":
		if cfg, err = moe.LoadConfig(file); err != nil {
			return cfg, usageError{err}
		}
	default:
		return cfg, usagef("no layer: give --preset NAME (%s) or --config FILE", strings.Join(moe.PresetNames(), ", "))
	}
	if cmd.Bool("match-ref") {
		cfg = matchRef(cfg)
	}
	if v := cmd.String("placement"); v != "" {
		if err := applyPlacement(&cfg, v); err != nil {
			return cfg, usageError{err}
		}
	}
	if cmd.IsSet("chunk") {
		if c := cmd.Int("chunk"); c < 1 {
			return cfg, usagef("--chunk %d: expected at least 1 row", c)
		}
		cfg.Chunk = cmd.Int("chunk")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// applyPlacement sets cfg's expert placement from --placement: a vLLM placement name, or
// a JSON file of per-rank expert lists (validated against the layer here, against the EP
// size when the shard is planned).
func applyPlacement(cfg *moe.Config, v string) error {
	if v == "linear" || v == "round_robin" {
		cfg.Placement, cfg.PlacementRanks = v, nil
		return nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return fmt.Errorf("--placement %s: expected linear, round_robin or a placement file: %w", v, err)
	}
	var f struct {
		Ranks [][]int `json:"ranks"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || f.Ranks == nil {
		if err == nil {
			err = errors.New(`no "ranks"`)
		}
		return fmt.Errorf("--placement %s: expected {\"ranks\": [[experts of EP rank 0], …]}: %v", v, err)
	}
	if err := rank.ValidateExplicit(cfg.Experts, len(f.Ranks), f.Ranks); err != nil {
		return fmt.Errorf("--placement %s: %w", v, err)
	}
	cfg.PlacementRanks = f.Ranks
	return nil
}

// matchRef strips cfg down to the layer that moe_ref.py times (the PyTorch reference of
// the performance work), so that rows compare like with like: the same sizes, softmax
// top-k with renormalisation, no grouped routing, bias, scaling, shared experts, latent
// transform or padding, bf16 and silu. (No chunking either: runLayer sets the chunk to the
// largest row unless --chunk is given.)
func matchRef(c moe.Config) moe.Config {
	c.Name += "+match-ref"
	c.Scoring, c.Renormalize = "softmax", true
	c.ExpertGroups, c.TopKGroup, c.ScoreBias, c.RoutedScaling = 0, 0, false, 0
	c.SharedIntermediate, c.Latent, c.PadTo, c.WeightOnInput = 0, 0, 0, false
	c.Activation, c.DType = "silu", "bfloat16"
	return c
}

// tokenRows turns --tokens and --tokens-per-rank into table rows: each row is the token
// count of every DP rank.
func tokenRows(cmd *cli.Command, dp int) ([][]int, error) {
	var rows [][]int
	spec := cmd.String("tokens")
	if spec == "" && cmd.String("tokens-per-rank") == "" {
		spec = "1,16,128"
	}
	if spec != "" {
		counts, err := parseCounts("--tokens", spec)
		if err != nil {
			return nil, err
		}
		for _, t := range counts {
			row := make([]int, dp)
			for d := range row {
				row[d] = t
			}
			rows = append(rows, row)
		}
	}
	if s := cmd.String("tokens-per-rank"); s != "" {
		counts, err := parseCounts("--tokens-per-rank", s)
		if err != nil {
			return nil, err
		}
		if len(counts) != dp {
			return nil, usagef("--tokens-per-rank %s: %d counts for %d DP ranks", s, len(counts), dp)
		}
		rows = append(rows, counts)
	}
	return rows, nil
}

func parseCounts(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, usagef("%s %s: %q is not a token count (expected integers of at least 1)", flag, s, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// runResult is one table row (and its JSON).
type runResult struct {
	Tokens []int `json:"tokens_per_dp_rank"`
	Chunks int   `json:"chunks"`
	// Overlapped: the timed passes ran each chunk's experts beside the collectives (--overlap).
	Overlapped bool    `json:"overlapped"`
	MsMedian   float64 `json:"ms_median"`
	MsMin      float64 `json:"ms_min"`
	MsMax      float64 `json:"ms_max"`
	CommShare  float64 `json:"comm_share"`
	GFLOPS     float64 `json:"gflops_per_rank"`
	// Per GPU (the busiest rank for bytes and FLOPs): time in collectives (median of the
	// slowest rank's), useful TFLOP/s and weight bytes read per second at the median.
	CommMs       float64 `json:"comm_ms"`
	Graph        bool    `json:"cuda_graph"` // the timed passes replayed a CUDA graph
	TFLOPS       float64 `json:"tflops_per_gpu"`
	WeightGBps   float64 `json:"weight_gbps"`
	TouchedBytes float64 `json:"touched_weight_bytes"`
	FLOPs        float64 `json:"flops_per_gpu"`
	// The bound: max(bytes ÷ HBM rate, FLOPs ÷ peak) + the same collectives measured alone,
	// of the rank where it is largest.
	BoundMs     float64 `json:"bound_ms"`
	BoundHBMMs  float64 `json:"bound_hbm_ms"`
	BoundFlopMs float64 `json:"bound_flop_ms"`
	BoundCommMs float64 `json:"bound_comm_ms"`
	BoundKind   string  `json:"bound_kind"`
	// Phases is rank 0's device time per phase of the profile pass (ms), by op or
	// collective name.
	Phases map[string]float64 `json:"phases_ms,omitempty"`
	// Predicted is the cost model's forward time for this row (with --topology-file),
	// beside the measured one.
	PredictedMs     float64           `json:"predicted_ms,omitempty"`
	PredictedPhases []costmodel.Phase `json:"predicted_phases,omitempty"`
	MaxAbsErr       float64           `json:"max_abs_err,omitempty"`
	Checked         int               `json:"rows_checked,omitempty"`
}

type runReport struct {
	Preset     string     `json:"preset,omitempty"`
	MatchRef   bool       `json:"match_ref"`
	Peaks      peaks      `json:"peaks"`
	CommsReady float64    `json:"comms_ready_unix_s"` // when every rank had its communicators (Job.CommsReadyUnix)
	ReadyUnix  float64    `json:"ready_unix_s"`       // when a first collective had completed after that
	Layer      moe.Config `json:"layer"`
	Layout     string     `json:"layout"`
	Backend    string     `json:"backend"`
	Device     string     `json:"device"`
	Iterations int        `json:"iterations"`
	// OverlapRows is the overlap setting that applied (--overlap, or 0 where the device or
	// layout cannot overlap); each row says whether it did (overlapped).
	OverlapRows int         `json:"overlap_rows"`
	Rows        []runResult `json:"rows"`
	Check       *checkLine  `json:"check,omitempty"`
}

type checkLine struct {
	OK        bool    `json:"ok"`
	MaxAbsErr float64 `json:"max_abs_err"`
	Tolerance float64 `json:"tolerance"`
}

func runLayer(ctx context.Context, cmd *cli.Command) error {
	cfg, err := layerConfig(cmd)
	if err != nil {
		return err
	}
	if o := cmd.Int("overlap"); o < 0 {
		return usagef("--overlap %d: expected 0 (off) or the dispatched rows from which to overlap", o)
	}
	if cmd.Bool("predict") {
		return predictLayer(cmd, cfg)
	}
	p, err := place(cmd)
	if err != nil {
		return err
	}
	rows, err := tokenRows(cmd, p.Layout.DP)
	if err != nil {
		return err
	}
	if cmd.Bool("match-ref") && !cmd.IsSet("chunk") {
		// moe_ref.py runs each forward whole: one chunk as large as the largest row.
		cfg.Chunk = 1
		for _, r := range rows {
			cfg.Chunk = max(cfg.Chunk, slices.Max(r))
		}
	}
	// Everything that can be wrong with the input is found before any collective starts.
	shard, err := moe.NewShard(cfg, p.Layout, p.Rank)
	if err != nil {
		return usageError{fmt.Errorf("layout %v: %w", p.Layout, err)}
	}
	if g := cmd.String("graph"); g != "auto" && g != "off" {
		return usagef("--graph %q: expected auto or off", g)
	}
	iters, warmup := cmd.Int("iters"), cmd.Int("warmup")
	if iters < 1 || warmup < 0 {
		return usagef("--iters %d --warmup %d: expected at least 1 timed and 0 or more warm-up passes", iters, warmup)
	}
	if p.Rank == 0 { // the only rank that writes it
		if err := checkWritableFile("--json", cmd.String("json")); err != nil {
			return usageError{err}
		}
	}
	saveDir := cmd.String("save")
	if saveDir != "" {
		if err := checkWritableDir(saveDir); err != nil {
			return usageError{err}
		}
	}
	seed := cmd.Uint64("seed")
	j, err := join(ctx, cmd, p)
	if err != nil {
		return err
	}
	defer j.Close()
	ops, err := deviceOps(j)
	if err != nil {
		return fmt.Errorf("rank %d: %w", p.Rank, err)
	}
	if c, ok := ops.(interface{ Close() error }); ok {
		defer c.Close() // after the runner has freed its tensors (defers run in reverse)
	}
	if ops.Name() == "cpu" {
		if err := checkMemory(shard, p.LocalWorld); err != nil {
			return err
		}
	} else if g, ok := ops.(*gpu.Ops); ok && p.Rank == 0 {
		fmt.Fprintf(cmd.Root().ErrWriter, "worker: GPU ops: %s\n", g.Libraries)
	}

	clock := &commClock{watch: newStopwatch(ops)}
	defer clock.watch.Close()
	groups := moe.Groups{
		TP: clock.wrap(j.Group(rank.TP)), DP: clock.wrap(j.Group(rank.DP)),
		PCP: clock.wrap(j.Group(rank.PCP)), EP: clock.wrap(j.Group(rank.EP)),
	}
	phases := &phaseOps{Ops: ops, watch: clock.watch}
	runner, err := moe.NewRunner(shard, phases, groups, seed)
	if err != nil {
		return fmt.Errorf("rank %d: %w", p.Rank, err)
	}
	defer runner.Close()
	overlap := cmd.Int("overlap")
	if err := runner.SetOverlap(overlap); err != nil {
		if cmd.IsSet("overlap") {
			return usageError{fmt.Errorf("--overlap: %w", err)}
		}
		overlap = 0 // the default, where the device has no second stream or the layout has PCP
	}
	// The weights are made on the device; wait for them (and anything the runner's set-up
	// enqueued) before the host's long steps, so no collective stays pending through them.
	if err := ops.Sync(); err != nil {
		return err
	}
	j.Synced()
	var ref *moe.Reference
	if cmd.Bool("check") {
		if ref, err = moe.NewReference(cfg, seed); err != nil {
			return err
		}
	}

	out := cmd.Root().Writer
	dt, _ := cfg.ElementType()
	device := ops.Name()
	if g, ok := ops.(*gpu.Ops); ok {
		device += " " + g.DeviceName()
	}
	report := runReport{Preset: cmd.String("preset"), MatchRef: cmd.Bool("match-ref"), Peaks: devicePeaks(device),
		CommsReady: j.CommsReadyUnix, ReadyUnix: j.ReadyUnix, Layer: cfg, Layout: p.Layout.String(), Backend: j.Backend, Device: device, Iterations: iters,
		OverlapRows: overlap}
	if p.Rank == 0 {
		ovl := moe.OverlapLabel(overlap)
		if overlap > 0 {
			ovl += " (chunks marked *)"
		}
		fmt.Fprintf(out, "# moerun run: %s, %v, backend %s, ops %s, %v, chunk %d, %s, %d iterations after %d warm-up\n",
			cfg.Name, p.Layout, j.Backend, ops.Name(), dt, cfg.ChunkRows(), ovl, iters, warmup)
		fmt.Fprintf(out, "# %14s %7s %10s %10s %10s %8s %8s %8s %9s %6s\n", "tokens/rank", "chunks", "median ms", "min ms", "max ms",
			"comm ms", "TFLOP/s", "GB/s", "bound ms", "×bound")
	}
	var topo *topology.Topology
	if f := cmd.String("topology-file"); f != "" {
		if topo, err = topology.Load(f); err != nil {
			return usagef("--topology-file %v", err)
		}
		if topo.NumGPUs() < p.World {
			return usagef("--topology-file %s: %d GPUs for %d ranks", f, topo.NumGPUs(), p.World)
		}
	}
	tol := tolerance(cfg)
	worst := 0.0
	for _, tokens := range rows {
		l := &layerRun{cfg: cfg, shard: shard, ops: ops, runner: runner, job: j, groups: groups, clock: clock, phases: phases, seed: seed, tokens: tokens, peaks: report.Peaks, graphs: cmd.String("graph") == "auto", overlap: overlap}
		res, err := l.measure(ctx, iters, warmup)
		if err != nil {
			return fmt.Errorf("rank %d: %w", p.Rank, err)
		}
		if ref != nil {
			if res.MaxAbsErr, res.Checked, err = l.check(ref, tol); err != nil {
				return fmt.Errorf("rank %d: %w", p.Rank, err)
			}
		}
		if saveDir != "" {
			if err := l.save(saveDir, p.Rank == 0 && len(report.Rows) == 0); err != nil {
				return fmt.Errorf("rank %d: %w", p.Rank, err)
			}
		}
		l.free()
		// Every rank's timings and errors meet on rank 0.
		if res, err = l.gather(ctx, res); err != nil {
			return err
		}
		if topo != nil && p.Rank == 0 {
			pk := report.Peaks
			f := costmodel.Forward{Cfg: cfg, Layout: p.Layout, Tokens: tokens, Topology: topo, Params: costmodel.DefaultParams(),
				Device: costmodel.Device{HBM: pk.HBM, FLOPs: pk.FLOPs}, OverlapRows: overlap}
			phases, total, _, err := f.Predict()
			if err != nil {
				return fmt.Errorf("predict: %w", err)
			}
			res.PredictedMs, res.PredictedPhases = 1e3*total, phases
		}
		report.Rows = append(report.Rows, res)
		if p.Rank == 0 {
			chunks := strconv.Itoa(res.Chunks)
			if res.Overlapped {
				chunks += "*"
			}
			fmt.Fprintf(out, "  %14s %7s %10.3f %10.3f %10.3f %8.3f %8.1f %8.0f %9.3f %6.2f\n", formatTokens(tokens), chunks,
				res.MsMedian, res.MsMin, res.MsMax, res.CommMs, res.TFLOPS, res.WeightGBps, res.BoundMs, res.MsMedian/res.BoundMs)
			if res.PredictedMs > 0 {
				var b strings.Builder
				for _, ph := range res.PredictedPhases {
					if ph.Seconds != 0 {
						fmt.Fprintf(&b, " %s %.3f", ph.Name, 1e3*ph.Seconds)
					}
				}
				fmt.Fprintf(out, "#   predicted %.3f ms (measured/predicted %.2f):%s\n", res.PredictedMs, res.MsMedian/res.PredictedMs, b.String())
			}
			if cmd.Bool("phases") {
				var b strings.Builder
				for _, n := range phaseNames(res.Phases) {
					fmt.Fprintf(&b, " %s %.3f", n, res.Phases[n])
				}
				fmt.Fprintf(out, "#   rank 0 phases, ms:%s\n", b.String())
			}
		}
		worst = max(worst, res.MaxAbsErr)
	}
	if ref != nil {
		report.Check = &checkLine{OK: true, MaxAbsErr: worst, Tolerance: tol}
		if p.Rank == 0 {
			fmt.Fprintf(out, "check OK: max abs err %.3g (tolerance %.3g), every rank against the float64 reference\n", worst, tol)
		}
	}
	if p.Rank == 0 && cmd.String("json") != "" {
		return atomicfile.Write(cmd.String("json"), func(w io.Writer) error { return writeJSON(w, report) })
	}
	return nil
}

func formatTokens(t []int) string {
	if slices.Min(t) == slices.Max(t) {
		return strconv.Itoa(t[0])
	}
	s := make([]string, len(t))
	for i, v := range t {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

// tolerance is vLLM's layer-level tolerance (§9 oracle 5): atol = rtol = 3.5e-2 for bf16,
// 7.6e-2 when the GEMMs' inner dimension reaches 2048; float32 layers get 1e-3.
func tolerance(cfg moe.Config) float64 {
	if dt, _ := cfg.ElementType(); dt == dtype.Float32 {
		return 1e-3
	}
	if cfg.ExpertHidden() >= 2048 || cfg.Intermediate >= 2048 {
		return 7.6e-2
	}
	return 3.5e-2
}

// layerRun is one table row on this rank: its tokens, the forward passes and the output.
type layerRun struct {
	cfg    moe.Config
	shard  moe.Shard
	ops    moe.Ops
	runner *moe.Runner
	job    *Job
	groups moe.Groups
	clock  *commClock
	phases *phaseOps
	seed   uint64
	tokens []int // per DP rank
	peaks  peaks

	x, logits, out moe.Tensor // this rank's full DP-rank input, its logits, and the final output [T, H]
	times, comm    []float64
	work           work    // this rank's weight bytes and FLOPs per forward pass
	commAlone      float64 // the forward pass's collectives replayed alone (median seconds)
	phaseMs        map[string]float64
	eagerComm      float64 // seconds in collectives in the last eager pass
	chunkRows      []int   // rows the experts saw in each chunk (profile pass)
	graphs         bool    // replay from a CUDA graph where the forward pass allows it
	overlap        int     // --overlap: the dispatched rows from which forward passes overlap
	graph          *cuda.Graph
	owned          []moe.Tensor // what measure allocated, freed by free
}

// free releases the row's tensors (device memory on a GPU) and its graph.
func (l *layerRun) free() {
	l.destroyGraph()
	for _, t := range l.owned {
		l.ops.Free(t)
	}
	l.owned = nil
}

// inputs generates this DP rank's tokens [T, H] (padded to a multiple of tp under sequence
// parallelism) and computes their router logits, as the model would before the layer.
func (l *layerRun) inputs() (x, logits moe.Tensor, err error) {
	cfg, s := l.cfg, l.shard
	dt, _ := cfg.ElementType()
	t := l.tokens[s.Coord.DP]
	rows := t
	if s.SP {
		rows = s.Rows(t) * s.Layout.TP
	}
	if x, err = l.ops.Alloc(dt, rows, cfg.Hidden); err != nil {
		return
	}
	if err = l.ops.Fill(x, moe.XGen(l.seed, s.Source(), rows, t)); err != nil {
		return
	}
	gate, err := l.ops.Alloc(dt, cfg.Experts, cfg.Hidden)
	if err != nil {
		return
	}
	defer l.ops.Free(gate)
	if err = l.ops.Fill(gate, moe.RouterGen(l.seed, cfg.Hidden)); err != nil {
		return
	}
	if logits, err = l.ops.Alloc(dtype.Float32, rows, cfg.Experts); err != nil {
		return
	}
	err = l.ops.Logits(x, gate, logits)
	return
}

func (l *layerRun) measure(ctx context.Context, iters, warmup int) (runResult, error) {
	s, ops := l.shard, l.ops
	x, logits, err := l.inputs()
	if err != nil {
		return runResult{}, err
	}
	t := l.tokens[s.Coord.DP]
	n := s.Rows(t)
	mine, myLogits := x, logits
	if s.SP {
		mine, myLogits = x.RowSlice(s.Coord.TP*n, n), logits.RowSlice(s.Coord.TP*n, n)
	}
	dt, _ := l.cfg.ElementType()
	out, err := ops.Alloc(dt, n, l.cfg.Hidden)
	if err != nil {
		return runResult{}, err
	}
	if err := l.runner.SetTokensPerDP(l.tokens); err != nil {
		return runResult{}, err
	}
	// Each pass starts when every rank has arrived (a host barrier), and is timed on the
	// device between two marks, collectives inside it between marks of their own.
	watch := l.clock.watch
	for it := 0; it < warmup+iters; it++ {
		if it == warmup {
			// The profile pass, warm like the timed ones; its replayed collectives
			// overwrite buffers, and the timed passes after it leave the output in place.
			if err := l.measureWork(ctx, mine, myLogits, out); err != nil {
				return runResult{}, err
			}
			if err := l.captureGraph(ctx, mine, myLogits, out); err != nil {
				return runResult{}, err
			}
		}
		if err := l.job.World.Barrier(ctx); err != nil {
			return runResult{}, err
		}
		l.clock.Reset()
		start, err := watch.Mark()
		if err != nil {
			return runResult{}, err
		}
		if l.graph != nil && it >= warmup {
			err = l.ops.(*gpu.Ops).Replay(l.graph)
		} else {
			err = l.runner.Forward(ctx, mine, myLogits, out)
		}
		if err != nil {
			return runResult{}, err
		}
		end, err := watch.Mark()
		if err != nil {
			return runResult{}, err
		}
		if err := ops.Sync(); err != nil {
			return runResult{}, err
		}
		l.job.Synced()
		c, err := l.clock.Elapsed()
		if err != nil {
			return runResult{}, err
		}
		if it < warmup {
			l.eagerComm = c
			continue
		}
		if l.graph != nil {
			// A replayed graph has no marks of its own inside: the last eager pass's.
			c = l.eagerComm
		}
		d, err := watch.Seconds(start, end)
		if err != nil {
			return runResult{}, err
		}
		l.times, l.comm = append(l.times, d), append(l.comm, c)
	}

	// The model's side of sequence parallelism: all-gather over TP and drop the padding.
	final := out
	if s.SP {
		all, err := ops.Alloc(dt, n*s.Layout.TP, l.cfg.Hidden)
		if err != nil {
			return runResult{}, err
		}
		if err := l.groups.TP.AllGather(ctx, out.Buf, all.Buf); err != nil {
			return runResult{}, fmt.Errorf("sequence-parallel all-gather: %w", err)
		}
		ops.Free(out)
		final = all
	}
	l.owned = append(l.owned, x, logits, final)
	l.x, l.logits, l.out = x.RowSlice(0, t), logits.RowSlice(0, t), final.RowSlice(0, t)
	return runResult{Tokens: l.tokens, Chunks: l.runner.Chunks, Overlapped: l.runner.Overlaps(), Graph: l.graph != nil}, nil
}

// captureGraph captures one forward pass in a CUDA graph when graphs are on, the ops are
// a GPU's, and every chunk's experts run without host synchronisation (decode sizes). All
// ranks agree first (each captures the same NCCL calls, so all must replay), and a failed
// capture is an error, not a fallback: a rank that captured collectives it then never
// runs would leave its peers waiting.
func (l *layerRun) captureGraph(ctx context.Context, x, logits, out moe.Tensor) error {
	l.destroyGraph()
	g, ok := l.ops.(*gpu.Ops)
	yes := float32(0)
	// An overlapped pass (two streams, host waits inside the experts) is never captured.
	if ok && l.graphs && !l.runner.Overlaps() && g.Capturable(l.chunkRows, l.cfg.TopK, len(l.shard.Experts)) {
		yes = 1
	}
	all := make([]float32, l.job.World.Size())
	if err := comm.AllGatherFloats(ctx, l.job.World, []float32{yes}, all); err != nil {
		return fmt.Errorf("agree on CUDA graphs: %w", err)
	}
	if slices.Min(all) == 0 {
		return nil
	}
	l.clock.paused = true
	graph, err := g.Capture(func() error { return l.runner.Forward(ctx, x, logits, out) })
	l.clock.paused = false
	if err != nil {
		return fmt.Errorf("capture the forward pass in a CUDA graph (--graph off runs without): %w", err)
	}
	l.graph = graph
	return nil
}

func (l *layerRun) destroyGraph() {
	if l.graph != nil {
		l.graph.Destroy()
		l.graph = nil
	}
}

// measureWork runs one more, untimed forward pass that counts what this rank's experts
// touch (reading each chunk's routing back) and records its collectives, then replays
// those collectives alone: the inputs of the bound.
//
// It runs sequentially even under --overlap, so that each phase's span is that op's own
// device time (beside a second stream, a span would take in the other stream's work too).
func (l *layerRun) measureWork(ctx context.Context, x, logits, out moe.Tensor) (err error) {
	if l.overlap > 0 {
		if err := l.runner.SetOverlap(0); err != nil {
			return err
		}
		defer func() {
			if serr := l.runner.SetOverlap(l.overlap); err == nil {
				err = serr
			}
		}()
	}
	var st routeStats
	local := len(l.shard.Experts)
	l.chunkRows = l.chunkRows[:0]
	var ids []float32
	l.runner.SetRouteHook(func(t moe.Tensor) error {
		ids = slices.Grow(ids[:0], t.Rows*t.Cols)[:t.Rows*t.Cols]
		if err := l.ops.Download(t, ids); err != nil {
			return err
		}
		st.add(ids, t.Rows, l.shard.ExpertMap, local)
		l.chunkRows = append(l.chunkRows, t.Rows)
		return nil
	})
	l.clock.Reset()
	l.phases.spans, l.phases.on = l.phases.spans[:0], true
	l.clock.Record(true)
	err = l.runner.Forward(ctx, x, logits, out)
	l.clock.Record(false)
	l.phases.on = false
	l.runner.SetRouteHook(nil)
	if err != nil {
		return err
	}
	if err := l.ops.Sync(); err != nil {
		return err
	}
	l.job.Synced()
	if l.phaseMs, err = phaseTimes(l.clock.watch, append(l.phases.spans, l.clock.recordedSpans()...)); err != nil {
		return err
	}
	if l.eagerComm == 0 { // no warm-up pass: the profile pass's (its host waits inflate it)
		if l.eagerComm, err = l.clock.Elapsed(); err != nil {
			return err
		}
	}
	l.work = rankWork(l.shard, st, x.Rows)
	const reps = 5
	alone := make([]float64, 0, reps)
	for range reps {
		if err := l.job.World.Barrier(ctx); err != nil {
			return err
		}
		l.clock.Reset()
		a, err := l.clock.watch.Mark()
		if err != nil {
			return err
		}
		if err := l.clock.Replay(ctx); err != nil {
			return err
		}
		b, err := l.clock.watch.Mark()
		if err != nil {
			return err
		}
		if err := l.ops.Sync(); err != nil {
			return err
		}
		l.job.Synced()
		d, err := l.clock.watch.Seconds(a, b)
		if err != nil {
			return err
		}
		alone = append(alone, d)
	}
	slices.Sort(alone)
	l.commAlone = alone[len(alone)/2]
	return nil
}

// flops is the useful work of one forward pass over every DP rank's tokens: the routed
// experts (K per token), the shared experts and the latent transforms.
func (l *layerRun) flops() float64 {
	c := l.cfg
	total := 0
	for _, t := range l.tokens {
		total += t
	}
	per := 6.0 * float64(c.ExpertHidden()) * float64(c.Intermediate) * float64(c.TopK)
	per += 6.0 * float64(c.Hidden) * float64(c.SharedIntermediate)
	per += 4.0 * float64(c.Hidden) * float64(c.Latent)
	// Each DP rank's tokens are computed once per PCP rank of it.
	return per * float64(total) * float64(l.shard.Layout.PCP)
}

// gather meets every rank's per-iteration times on every rank: a row's time is the
// slowest rank's in each iteration; the errors are the largest.
func (l *layerRun) gather(ctx context.Context, res runResult) (runResult, error) {
	w := l.job.World
	k := len(l.times)
	const extra = 4 // max abs err, weight bytes, FLOPs, collectives alone
	mine := make([]float32, 2*k+extra)
	for i := range k {
		mine[i], mine[k+i] = float32(l.times[i]), float32(l.comm[i])
	}
	mine[2*k], mine[2*k+1], mine[2*k+2], mine[2*k+3] = float32(res.MaxAbsErr), float32(l.work.Bytes), float32(l.work.FLOPs), float32(l.commAlone)
	all := make([]float32, len(mine)*w.Size())
	if err := comm.AllGatherFloats(ctx, w, mine, all); err != nil {
		return res, fmt.Errorf("rank %d: gather timings: %w", w.Rank(), err)
	}
	per, comms := make([]float64, k), make([]float64, k)
	commShare := 0.0
	for i := range k {
		slowest := 0
		for r := 0; r < w.Size(); r++ {
			if all[r*len(mine)+i] > all[slowest*len(mine)+i] {
				slowest = r
			}
		}
		per[i] = float64(all[slowest*len(mine)+i])
		comms[i] = float64(all[slowest*len(mine)+k+i])
		commShare += comms[i] / per[i]
	}
	var busiest work
	var worst struct{ total, hbm, flop, comm float64 }
	for r := 0; r < w.Size(); r++ {
		v := all[r*len(mine)+2*k:]
		res.MaxAbsErr = max(res.MaxAbsErr, float64(v[0]))
		rw := work{Bytes: float64(v[1]), FLOPs: float64(v[2])}
		busiest.Bytes, busiest.FLOPs = max(busiest.Bytes, rw.Bytes), max(busiest.FLOPs, rw.FLOPs)
		if total, hbm, flop, kind := bound(rw, float64(v[3]), l.peaks); total > worst.total {
			worst.total, worst.hbm, worst.flop, worst.comm = total, hbm, flop, float64(v[3])
			res.BoundKind = kind
		}
	}
	res.BoundMs, res.BoundHBMMs, res.BoundFlopMs, res.BoundCommMs = 1e3*worst.total, 1e3*worst.hbm, 1e3*worst.flop, 1e3*worst.comm
	res.TouchedBytes, res.FLOPs = busiest.Bytes, busiest.FLOPs
	sorted := slices.Clone(per)
	slices.Sort(sorted)
	res.MsMedian = 1e3 * sorted[len(sorted)/2]
	res.MsMin, res.MsMax = 1e3*sorted[0], 1e3*sorted[len(sorted)-1]
	res.CommShare = commShare / float64(k)
	res.Phases = l.phaseMs
	slices.Sort(comms)
	res.CommMs = 1e3 * comms[len(comms)/2]
	res.TFLOPS = busiest.FLOPs / (res.MsMedian / 1e3) / 1e12
	res.WeightGBps = busiest.Bytes / (res.MsMedian / 1e3) / 1e9
	res.GFLOPS = l.flops() / float64(w.Size()) / (res.MsMedian / 1e3) / 1e9
	return res, nil
}

// check compares this rank's output rows with the reference: every row, or an evenly
// spaced sample of 8 when the reference would take long (large presets).
func (l *layerRun) check(ref *moe.Reference, tol float64) (maxErr float64, checked int, err error) {
	c := l.cfg
	t := l.out.Rows
	rows := make([]int, 0, t)
	cost := float64(t) * float64(c.TopK) * 3 * float64(c.ExpertHidden()) * float64(c.Intermediate)
	if cost <= 2e9 {
		for i := range t {
			rows = append(rows, i)
		}
	} else {
		for i := range min(8, t) {
			rows = append(rows, i*(t-1)/max(min(8, t)-1, 1))
		}
		rows = slices.Compact(rows)
	}
	x := make([]float32, t*c.Hidden)
	logits := make([]float32, t*c.Experts)
	got := make([]float32, t*c.Hidden)
	for _, d := range []struct {
		t   moe.Tensor
		dst []float32
	}{{l.x, x}, {l.logits, logits}, {l.out, got}} {
		if err := l.ops.Download(d.t, d.dst); err != nil {
			return 0, 0, err
		}
	}
	l.job.Synced() // the downloads waited for the device
	xs := make([]float32, 0, len(rows)*c.Hidden)
	ls := make([]float32, 0, len(rows)*c.Experts)
	for _, r := range rows {
		xs = append(xs, x[r*c.Hidden:(r+1)*c.Hidden]...)
		ls = append(ls, logits[r*c.Experts:(r+1)*c.Experts]...)
	}
	want, err := ref.Forward(xs, ls, len(rows))
	if err != nil {
		return 0, 0, err
	}
	for i, r := range rows {
		for col := 0; col < c.Hidden; col++ {
			g, w := float64(got[r*c.Hidden+col]), want[i*c.Hidden+col]
			e := math.Abs(g - w)
			if math.IsNaN(g) || e > tol+tol*math.Abs(w) {
				return e, len(rows), fmt.Errorf("check FAILED: DP rank %d row %d column %d: got %.6g, want %.6g (abs err %.3g > tolerance %.3g + %.3g·|want|)",
					l.shard.Coord.DP, r, col, g, w, e, tol, tol)
			}
			maxErr = max(maxErr, e)
		}
	}
	return maxErr, len(rows), nil
}

// checkWritableFile proves, before any work, that path (if given) can be written: its
// directory exists and takes a new file. The real file is written at the end, atomically.
func checkWritableFile(flag, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".moerun-write-test-*")
	if err != nil {
		return fmt.Errorf("%s %s: cannot write there: %w", flag, path, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// checkWritableDir creates dir if needed and proves that a file can be written there, so
// that --save fails before any work.
func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--save %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".moerun-write-test-*")
	if err != nil {
		return fmt.Errorf("--save %s: the directory is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// checkMemory refuses a layer whose weights cannot fit in this host's available memory
// (the real presets are made for GPUs).
func checkMemory(s moe.Shard, local int) error {
	dt, _ := s.Cfg.ElementType()
	need := int64(len(s.Experts)) * 3 * int64(s.ISlice) * int64(s.Cfg.PaddedHidden()) * int64(dt.Size())
	need += 3 * int64(s.SharedSlice) * int64(s.Cfg.Hidden) * int64(dt.Size())
	avail := memAvailable()
	if avail > 0 && need*int64(local) > avail*9/10 {
		return fmt.Errorf("the %s layer needs %.1f GiB of weights per rank (%.1f GiB for the %d ranks here), but this host has %.1f GiB available: use a GPU host, more ranks, or a tiny preset",
			s.Cfg.Name, gib(need), gib(need*int64(local)), local, gib(avail))
	}
	return nil
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// deviceOps is the compute device matching the job's backend: the CPU ops for tcp, the GPU
// ops on the NCCL communicators' own device and stream for nccl (so that compute and
// collectives run in issue order).
func deviceOps(j *Job) (moe.Ops, error) {
	c := j.World
	for {
		if g, ok := c.(interface {
			CUDA() (*cuda.Device, *cuda.Stream)
		}); ok {
			dev, stream := g.CUDA()
			return gpu.New(dev, stream)
		}
		u, ok := c.(interface{ Unwrap() comm.Communicator })
		if !ok {
			return cpu.New(), nil
		}
		c = u.Unwrap()
	}
}
