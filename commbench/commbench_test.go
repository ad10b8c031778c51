package commbench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/comm/commtest"
	"github.com/moerun/moerun/comm/tcp"
	"github.com/moerun/moerun/commbench"
	"github.com/moerun/moerun/dtype"
)

func TestSweepChecksEveryRow(t *testing.T) {
	opt := commbench.Options{Ops: commbench.Ops, DTypes: []dtype.DType{dtype.Float32, dtype.BFloat16},
		MinBytes: 1 << 10, MaxBytes: 256 << 10, StepFactor: 16, Iters: 2, Warmup: 1, Check: true}
	var mu sync.Mutex
	var out bytes.Buffer
	all := make([][]commbench.Result, 3)
	err := commtest.RunGroup(t.Context(), tcp.Open, 3, func(ctx context.Context, c comm.Communicator) error {
		var table *commbench.Table
		if c.Rank() == 0 {
			table = commbench.NewTable(&out, "test")
		}
		res, err := commbench.Sweep(ctx, c, opt, func(r commbench.Result) {
			if table != nil {
				mu.Lock()
				table.Row(r)
				mu.Unlock()
			}
		})
		all[c.Rank()] = res
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// 6 collectives × 2 types × sizes 1K, 16K, 256K.
	if len(all[0]) != 6*2*3 {
		t.Fatalf("%d rows, want 36", len(all[0]))
	}
	for i, r := range all[0] {
		if r.Wrong != 0 || r.TimeUS <= 0 || r.Ranks != 3 {
			t.Errorf("row %d: %+v", i, r)
		}
		if all[1][i] != r || all[2][i] != r {
			t.Errorf("row %d differs between ranks: %+v %+v %+v", i, r, all[1][i], all[2][i])
		}
		if (r.Op == commbench.AllGather || r.Op == commbench.ReduceScatter) && r.Count%3 != 0 {
			t.Errorf("row %d: count %d is not a multiple of the group", i, r.Count)
		}
		if want := r.AlgBW * r.Op.BusFactor(3); r.BusBW != want {
			t.Errorf("row %d: busbw %v, want %v", i, r.BusBW, want)
		}
	}
	text := out.String()
	for _, want := range []string{"# all_gather\n", "# reduce_scatter_v\n", "#wrong", "float32", "bf16", "sum"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	js, err := json.Marshal([]commbench.Report{{Backend: "tcp", Results: all[0], Options: opt}})
	if err != nil {
		t.Fatal(err)
	}
	var back []commbench.Report
	if err := json.Unmarshal(js, &back); err != nil || len(back[0].Results) != 36 || !strings.Contains(string(js), `"bf16"`) {
		t.Errorf("JSON round trip: %v\n%.200s", err, js)
	}
}

// dropsData is a communicator whose all-reduce forgets to add rank 1's data.
type dropsData struct{ comm.Communicator }

func (d dropsData) AllReduce(ctx context.Context, send, recv comm.Buffer) error {
	if d.Rank() == 1 {
		zero := comm.NewHost(send.DType(), send.Len())
		return d.Communicator.AllReduce(ctx, zero, recv)
	}
	return d.Communicator.AllReduce(ctx, send, recv)
}

func TestWrongIsCounted(t *testing.T) {
	opt := commbench.Options{Ops: []commbench.Op{commbench.AllReduce}, DTypes: []dtype.DType{dtype.Float32},
		MinBytes: 4096, MaxBytes: 4096, StepFactor: 2, Iters: 1, Check: true}
	err := commtest.RunGroup(t.Context(), tcp.Open, 2, func(ctx context.Context, c comm.Communicator) error {
		res, err := commbench.Sweep(ctx, dropsData{c}, opt, nil)
		if err != nil {
			return err
		}
		// Values are 0 for 1 in 13 elements, so most of the 1024 sums are wrong on both ranks.
		if res[0].Wrong < 2*900 {
			t.Errorf("wrong = %d, want most of 2×1024", res[0].Wrong)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOptionsValidate(t *testing.T) {
	good := commbench.Options{Ops: commbench.Ops, DTypes: []dtype.DType{dtype.Float32}, MinBytes: 8, MaxBytes: 8, StepFactor: 2, Iters: 1}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(o *commbench.Options){
		func(o *commbench.Options) { o.Ops = nil },
		func(o *commbench.Options) { o.MinBytes = 0 },
		func(o *commbench.Options) { o.MaxBytes = 4 },
		func(o *commbench.Options) { o.StepFactor = 1 },
		func(o *commbench.Options) { o.Iters = 0 },
		func(o *commbench.Options) { o.DTypes = []dtype.DType{dtype.Invalid} },
	}
	for i, edit := range bad {
		o := good
		edit(&o)
		if o.Validate() == nil {
			t.Errorf("case %d: invalid options accepted", i)
		}
	}
	if _, err := commbench.ParseOps("all_gather,nope"); err == nil {
		t.Error("ParseOps accepted an unknown collective")
	}
}

// A case larger than one piece (filled and checked on several CPUs): the sentinel left by
// Reset is wrong everywhere, the right gathered values nowhere, and a changed element in
// any piece is counted once.
func TestLargeCaseFillAndCheck(t *testing.T) {
	counts := []int{1_500_007, 3, 2_100_011} // uneven, across piece and period boundaries
	total := counts[0] + counts[1] + counts[2]
	k, err := commbench.NewCase(commbench.AllGatherV, dtype.BFloat16, total, counts, 1, 3, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := k.Wrong(t.Context()); w != total {
		t.Fatalf("after Reset: %d wrong, want all %d", w, total)
	}
	out := k.Output().BF16s()
	i := 0
	for r, n := range counts {
		for range n {
			out[i] = dtype.FromFloat32(commbench.Value(5, r, i))
			i++
		}
	}
	if w, _ := k.Wrong(t.Context()); w != 0 {
		t.Fatalf("the right values: %d wrong", w)
	}
	for _, at := range []int{0, 1_500_008, total - 1} {
		out[at] = dtype.FromFloat32(7)
	}
	if w, _ := k.Wrong(t.Context()); w != 3 {
		t.Fatalf("three changed elements: %d wrong", w)
	}
	// A broadcast's root starts with its data in place: the periodic fill, in pieces, must
	// already be what the check expects.
	b, err := commbench.NewCase(commbench.Broadcast, dtype.BFloat16, 3_000_017, nil, 0, 2, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := b.Wrong(t.Context()); b.Root != 0 || w != 0 {
		t.Fatalf("broadcast root %d: %d wrong before any call", b.Root, w)
	}
}
