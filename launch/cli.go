package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/moerun/moerun/topology"
)

// Exit codes of the launcher itself (a failed rank's code is passed through instead).
const (
	ExitUsage    = 2   // bad flags or layout, or ranks that cannot be placed; nothing was started
	ExitHung     = 124 // the job hung (no progress or no heartbeat for --timeout); as timeout(1)
	ExitNotFound = 127 // PROGRAM is not on PATH; nothing was started (as sh, env and timeout do)
)

// Options describe a job.
type Options struct {
	NP, TP, DP, PCP, PP int  // DP 0: derived as NP/(TP·PCP·PP)
	EP                  bool // expert parallelism
	// Timeout bounds any single wait of a worker for a peer: the workers get it
	// (MOERUN_TIMEOUT) and bound their own waits with it, and the launcher stops the job
	// as hung when no rank has made progress (or one has sent no heartbeat) for as long.
	Timeout time.Duration
	// Grace is the time between SIGTERM and SIGKILL when the job is torn down.
	Grace   time.Duration
	Program string
	Args    []string

	// Bind says which CPUs each rank is bound to: BindNUMA (its GPU's NUMA node; the
	// default, also when empty), BindCore (an even share of those among the ranks that
	// share them) or BindNone.
	Bind string
	// GPUOrder says which GPU each rank gets: OrderAuto (the default, also when empty),
	// OrderIdentity, or the name of a JSON file listing a GPU index per rank.
	GPUOrder string
	// ReportBindings prints each rank's host, GPU, NUMA node and CPUs before the job
	// starts.
	ReportBindings bool

	// ShowTopology asks for the GPU topology instead of a job: of this machine, or of
	// TopologyFile (a JSON file or a shipped name), as text or as JSON. No job flag or
	// PROGRAM goes with it. A job is placed on TopologyFile's first machine (or the one
	// of the node named as this host) instead of this machine's: GPUs as it says, CPUs
	// reported, not bound.
	ShowTopology bool
	TopologyFile string
	JSON         bool
}

const usageText = "launch -np N [--tp T] [--dp D] [--pcp P] [--pp 1] [--ep] [--timeout DUR] [--grace DUR] [--bind numa|core|none] [--gpu-order auto|identity|FILE] [--report-bindings] [--topology-file FILE] [--] PROGRAM [ARGS...]"

// topologyUsage is the other form of the command line.
const topologyUsage = "launch --show-topology [--topology-file FILE] [--json]"

// jobFlags are the flags that describe a job, which --show-topology does not start.
var jobFlags = []string{"np", "tp", "dp", "pcp", "pp", "ep", "timeout", "grace", "bind", "gpu-order", "report-bindings"}

