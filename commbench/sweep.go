package commbench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
)

// Options describe a sweep: the collectives, the element types, and message sizes from
// MinBytes to MaxBytes multiplied by StepFactor, each timed over Iters calls after Warmup.
type Options struct {
	Ops        []Op
	DTypes     []dtype.DType
	MinBytes   int64
	MaxBytes   int64
	StepFactor int64
	Iters      int
	Warmup     int
	// Check runs one more call on fresh outputs and counts the wrong elements.
	Check bool
}

// Validate reports the first option that cannot work, naming it.
func (o Options) Validate() error {
	switch {
	case len(o.Ops) == 0:
		return fmt.Errorf("no collectives to run")
	case len(o.DTypes) == 0:
		return fmt.Errorf("no element types to run")
	case o.MinBytes < 1:
		return fmt.Errorf("min bytes %d: expected at least 1", o.MinBytes)
	case o.MaxBytes < o.MinBytes:
		return fmt.Errorf("max bytes %d is below min bytes %d", o.MaxBytes, o.MinBytes)
	case o.StepFactor < 2:
		return fmt.Errorf("step factor %d: expected at least 2", o.StepFactor)
	case o.Iters < 1:
		return fmt.Errorf("iterations %d: expected at least 1", o.Iters)
	case o.Warmup < 0:
		return fmt.Errorf("warm-up iterations %d: expected 0 or more", o.Warmup)
	}
	for _, t := range o.DTypes {
		if !t.Valid() {
			return fmt.Errorf("element type %v is not supported", t)
		}
	}
	return nil
}

// Result is one row of the sweep. Size is the full buffer in bytes (the gathered output,
// the reduce-scatter input, the all-reduce or broadcast buffer), Count its elements.
type Result struct {
	Op     Op      `json:"op"`
	Size   int64   `json:"size_bytes"`
	Count  int     `json:"count"`
	DType  string  `json:"type"`
	RedOp  string  `json:"redop"`
	Root   int     `json:"root"`
	TimeUS float64 `json:"time_us"` // mean per call, slowest rank
	AlgBW  float64 `json:"algbw_gbps"`
	BusBW  float64 `json:"busbw_gbps"`
	Wrong  int64   `json:"wrong"` // summed over ranks; -1 when not checked
	Ranks  int     `json:"ranks"`
}

// Sweep runs every (collective, type, size) of opt on c, collectively: every rank of c
// calls it with the same options. Every rank returns the same results; row is called on
// each as soon as it is measured (rank 0 prints it).
func Sweep(ctx context.Context, c comm.Communicator, opt Options, row func(Result)) ([]Result, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	var out []Result
	seed := 0
	for _, op := range opt.Ops {
		for _, dt := range opt.DTypes {
			for size := opt.MinBytes; size <= opt.MaxBytes; size *= opt.StepFactor {
				seed++
				res, err := measure(ctx, c, op, dt, size, opt, seed)
				if err != nil {
					return out, err
				}
				out = append(out, res)
				if row != nil {
					row(res)
				}
			}
		}
	}
	return out, nil
}

