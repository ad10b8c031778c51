package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/comm/nccl"  // registers the "nccl" backend
	_ "github.com/moerun/moerun/comm/tcp" // registers the "tcp" backend
	"github.com/moerun/moerun/commbench"
	"github.com/moerun/moerun/cuda"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/internal/atomicfile"
	"github.com/moerun/moerun/rank"
	"github.com/moerun/moerun/rendezvous"
	"github.com/moerun/moerun/worker/progress"
)

// usageError marks bad command-line input: exit status 2, like flag parsing errors.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Main runs bin/worker with args (without the program name) and returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := Command(stdout, stderr)
	err := cmd.Run(ctx, append([]string{"worker"}, args...))
	if err == nil {
		return 0
	}
	var timedOut waitTimeout
	if errors.Is(err, comm.ErrPeerLost) || errors.As(err, &timedOut) {
		awaitTeardown(ctx)
	}
	fmt.Fprintf(stderr, "worker: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// StuckExitAfter bounds how long a worker stopped by SIGTERM or SIGINT may take to unwind.
const StuckExitAfter = 500 * time.Millisecond

// ExitIfStuck makes a stopped worker exit even when it cannot unwind: waits for peers poll
// the context and abort their communicators, but a thread inside a device call that never
// returns (a stream synchronisation behind an NCCL kernel whose peer was killed) never
// sees it. StuckExitAfter after ctx ends, unless release was called, the process exits
// with 143 (128 + SIGTERM); exiting frees its GPU memory and contexts, and the driver
// stops its kernels. Measured on 2 × H200 before this: the surviving rank of a killed
// peer held on until the launcher's SIGKILL, 2.3 s after the fault (docs/RELIABILITY.md).
func ExitIfStuck(ctx context.Context, stderr io.Writer) (release func()) {
	return exitIfStuck(ctx, StuckExitAfter, stderr, os.Exit)
}

func exitIfStuck(ctx context.Context, after time.Duration, stderr io.Writer, exit func(int)) (release func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(after)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			fmt.Fprintf(stderr, "worker: stopped, but still inside a device call %v later (a collective whose peer is gone); exiting\n", after)
			exit(143)
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// peerLostLinger bounds how long a worker whose peer failed waits to be stopped.
const peerLostLinger = 10 * time.Second

// awaitTeardown: when a collective failed because another rank died, the launcher is about
// to report that rank and stop this one; when this rank's wait in a collective ran out of
// time while the launcher watched its progress, the launcher is about to report the job
// hung, with the ranks that never came. Exiting at once would race it and could make this
// rank look like the first failure, so wait for the launcher's SIGTERM (ctx), for a
// bounded time. Workers started by mpirun or Slurm have no such launcher and exit at once.
func awaitTeardown(ctx context.Context) {
	if os.Getenv(rendezvous.EnvRank) == "" || os.Getenv(rendezvous.EnvToken) == "" {
		return
	}
	t := time.NewTimer(peerLostLinger)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Command is bin/worker's command line.
func Command(stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "worker",
		Usage:     "one rank of a moerun job (start it with bin/launch, mpirun or srun)",
		Writer:    stdout,
		ErrWriter: stderr,
		// Errors are printed once, by Main, with the exit status it chooses.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		OnUsageError:   flagError,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "tp", Usage: "tensor-parallel size (overrides MOERUN_TP)"},
			&cli.IntFlag{Name: "dp", Usage: "data-parallel size (overrides MOERUN_DP; default world/(tp·pcp·pp))"},
			&cli.IntFlag{Name: "pcp", Usage: "prefill context-parallel size (overrides MOERUN_PCP)"},
			&cli.IntFlag{Name: "pp", Usage: "pipeline-parallel size (overrides MOERUN_PP)"},
			&cli.BoolFlag{Name: "ep", Usage: "expert parallelism (overrides MOERUN_EP)"},
			&cli.StringFlag{Name: "backend", Value: "auto", Usage: "communicator backend: auto, cpu (the CPU backend, tcp) or " + strings.Join(comm.Backends(), ", ")},
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error"},
		},
		Commands: []*cli.Command{collectivesCommand(), runCommand()},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.Args().Len() > 0 {
				return usagef("unknown job %q: expected collectives or run", cmd.Args().First())
			}
			return cli.ShowRootCommandHelp(cmd)
		},
	}
}