// usageError is a command-line error that belongs to one form of the command line.
type usageError struct {
	err   error
	usage string
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func command(o *Options, stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "launch",
		Usage:     "run PROGRAM as the N ranks of one moerun job on this host",
		UsageText: usageText + "\n" + topologyUsage,
		Description: "Every rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT\n" +
			"(the job's rendezvous store), MOERUN_TOKEN, MOERUN_TP/DP/PCP/PP/EP, MOERUN_TIMEOUT,\n" +
			"MOERUN_HEARTBEAT and NCCL_NVLS_ENABLE=0 (unless already set). Output lines are prefixed\n" +
			"\"[rank] \". When a rank fails, launch names it first (status or signal, pid, its last\n" +
			"output lines, the state of the others), the others get SIGTERM, then SIGKILL after\n" +
			"--grace, and launch exits with the failed rank's status (128+n for signal n). Workers\n" +
			"report their progress to the store; when none has made progress for --timeout while\n" +
			"some wait in a collective, or one sends no heartbeat (stopped), launch says who waits\n" +
			"in which collective and who never came, stops the job and exits 124. SIGINT or SIGTERM\n" +
			"to launch is passed to every rank as SIGTERM (then SIGKILL after --grace; a second\n" +
			"SIGINT kills at once), and launch exits 130 or 143 unless a rank failed first. Ranks\n" +
			"die with launch. Flags end at PROGRAM: its arguments are its own.\n\n" +
			"Placement: on a machine with GPUs each rank gets one (CUDA_VISIBLE_DEVICES lists the job's\n" +
			"GPUs by local rank, with CUDA_DEVICE_ORDER=PCI_BUS_ID, so device LOCAL_RANK is the rank's;\n" +
			"a CUDA_VISIBLE_DEVICES already set restricts the job to the GPUs it names). --gpu-order\n" +
			"auto puts each TP group on the best-connected free GPUs (NV# > PIX > PXB > PHB > NODE >\n" +
			"SYS), keeping rank r on GPU r where that is already best; identity keeps it always; FILE\n" +
			"is a JSON list of GPU indices, one per rank. --bind numa binds each rank to the CPUs of\n" +
			"its GPU's NUMA node (ranks without a GPU take the NUMA nodes in turn), core to an even\n" +
			"share of them among the ranks there, none leaves them unbound; CPUs the launcher may not\n" +
			"use (taskset, cpuset) are dropped, and a rank left with none is an error. With\n" +
			"--topology-file the job is placed on that machine: GPUs as it says, CPUs reported, not\n" +
			"bound. --report-bindings prints rank, host, GPU, NUMA node and CPUs before the start.\n\n" +
			"--show-topology starts nothing: it prints this machine's GPUs as nvidia-smi topo -m does\n" +
			"(the class of every GPU pair: NV#, PIX, PXB, PHB, NODE, SYS), each GPU's CPU and NUMA\n" +
			"affinity, the NUMA nodes and the NICs; when no GPU is found it says why. --topology-file\n" +
			"shows a saved topology instead: a JSON file, or a shipped one by name:\n" +
			strings.Join(topology.Shipped(), ", ") + ".\n" +
			"--json prints the topology as JSON, which --topology-file reads back.",
		HideHelpCommand: true,
		HideVersion:     true,
		Writer:          stdout,
		ErrWriter:       stderr,
		OnUsageError: func(_ context.Context, _ *cli.Command, err error, _ bool) error {
			return err
		},
		ExitErrHandler: func(context.Context, *cli.Command, error) {}, // Main owns the exit
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "np", Usage: "number of ranks (processes) to start (required)"},
			&cli.IntFlag{Name: "tp", Value: 1, Usage: "tensor-parallel size"},
			&cli.IntFlag{Name: "dp", Value: 0, Usage: "data-parallel size (0: np/(tp·pcp·pp))"},
			&cli.IntFlag{Name: "pcp", Value: 1, Usage: "prefill context-parallel size"},
			&cli.IntFlag{Name: "pp", Value: 1, Usage: "pipeline-parallel size"},
			&cli.BoolFlag{Name: "ep", Usage: "enable expert parallelism"},
			&cli.DurationFlag{Name: "timeout", Value: 120 * time.Second, Usage: "bound on any single wait of a worker for a peer (MOERUN_TIMEOUT); the job is stopped as hung after this long without progress or heartbeat"},
			&cli.DurationFlag{Name: "grace", Value: 2 * time.Second, Usage: "time between SIGTERM and SIGKILL when the job is torn down"},
			&cli.StringFlag{Name: "bind", Value: BindNUMA, Usage: "bind each rank to the CPUs of its GPU's NUMA node (numa), to an even share of them (core), or not (none)"},
			&cli.StringFlag{Name: "gpu-order", Value: OrderAuto, Usage: "GPU of each rank: auto (TP groups on the best-connected GPUs), identity (rank r on GPU r), or a JSON file listing a GPU per rank"},
			&cli.BoolFlag{Name: "report-bindings", Usage: "print each rank's host, GPU, NUMA node and CPUs before the job starts"},
			&cli.BoolFlag{Name: "show-topology", Usage: "print the GPU topology (of this machine, or of --topology-file) and start nothing"},
			&cli.StringFlag{Name: "topology-file", Usage: "a topology JSON file, or a shipped name such as dgx-h100: the one --show-topology shows, or the machine a job is placed on (CPUs reported, not bound)"},
			&cli.BoolFlag{Name: "json", Usage: "with --show-topology: print the topology as JSON"},
		},
		Action: func(_ context.Context, cmd *cli.Command) error {
			if cmd.Bool("show-topology") {
				return parseShowTopology(o, cmd)
			}
			if cmd.IsSet("json") {
				return &usageError{errors.New("--json goes with --show-topology"), topologyUsage}
			}
			if !cmd.IsSet("np") {
				return errors.New("-np is required")
			}
			*o = Options{
				NP: cmd.Int("np"), TP: cmd.Int("tp"), DP: cmd.Int("dp"), PCP: cmd.Int("pcp"), PP: cmd.Int("pp"),
				EP:             cmd.Bool("ep"),
				Timeout:        cmd.Duration("timeout"),
				Grace:          cmd.Duration("grace"),
				Bind:           cmd.String("bind"),
				GPUOrder:       cmd.String("gpu-order"),
				ReportBindings: cmd.Bool("report-bindings"),
				TopologyFile:   cmd.String("topology-file"),
			}
			args := cmd.Args().Slice()
			if len(args) == 0 {
				return errors.New("missing PROGRAM")
			}
			o.Program, o.Args = args[0], args[1:]
			switch {
			case o.NP < 1:
				return fmt.Errorf("-np %d: need at least one rank", o.NP)
			case o.Timeout <= 0:
				return fmt.Errorf("--timeout %v: must be positive", o.Timeout)
			case o.Grace < 0:
				return fmt.Errorf("--grace %v is negative", o.Grace)
			case o.Bind != BindNUMA && o.Bind != BindCore && o.Bind != BindNone:
				return fmt.Errorf("--bind %q: expected numa, core or none", o.Bind)
			case o.GPUOrder == "":
				return errors.New("--gpu-order: expected auto, identity or a JSON file")
			}
			return nil
		},
	}
}

