package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/moerun/moerun/commbench"
	"github.com/moerun/moerun/internal/cliexit"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/moerun/moerun/costmodel"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/topology"
)

// Main runs bin/layouts with args (without the program name) and returns its exit status:
// 0, 1 when an output cannot be written, 2 for bad input. Every error is one line.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := command(stdout, stderr).Run(ctx, append([]string{"layouts"}, args...))
	return cliexit.Code("layouts", err, stderr)
}

func command(stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:            "layouts",
		Usage:           "rank every layout and expert placement of one MoE layer on a machine by predicted time per forward",
		UsageText:       "layouts --preset P [--topology-file F] [--np N] [--tokens T] [--overlap ROWS] [--json] [--plot FILE.png]",
		HideHelpCommand: true,
		Writer:          stdout,
		ErrWriter:       stderr,
		ExitErrHandler:  func(context.Context, *cli.Command, error) {},
		OnUsageError: func(_ context.Context, _ *cli.Command, err error, _ bool) error {
			return cliexit.Usage(err)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "preset", Value: "deepseek-v3", Usage: "layer preset: " + strings.Join(moe.PresetNames(), ", ")},
			&cli.StringFlag{Name: "topology-file", Usage: "topology JSON or shipped name (" + strings.Join(topology.Shipped(), ", ") + "); default: this machine"},
			&cli.IntFlag{Name: "np", Usage: "ranks (default: every GPU of the topology)"},
			&cli.IntFlag{Name: "tokens", Value: 128, Usage: "tokens per GPU (every layout gets np·tokens tokens in all)"},
			&cli.IntFlag{Name: "overlap", Value: moe.DefaultOverlapRows, Usage: "cost passes whose chunks dispatch at least this many rows each as overlapped, as worker run --overlap runs them (0: in turn)"},
			&cli.BoolFlag{Name: "json", Usage: "print the ranking as JSON instead of a table"},
			&cli.StringFlag{Name: "plot", Usage: "also draw the ranking into this PNG file"},
			&cli.StringFlag{Name: "calibrate", Usage: "instead: fit one link to a `worker collectives --json` FILE and print the model's error on each collective"},
			&cli.StringFlag{Name: "min-bytes", Value: "1M", Usage: "with --calibrate: the smallest collective to fit and report"},
		},
		Action: run,
	}
}

func run(_ context.Context, cmd *cli.Command) error {
	if f := cmd.String("calibrate"); f != "" {
		return calibrate(cmd, f)
	}
	cfg, err := moe.Preset(cmd.String("preset"))
	if err != nil {
		return cliexit.Usage(err)
	}
	var t *topology.Topology
	name := cmd.String("topology-file")
	if name != "" {
		if t, err = topology.Load(name); err != nil {
			return cliexit.Usage(fmt.Errorf("--topology-file %w", err))
		}
	} else {
		if t, err = topology.Discover(); err != nil {
			return err
		}
		name = "this machine"
	}
	if t.NumGPUs() == 0 {
		return cliexit.Usage(fmt.Errorf("%s has no GPU: give --topology-file (shipped: %s)", name, strings.Join(topology.Shipped(), ", ")))
	}
	world := t.NumGPUs()
	if cmd.IsSet("np") {
		if world = cmd.Int("np"); world < 1 || world > t.NumGPUs() {
			return cliexit.Usage(fmt.Errorf("--np %d: expected 1 to the topology's %d GPUs", world, t.NumGPUs()))
		}
	}
	if cmd.Int("tokens") < 1 {
		return cliexit.Usage(fmt.Errorf("--tokens %d: expected at least 1 token per GPU", cmd.Int("tokens")))
	}
	if cmd.Int("overlap") < 0 {
		return cliexit.Usage(fmt.Errorf("--overlap %d: expected 0 (in turn) or the dispatched rows a chunk from which passes overlap", cmd.Int("overlap")))
	}
	cands := Candidates(cfg, world)
	if len(cands) == 0 {
		return cliexit.Usage(fmt.Errorf("no layout of %d ranks fits the %s layer", world, cfg.Name))
	}
	gpu := t.GPU(0).Name
	dev := costmodel.Device{HBM: 3.35e12, FLOPs: 790e12}
	if strings.Contains(gpu, "H200") {
		dev.HBM = 4.8e12
	}
	rs, err := Rank(cfg, t, world, cmd.Int("tokens"), cands, costmodel.DefaultParams(), dev, cmd.Int("overlap"))
	if err != nil {
		return err
	}
	out := cmd.Root().Writer
	if cmd.Bool("json") {
		if err := WriteJSON(out, rs); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "# %s layer, %d ranks on %s (%s), %d tokens per GPU, %s; predicted (costmodel.DefaultParams)\n",
			cfg.Name, world, name, gpu, cmd.Int("tokens"), moe.OverlapLabel(cmd.Int("overlap")))
		WriteTable(out, rs)
	}
	if path := cmd.String("plot"); path != "" {
		var b bytes.Buffer
		title := fmt.Sprintf("%s, %d ranks on %s, %d tokens/GPU", cfg.Name, world, name, cmd.Int("tokens"))
		if err := WritePlot(&b, title, rs); err != nil {
			return err
		}
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return fmt.Errorf("--plot %w", err)
		}
	}
	return nil
}

func calibrate(cmd *cli.Command, file string) error {
	min, err := commbench.ParseBytes(cmd.String("min-bytes"))
	if err != nil {
		return cliexit.Usage(fmt.Errorf("--min-bytes: %w", err))
	}
	c, err := Calibrate(file, min)
	if err != nil {
		return cliexit.Usage(fmt.Errorf("--calibrate %w", err))
	}
	if cmd.Bool("json") {
		e := json.NewEncoder(cmd.Root().Writer)
		e.SetIndent("", "  ")
		return e.Encode(c)
	}
	WriteCalibration(cmd.Root().Writer, c)
	return nil
}