// place reads the worker's place from the environment, then the layout flags.
func place(cmd *cli.Command) (Place, error) {
	p, err := PlaceFromEnv(os.Getenv)
	if err != nil {
		return p, usageError{err}
	}
	if cmd.IsSet("tp") || cmd.IsSet("dp") || cmd.IsSet("pcp") || cmd.IsSet("pp") || cmd.IsSet("ep") {
		l := p.Layout
		tp, pcp, pp, dp, ep := l.TP, l.PCP, l.PP, 0, l.EP
		if cmd.IsSet("tp") {
			tp = cmd.Int("tp")
		}
		if cmd.IsSet("pcp") {
			pcp = cmd.Int("pcp")
		}
		if cmd.IsSet("pp") {
			pp = cmd.Int("pp")
		}
		if cmd.IsSet("dp") {
			dp = cmd.Int("dp")
		}
		if cmd.IsSet("ep") {
			ep = cmd.Bool("ep")
		}
		if p.Layout, err = rank.NewLayout(p.World, tp, pcp, pp, dp, ep); err != nil {
			return p, usagef("layout: %w", err)
		}
	}
	return p, nil
}

// join joins the job at p with the backend and logging the flags ask for.
func join(ctx context.Context, cmd *cli.Command, p Place) (*Job, error) {
	backend, ngpu, err := chooseBackend(cmd.String("backend"), cmd.Root().ErrWriter, p.Rank)
	if err != nil {
		return nil, err
	}
	p.Device = -1
	if ngpu > 0 {
		p.Device = p.LocalRank % ngpu
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cmd.String("log-level"))); err != nil {
		return nil, usagef("--log-level %q: expected debug, info, warn or error", cmd.String("log-level"))
	}
	logger := slog.New(slog.NewTextHandler(cmd.Root().ErrWriter, &slog.HandlerOptions{Level: level}))
	opts, err := progressOptions(os.Getenv, p.Rank)
	if err != nil {
		return nil, err
	}
	j, err := Join(ctx, p, backend, logger, opts...)
	if err != nil {
		return nil, fmt.Errorf("rank %d: join the job: %w", p.Rank, err)
	}
	return j, nil
}

// progressOptions reads the launcher's heartbeat period (progress.EnvHeartbeat) and the
// MOERUN_TEST_HANG and MOERUN_TEST_EXIT hooks from the environment.
func progressOptions(getenv func(string) string, r int) ([]JoinOption, error) {
	var opts []JoinOption
	if v := getenv(progress.EnvHeartbeat); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, usagef("%s=%q: expected a positive duration such as 1s", progress.EnvHeartbeat, v)
		}
		opts = append(opts, WithHeartbeat(d))
	}
	seq, err := hangHook(getenv(envTestHang), r)
	if err != nil {
		return nil, usageError{err}
	}
	if seq > 0 {
		opts = append(opts, withHangBefore(seq))
	}
	seq, code, err := exitHook(getenv(envTestExit), r)
	if err != nil {
		return nil, usageError{err}
	}
	if seq > 0 {
		opts = append(opts, withExitBefore(seq, code))
	}
	return opts, nil
}