// parseShowTopology reads the --show-topology form of the command line.
func parseShowTopology(o *Options, cmd *cli.Command) error {
	fail := func(format string, args ...any) error {
		return &usageError{fmt.Errorf(format, args...), topologyUsage}
	}
	for _, name := range jobFlags {
		if cmd.IsSet(name) {
			return fail("--show-topology starts no job: drop -%s", name)
		}
	}
	if args := cmd.Args().Slice(); len(args) > 0 {
		return fail("--show-topology starts no job: drop PROGRAM %q", args[0])
	}
	*o = Options{ShowTopology: true, TopologyFile: cmd.String("topology-file"), JSON: cmd.Bool("json")}
	return nil
}

// Parse reads the launcher's command line (args[0] is the program name). Flags end at
// PROGRAM, the first argument that is not a flag or a flag's value, or after "--":
// everything from PROGRAM on is PROGRAM's, untouched. Flags take one or two dashes
// (-np 4, --np=4). It reports help == true when it printed the help text to stdout.
func Parse(args []string, stdout, stderr io.Writer) (o Options, help bool, err error) {
	var parsed bool
	cmd := command(&o, stdout, stderr)
	cmd.Action = wrapAction(cmd.Action, &parsed)
	if len(args) == 0 {
		args = []string{"launch"}
	}
	if err := cmd.Run(context.Background(), splitAtProgram(cmd, args)); err != nil {
		return Options{}, false, err
	}
	if !parsed { // the help flag was given: urfave printed the help and ran no action
		return Options{}, true, nil
	}
	return o, false, nil
}

func wrapAction(a cli.ActionFunc, ran *bool) cli.ActionFunc {
	return func(ctx context.Context, cmd *cli.Command) error {
		*ran = true
		return a(ctx, cmd)
	}
}

// splitAtProgram inserts "--" before PROGRAM, so that urfave/cli passes PROGRAM's arguments
// through verbatim. (urfave's StopOnNthArg is not enough: it checks for "--" before it counts
// arguments, so "prog -- x" would lose its "--".) Which flags take a value comes from the
// command's own flag table; an unknown flag is left for urfave to report.
func splitAtProgram(cmd *cli.Command, args []string) []string {
	out := []string{args[0]}
	rest := args[1:]
	for len(rest) > 0 {
		a := rest[0]
		switch {
		case a == "--":
			return append(out, rest...)
		case a == "-" || !strings.HasPrefix(a, "-"):
			return append(append(out, "--"), rest...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		n := 1
		if !hasValue && takesValue(cmd, name) && len(rest) > 1 {
			n = 2
		}
		out = append(out, rest[:n]...)
		rest = rest[n:]
	}
	return out
}

func takesValue(cmd *cli.Command, name string) bool {
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			if n == name {
				v, ok := f.(interface{ TakesValue() bool })
				return ok && v.TakesValue()
			}
		}
	}
	return false
}

// Main runs the launcher with os-style arguments and returns its exit code: the failed
// rank's status, 128+n if a rank died of signal n or the launcher got signal n (SIGINT 130,
// SIGTERM 143), 124 when the job hung, 2 for usage errors (nothing started), 127 when
// PROGRAM is not found.
func Main(args []string, stdout, stderr io.Writer) int {
	o, help, err := Parse(args, stdout, stderr)
	if err != nil {
		usage := usageText
		if ue := (*usageError)(nil); errors.As(err, &ue) {
			usage = ue.usage
		}
		fmt.Fprintf(stderr, "launch: %v (usage: %s)\n", err, usage)
		return ExitUsage
	}
	if help {
		return 0
	}
	if o.ShowTopology {
		return ShowTopology(o, stdout, stderr)
	}
	return Run(context.Background(), o, stdout, stderr)
}