func measure(ctx context.Context, c comm.Communicator, op Op, dt dtype.DType, size int64, opt Options, seed int) (Result, error) {
	n := c.Size()
	count := int(size / int64(dt.Size()))
	if op == AllGather || op == ReduceScatter {
		count -= count % n // equal blocks, as nccl-tests rounds
	}
	mem := comm.MemoryOf(c)
	k, err := NewCase(op, dt, count, nil, c.Rank(), n, seed, mem)
	if err != nil {
		return Result{}, err
	}
	defer k.Free()
	fail := func(err error) (Result, error) {
		return Result{}, fmt.Errorf("%s %v %d bytes: %w", op, dt, size, err)
	}
	for range opt.Warmup {
		if err := k.Run(ctx, c); err != nil {
			return fail(err)
		}
	}
	if err := c.Barrier(ctx); err != nil {
		return fail(err)
	}
	start := time.Now()
	for range opt.Iters {
		if err := k.Run(ctx, c); err != nil {
			return fail(err)
		}
	}
	if mem != nil {
		if err := mem.Sync(ctx); err != nil { // GPU collectives return before they finish
			return fail(err)
		}
	}
	elapsed := time.Since(start).Seconds() / float64(opt.Iters)
	var wrong float32 = -1
	if opt.Check {
		if err := k.Reset(); err != nil {
			return fail(err)
		}
		if err := k.Run(ctx, c); err != nil {
			return fail(err)
		}
		w, err := k.Wrong(ctx)
		if err != nil {
			return fail(err)
		}
		wrong = float32(w)
	}
	// Every rank learns the slowest rank's time and the total of wrong elements.
	mine := []float32{float32(elapsed), wrong}
	all := make([]float32, 2*n)
	if err := comm.AllGatherFloats(ctx, c, mine, all); err != nil {
		return fail(err)
	}
	slowest, wrongs := 0.0, int64(0)
	for r := 0; r < n; r++ {
		slowest = max(slowest, float64(all[2*r]))
		if all[2*r+1] < 0 {
			wrongs = -1
		} else if wrongs >= 0 {
			wrongs += int64(all[2*r+1])
		}
	}
	bytes := float64(count * dt.Size())
	res := Result{
		Op: op, Size: int64(count * dt.Size()), Count: count, DType: dt.String(), RedOp: "none", Root: -1,
		TimeUS: slowest * 1e6, Wrong: wrongs, Ranks: n,
	}
	if op.Reduces() {
		res.RedOp = "sum"
	}
	if op == Broadcast {
		res.Root = k.Root
	}
	if slowest > 0 {
		res.AlgBW = bytes / slowest / 1e9
		res.BusBW = res.AlgBW * op.BusFactor(n)
	}
	return res, nil
}

// Table prints results as nccl-tests does: one block per collective with the columns
// size, count, type, redop, root, time, algbw, busbw and #wrong.
type Table struct {
	w      io.Writer
	lastOp Op
}

// NewTable writes to w; Header describes the run once at the top.
func NewTable(w io.Writer, header string) *Table {
	fmt.Fprintf(w, "# %s\n", header)
	return &Table{w: w}
}

// Row prints one result, starting a new block when the collective changes.
func (t *Table) Row(r Result) {
	if r.Op != t.lastOp {
		fmt.Fprintf(t.w, "#\n# %s\n", r.Op)
		fmt.Fprintf(t.w, "# %12s %12s %8s %6s %5s %11s %9s %9s %7s\n", "size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong")
		fmt.Fprintf(t.w, "# %12s %12s %8s %6s %5s %11s %9s %9s %7s\n", "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "")
		t.lastOp = r.Op
	}
	wrong := "N/A"
	if r.Wrong >= 0 {
		wrong = fmt.Sprint(r.Wrong)
	}
	fmt.Fprintf(t.w, "  %12d %12d %8s %6s %5d %11.1f %9.3f %9.3f %7s\n", r.Size, r.Count, r.DType, r.RedOp, r.Root, r.TimeUS, r.AlgBW, r.BusBW, wrong)
}

// Report is the JSON twin of the tables.
type Report struct {
	Backend string   `json:"backend"`
	Layout  string   `json:"layout"`
	Group   string   `json:"group"`
	Ranks   int      `json:"ranks"`
	Options any      `json:"options"`
	Results []Result `json:"results"`
	// CommsReadyUnix is when every rank had set up every communicator, ReadyUnix when a
	// first collective had completed after that (Unix seconds; 0 if unknown): the
	// start-up times, measured from the launch (worker.Job).
	CommsReadyUnix float64 `json:"comms_ready_unix_s,omitempty"`
	ReadyUnix      float64 `json:"ready_unix_s,omitempty"`
}