// chooseBackend resolves --backend: auto takes NCCL when a GPU and the libraries are there
// and says so on stderr, else the CPU backend with a one-line notice; nccl without them
// fails with the missing library named. It returns the backend and, for nccl, the GPU
// count.
func chooseBackend(name string, stderr io.Writer, rank int) (string, int, error) {
	switch name {
	case "auto":
		n, libs, err := gpus()
		if err != nil {
			if rank == 0 {
				fmt.Fprintf(stderr, "worker: no GPU backend (%v); using the CPU backend tcp\n", err)
			}
			return "tcp", 0, nil
		}
		if rank == 0 {
			fmt.Fprintf(stderr, "worker: %d GPU(s) and NCCL found; using the nccl backend (%s)\n", n, libs)
		}
		return "nccl", n, nil
	case "nccl":
		n, libs, err := gpus()
		if err != nil {
			return "", 0, fmt.Errorf("--backend nccl: %w", err)
		}
		if rank == 0 {
			fmt.Fprintf(stderr, "worker: %d GPU(s); nccl backend (%s)\n", n, libs)
		}
		return "nccl", n, nil
	case "cpu":
		return "tcp", 0, nil // the CPU backend's name in the and users' words
	}
	for _, b := range comm.Backends() {
		if b == name {
			return name, 0, nil
		}
	}
	return "", 0, usagef("--backend %q: expected auto, cpu or one of %s", name, strings.Join(comm.Backends(), ", "))
}

// gpus loads the CUDA driver and NCCL, counts the devices, and names the libraries loaded
// (printed once, by rank 0: two NCCL builds coexist on the GPU hosts).
func gpus() (int, string, error) {
	drv, err := cuda.Load()
	if err != nil {
		return 0, "", err
	}
	n, err := drv.DeviceCount()
	if err != nil {
		return 0, "", err
	}
	if n == 0 {
		return 0, "", cuda.ErrNoDevice
	}
	lib, err := nccl.Load()
	if err != nil {
		return 0, "", err
	}
	v, _ := drv.Version()
	return n, fmt.Sprintf("CUDA driver %d.%d from %s, NCCL %s from %s", v/1000, v%1000/10, drv.Path(), lib.VersionString(), lib.Path()), nil
}

// flagError marks urfave/cli's own parse errors (unknown flag, bad value) as usage errors.
func flagError(_ context.Context, _ *cli.Command, err error, _ bool) error { return usageError{err} }

func collectivesCommand() *cli.Command {
	return &cli.Command{
		Name:         "collectives",
		OnUsageError: flagError,
		Usage:        "nccl-tests-style sweep of every collective, with the results checked",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ops", Value: "all", Usage: "collectives, comma-separated: " + opNames() + ", or all"},
			&cli.StringFlag{Name: "dtype", Aliases: []string{"d"}, Value: "float32", Usage: "float32, bf16 or all"},
			&cli.StringFlag{Name: "min-bytes", Aliases: []string{"b"}, Value: "1K", Usage: "smallest message (K, M, G suffixes)"},
			&cli.StringFlag{Name: "max-bytes", Aliases: []string{"e"}, Value: "16M", Usage: "largest message"},
			&cli.IntFlag{Name: "step-factor", Aliases: []string{"f"}, Value: 4, Usage: "multiply the size by this between rows"},
			&cli.IntFlag{Name: "iters", Aliases: []string{"n"}, Value: 20, Usage: "timed calls per row"},
			&cli.IntFlag{Name: "warmup", Aliases: []string{"w"}, Value: 5, Usage: "untimed calls before each row"},
			&cli.BoolFlag{Name: "check", Aliases: []string{"c"}, Value: true, Usage: "check every result (the #wrong column)"},
			&cli.StringFlag{Name: "group", Value: "world", Usage: "communicator(s) to sweep: world, tp, pcp, pp, dp, ep, or all, comma-separated"},
			&cli.StringFlag{Name: "json", Usage: "also write the results to this file as JSON (rank 0)"},
		},
		Action: runCollectives,
	}
}

func opNames() string {
	var names []string
	for _, op := range commbench.Ops {
		names = append(names, string(op))
	}
	return strings.Join(names, ", ")
}

