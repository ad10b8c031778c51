package benchreport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/moerun/moerun/internal/atomicfile"
	"github.com/moerun/moerun/internal/cliexit"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v3"
)

// Main runs bin/benchreport with args (without the program name) and returns its exit
// status: 0, 1 when an input is bad or an output cannot be written, 2 for bad flags.
// Every error is one line on stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := Command(stdout, stderr).Run(ctx, append([]string{"benchreport"}, args...))
	return cliexit.Code("benchreport", err, stderr)
}

// Command is bin/benchreport's command line.
func Command(stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:            "benchreport",
		Usage:           "compare a bench/gpu.sh results folder with PyTorch: comparison.md, comparison.json and PNG plots",
		UsageText:       "benchreport --results DIR [--out DIR] [--json]",
		HideHelpCommand: true,
		Writer:          stdout,
		ErrWriter:       stderr,
		ExitErrHandler:  func(context.Context, *cli.Command, error) {}, // Main prints and exits
		OnUsageError: func(_ context.Context, _ *cli.Command, err error, _ bool) error {
			return cliexit.Usage(err)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "results", Usage: "the folder bench/gpu.sh filled (required)"},
			&cli.StringFlag{Name: "out", Usage: "where comparison.md, comparison.json and the plots go (default: --results)"},
			&cli.BoolFlag{Name: "json", Usage: "print the JSON comparison to stdout instead of the Markdown"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.Args().Len() > 0 {
				return cliexit.Usage(fmt.Errorf("unexpected argument %q (usage: benchreport --results DIR [--out DIR] [--json])", cmd.Args().First()))
			}
			results := cmd.String("results")
			if results == "" {
				return cliexit.Usage(errors.New("--results DIR is required (the folder bench/gpu.sh filled)"))
			}
			out := cmd.String("out")
			if out == "" {
				out = results
			}
			return run(results, out, cmd.Bool("json"), cmd.Root().Writer)
		},
	}
}

// run loads results, writes the comparison and plots into out, and prints the Markdown
// (or the JSON) to stdout.
func run(results, out string, asJSON bool, stdout io.Writer) error {
	in, err := Load(results)
	if err != nil {
		return err
	}
	r := Compare(in)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("output folder: %w", err)
	}
	var md, js bytes.Buffer
	if err := r.Markdown(&md); err != nil {
		return err
	}
	if err := r.JSON(&js); err != nil {
		return fmt.Errorf("encode the JSON comparison: %w", err)
	}
	for name, buf := range map[string]*bytes.Buffer{FileMarkdown: &md, FileJSON: &js} {
		// A reader, not buf itself: buf is printed again below.
		if err := atomicfile.Write(filepath.Join(out, name), writeTo(bytes.NewReader(buf.Bytes()))); err != nil {
			return err
		}
	}
	if _, err := WritePlots(r, out); err != nil {
		return err
	}
	if asJSON {
		_, err = stdout.Write(js.Bytes())
	} else {
		_, err = stdout.Write(md.Bytes())
	}
	return err
}
