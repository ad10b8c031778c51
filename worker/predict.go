package worker

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/moerun/moerun/costmodel"
	"github.com/moerun/moerun/internal/atomicfile"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/topology"
)

// predictReport is the JSON twin of --predict's table.
type predictReport struct {
	Layer    moe.Config       `json:"layer"`
	Layout   string           `json:"layout"`
	Topology string           `json:"topology"`
	Params   costmodel.Params `json:"params"`
	Device   costmodel.Device `json:"device"`
	// OverlapRows is --overlap: passes whose chunks dispatch this many rows are costed
	// overlapped (0: in turn).
	OverlapRows int                `json:"overlap_rows"`
	Rows        []predictedForward `json:"rows"`
}

type predictedForward struct {
	Tokens  []int             `json:"tokens_per_dp_rank"`
	Phases  []costmodel.Phase `json:"phases"`
	TotalMs float64           `json:"total_ms"`
	Slowest int               `json:"slowest_rank"`
}

// predictLayer is worker run --predict: no job, no GPU; one process costs a forward pass
// of every rank of the layout on the topology file's GPUs (one rank per GPU, in order) and
// prints the slowest rank's phases per table row.
func predictLayer(cmd *cli.Command, cfg moe.Config) error {
	file := cmd.String("topology-file")
	if file == "" {
		return usagef("--predict needs --topology-file FILE (or a shipped name: %s)", strings.Join(topology.Shipped(), ", "))
	}
	t, err := topology.Load(file)
	if err != nil {
		return usagef("--topology-file %v", err)
	}
	world := t.NumGPUs()
	if cmd.IsSet("np") {
		world = cmd.Int("np")
	}
	l, err := rank.NewLayout(world, orOne(cmd.Int("tp")), orOne(cmd.Int("pcp")), orOne(cmd.Int("pp")), cmd.Int("dp"), cmd.Bool("ep"))
	if err != nil {
		return usagef("layout: %w", err)
	}
	if world > t.NumGPUs() {
		return usagef("--np %d: the topology %s has %d GPUs", world, file, t.NumGPUs())
	}
	rows, err := tokenRows(cmd, l.DP)
	if err != nil {
		return err
	}
	if cmd.Bool("match-ref") && !cmd.IsSet("chunk") { // unchunked, as runLayer runs it
		for _, r := range rows {
			for _, n := range r {
				cfg.Chunk = max(cfg.Chunk, n)
			}
		}
	}
	pk := devicePeaks(t.GPU(0).Name)
	report := predictReport{Layer: cfg, Layout: l.String(), Topology: file, Params: costmodel.DefaultParams(),
		Device: costmodel.Device{HBM: pk.HBM, FLOPs: pk.FLOPs}, OverlapRows: cmd.Int("overlap")} // runLayer has checked it
	out := cmd.Root().Writer
	fmt.Fprintf(out, "# moerun predict: %s, %v on %s (%d GPUs, %s), chunk %d, %s; %s\n", cfg.Name, l, file, t.NumGPUs(), t.GPU(0).Name,
		cfg.ChunkRows(), moe.OverlapLabel(report.OverlapRows), report.Params.Source)
	fmt.Fprintf(out, "# %14s", "tokens/rank")
	for _, n := range costmodel.PhaseNames {
		fmt.Fprintf(out, " %11s", n+" ms")
	}
	fmt.Fprintf(out, " %10s\n", "total ms")
	for _, tokens := range rows {
		f := costmodel.Forward{Cfg: cfg, Layout: l, Tokens: tokens, Topology: t, Params: report.Params, Device: report.Device, OverlapRows: report.OverlapRows}
		phases, total, slowest, err := f.Predict()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "  %14s", formatTokens(tokens))
		for _, ph := range phases {
			fmt.Fprintf(out, " %11.4f", 1e3*ph.Seconds)
		}
		fmt.Fprintf(out, " %10.4f\n", 1e3*total)
		report.Rows = append(report.Rows, predictedForward{Tokens: tokens, Phases: phases, TotalMs: 1e3 * total, Slowest: slowest})
	}
	if path := cmd.String("json"); path != "" {
		return atomicfile.Write(path, func(w io.Writer) error { return writeJSON(w, report) })
	}
	return nil
}

func orOne(v int) int {
	if v < 1 {
		return 1
	}
	return v
}