func runCollectives(ctx context.Context, cmd *cli.Command) error {
	opt, err := sweepOptions(cmd)
	if err != nil {
		return err
	}
	groups, err := parseGroups(cmd.String("group"))
	if err != nil {
		return err
	}
	jsonPath := cmd.String("json")
	p, err := place(cmd)
	if err != nil {
		return err
	}
	if p.Rank == 0 { // the only rank that writes it, at the end: prove it can, first
		if err := checkWritableFile("--json", jsonPath); err != nil {
			return usageError{err}
		}
	}
	j, err := join(ctx, cmd, p)
	if err != nil {
		return err
	}
	defer j.Close()

	out := cmd.Root().Writer
	var reports []commbench.Report
	for _, g := range groups {
		c := j.World
		if g != "world" {
			kind, _ := groupKind(g)
			c = j.Group(kind)
		}
		// Rank 0 of the world prints, and sweeps only the groups it belongs to; the
		// other groups of the same kind run the same sweep at the same time.
		header := fmt.Sprintf("moerun collectives: %v, backend %s, group %s (%d ranks), %d iterations after %d warm-up",
			j.Place.Layout, j.Backend, g, c.Size(), opt.Iters, opt.Warmup)
		var table *commbench.Table
		if j.Place.Rank == 0 {
			table = commbench.NewTable(out, header)
		}
		results, err := commbench.Sweep(ctx, c, opt, func(r commbench.Result) {
			if table != nil {
				table.Row(r)
			}
		})
		if err != nil {
			return fmt.Errorf("rank %d: %s group: %w", j.Place.Rank, g, err)
		}
		reports = append(reports, commbench.Report{Backend: j.Backend, Layout: j.Place.Layout.String(), Group: g, Ranks: c.Size(), Options: opt, Results: results, CommsReadyUnix: j.CommsReadyUnix, ReadyUnix: j.ReadyUnix})
	}
	if j.Place.Rank == 0 {
		var wrong int64
		for _, rep := range reports {
			for _, r := range rep.Results {
				wrong += max(r.Wrong, 0)
			}
		}
		fmt.Fprintf(out, "# out of bounds values : %d %s\n", wrong, map[bool]string{true: "OK", false: "FAILED"}[wrong == 0])
		if jsonPath != "" {
			if err := atomicfile.Write(jsonPath, func(w io.Writer) error { return writeJSON(w, reports) }); err != nil {
				return err
			}
		}
		if wrong != 0 {
			return fmt.Errorf("%d wrong elements", wrong)
		}
	}
	return nil
}

func sweepOptions(cmd *cli.Command) (commbench.Options, error) {
	ops, err := commbench.ParseOps(cmd.String("ops"))
	if err != nil {
		return commbench.Options{}, usagef("--ops: %w", err)
	}
	var types []dtype.DType
	if d := cmd.String("dtype"); d == "all" {
		types = []dtype.DType{dtype.Float32, dtype.BFloat16}
	} else {
		t, err := dtype.Parse(d)
		if err != nil {
			return commbench.Options{}, usagef("--dtype: %w", err)
		}
		types = []dtype.DType{t}
	}
	minB, err := ParseBytes(cmd.String("min-bytes"))
	if err != nil {
		return commbench.Options{}, usagef("--min-bytes: %w", err)
	}
	maxB, err := ParseBytes(cmd.String("max-bytes"))
	if err != nil {
		return commbench.Options{}, usagef("--max-bytes: %w", err)
	}
	opt := commbench.Options{
		Ops: ops, DTypes: types, MinBytes: minB, MaxBytes: maxB, StepFactor: int64(cmd.Int("step-factor")),
		Iters: cmd.Int("iters"), Warmup: cmd.Int("warmup"), Check: cmd.Bool("check"),
	}
	if err := opt.Validate(); err != nil {
		return opt, usageError{err}
	}
	return opt, nil
}

func groupKind(name string) (rank.GroupKind, bool) {
	for _, k := range rank.AllGroupKinds {
		if k.String() == name {
			return k, true
		}
	}
	return 0, false
}

func parseGroups(s string) ([]string, error) {
	if s == "all" {
		out := []string{"world"}
		for _, k := range rank.AllGroupKinds {
			out = append(out, k.String())
		}
		return out, nil
	}
	var out []string
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if _, ok := groupKind(g); !ok && g != "world" {
			return nil, usagef("--group %q: expected world, tp, pcp, pp, dp, ep or all", g)
		}
		out = append(out, g)
	}
	return out, nil
}

// ParseBytes reads a size such as 8, 64K, 16M or 1G (commbench.ParseBytes).
func ParseBytes(s string) (int64, error) { return commbench.ParseBytes(s) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
