package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/moerun/moerun/cuda"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/cpu"
	"github.com/moerun/moerun/moe/router"
)

// Each GPU op against the CPU device on the same inputs. These run on the GPU host from a
// test binary built here, and skip elsewhere.
func device(t *testing.T) *Ops {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	drv, err := cuda.Load()
	if err != nil {
		t.Skipf("no CUDA driver here: %v", err)
	}
	if n, err := drv.DeviceCount(); err != nil || n == 0 {
		t.Skipf("no GPU here (%d, %v)", n, err)
	}
	dev, err := drv.Device(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.MakeCurrent(); err != nil {
		t.Fatal(err)
	}
	s, err := dev.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(dev, s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close(); s.Destroy() })
	return o
}

type pair struct {
	g, c moe.Tensor
}

func both(t *testing.T, o *Ops, c *cpu.Ops, dt dtype.DType, rows, cols int, v []float32) pair {
	t.Helper()
	g, err := o.Alloc(dt, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := c.Alloc(dt, rows, cols)
	if v != nil {
		if err := o.Upload(g, v); err != nil {
			t.Fatal(err)
		}
		c.Upload(h, v)
	}
	return pair{g, h}
}

func compare(t *testing.T, what string, o *Ops, c *cpu.Ops, p pair, tol float64) {
	t.Helper()
	n := p.g.Rows * p.g.Cols
	gv, cv := make([]float32, n), make([]float32, n)
	if err := o.Download(p.g, gv); err != nil {
		t.Fatal(err)
	}
	c.Download(p.c, cv)
	for i := range gv {
		if d := math.Abs(float64(gv[i] - cv[i])); d > tol*math.Max(1, math.Abs(float64(cv[i]))) || math.IsNaN(float64(gv[i])) {
			t.Fatalf("%s: element %d: GPU %v, CPU %v", what, i, gv[i], cv[i])
		}
	}
}

func TestOpsMatchCPU(t *testing.T) {
	o := device(t)
	c := cpu.New()
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int, s float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * s)
		}
		return v
	}
	for _, dt := range []dtype.DType{dtype.Float32, dtype.BFloat16} {
		// The generator is bit-exact: every split, offset, padding and the bf16 rounding.
		g := &moe.Gen{Seed: 7, A: moe.TensorGate, B: moe.TensorUp, BlockRows: 6, SplitAt: 3, Experts: []int{9, 2, 5},
			RowOffset: 11, ColOffset: 4, ValidRows: 5, ValidCols: 30, Scale: 0.25}
		f := both(t, o, c, dt, 18, 33, nil)
		if err := o.Fill(f.g, g); err != nil {
			t.Fatal(err)
		}
		c.Fill(f.c, g)
		compare(t, "fill "+dt.String(), o, c, f, 0)

		x := both(t, o, c, dt, 37, 64, rnd(37*64, 1))
		w := both(t, o, c, dt, 48, 64, rnd(48*64, 0.125))
		out := both(t, o, c, dt, 37, 48, nil)
		if err := o.Linear(x.g, w.g, out.g); err != nil {
			t.Fatal(err)
		}
		c.Linear(x.c, w.c, out.c)
		compare(t, "linear "+dt.String(), o, c, out, 1e-2)

		logits := both(t, o, c, dtype.Float32, 37, 48, nil)
		if err := o.Logits(x.g, w.g, logits.g); err != nil {
			t.Fatal(err)
		}
		c.Logits(x.c, w.c, logits.c)
		compare(t, "logits "+dt.String(), o, c, logits, 1e-4)

		mw := &moe.MLPWeights{I: 40, H: 64}
		gw13 := both(t, o, c, dt, 80, 64, rnd(80*64, 0.125))
		gw2 := both(t, o, c, dt, 64, 40, rnd(64*40, 0.15))
		y := both(t, o, c, dt, 37, 64, nil)
		for _, act := range []moe.Activation{moe.SiLU, moe.GELU} {
			mw.W13, mw.W2 = gw13.g, gw2.g
			if err := o.MLP(x.g, mw, act, y.g); err != nil {
				t.Fatal(err)
			}
			mc := *mw
			mc.W13, mc.W2 = gw13.c, gw2.c
			c.MLP(x.c, &mc, act, y.c)
			compare(t, "mlp "+act.String()+" "+dt.String(), o, c, y, 3e-2)
		}

		if err := o.Axpby(2.5, out.g, -1, out.g); err != nil {
			t.Fatal(err)
		}
		c.Axpby(2.5, out.c, -1, out.c)
		compare(t, "axpby "+dt.String(), o, c, out, 1e-2)

		wide := both(t, o, c, dt, 37, 80, nil)
		if err := o.CopyCols(wide.g, x.g); err != nil {
			t.Fatal(err)
		}
		c.CopyCols(wide.c, x.c)
		compare(t, "copycols "+dt.String(), o, c, wide, 0)
	}
}

// The routing kernel picks the CPU router's experts, with its weights, for every kind.
func TestRouteMatchesCPU(t *testing.T) {
	o := device(t)
	c := cpu.New()
	r := rand.New(rand.NewPCG(3, 4))
	bias := func(n int) []float32 {
		b := make([]float32, n)
		for i := range b {
			b[i] = float32(r.Float64()*0.2 - 0.1)
		}
		return b
	}
	cases := []router.Config{
		{NumExperts: 8, TopK: 2, Renormalize: true},
		{NumExperts: 128, TopK: 8, Renormalize: true},
		{NumExperts: 64, TopK: 6, Scoring: router.Sigmoid},
		{NumExperts: 60, TopK: 4, Scoring: router.SqrtSoftplus, Bias: bias(60), Renormalize: true, RoutedScalingFactor: 1.5},
		{NumExperts: 256, TopK: 8, Scoring: router.Sigmoid, Renormalize: true, NumExpertGroup: 8, TopKGroup: 4, UseGroupedTopK: true, Bias: bias(256), RoutedScalingFactor: 2.5},
		{NumExperts: 160, TopK: 6, NumExpertGroup: 8, TopKGroup: 3, UseGroupedTopK: true, RoutedScalingFactor: 16},
		{NumExperts: 6, TopK: 2, Scoring: router.Sigmoid, NumExpertGroup: 4, TopKGroup: 2, UseGroupedTopK: true}, // falls back to softmax
		// The warp-per-token softmax kernel: the widest, no renormalisation, and ties.
		{NumExperts: 512, TopK: 32, Renormalize: true},
		{NumExperts: 300, TopK: 5},
		{NumExperts: 64, TopK: 8, Renormalize: true},
	}
	const tokens = 300
	for i, cfg := range cases {
		e, k := cfg.NumExperts, cfg.TopK
		lv := make([]float32, tokens*e)
		for j := range lv {
			lv[j] = float32(r.NormFloat64() * 2)
			if i == len(cases)-1 {
				lv[j] = float32(math.Round(float64(lv[j]))) // many exact ties
			}
		}
		logits := both(t, o, c, dtype.Float32, tokens, e, lv)
		w := both(t, o, c, dtype.Float32, tokens, k, nil)
		ids := both(t, o, c, dtype.Int32, tokens, k, nil)
		if err := o.Route(cfg, logits.g, w.g, ids.g); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if err := c.Route(cfg, logits.c, w.c, ids.c); err != nil {
			t.Fatalf("case %d (cpu): %v", i, err)
		}
		compare(t, fmt.Sprintf("case %d ids", i), o, c, ids, 0)
		compare(t, fmt.Sprintf("case %d weights", i), o, c, w, 1e-6)
	}
}

// expertCase is one Experts call: n rows of top-k over local experts of inter×h (emap:
// the global→local map, nil for all local), the router weight on the input or output.
type expertCase struct {
	n, k, local, inter, h int
	emap                  []int32
	onInput               bool
	dt                    dtype.DType
}

// checkExperts runs one case on the GPU and the CPU with the same random inputs and
// compares the outputs (onlyExperts01: route every slot to global experts 0 and 1).
func checkExperts(t *testing.T, o *Ops, c *cpu.Ops, r *rand.Rand, tc expertCase, onlyExperts01 bool, what string) {
	t.Helper()
	rnd := func(n int, s float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * s)
		}
		return v
	}
	global := tc.local
	if tc.emap != nil {
		global = len(tc.emap)
	}
	x := both(t, o, c, tc.dt, tc.n, tc.h, rnd(tc.n*tc.h, 1))
	wv, idv := make([]float32, tc.n*tc.k), make([]float32, tc.n*tc.k)
	for tk := 0; tk < tc.n; tk++ {
		p := r.Perm(global)
		for j := 0; j < tc.k; j++ {
			wv[tk*tc.k+j], idv[tk*tc.k+j] = float32(r.Float64()), float32(p[j])
		}
	}
	if onlyExperts01 {
		for q := range idv {
			idv[q] = float32(q % 2)
		}
	}
	w := both(t, o, c, dtype.Float32, tc.n, tc.k, wv)
	ids := both(t, o, c, dtype.Int32, tc.n, tc.k, idv)
	w13 := both(t, o, c, tc.dt, tc.local*2*tc.inter, tc.h, rnd(tc.local*2*tc.inter*tc.h, 1/math.Sqrt(float64(tc.h))))
	w2 := both(t, o, c, tc.dt, tc.local*tc.h, tc.inter, rnd(tc.local*tc.h*tc.inter, 1/math.Sqrt(float64(tc.inter))))
	out := both(t, o, c, tc.dt, tc.n, tc.h, nil)
	ew := &moe.ExpertWeights{Local: tc.local, I: tc.inter, H: tc.h, W13: w13.g, W2: w2.g}
	if err := o.Experts(x.g, w.g, ids.g, ew, tc.emap, moe.SiLU, tc.onInput, out.g); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	ec := *ew
	ec.W13, ec.W2 = w13.c, w2.c
	if err := c.Experts(x.c, w.c, ids.c, &ec, tc.emap, moe.SiLU, tc.onInput, out.c); err != nil {
		t.Fatalf("%s (cpu): %v", what, err)
	}
	tol := 1e-4
	if tc.dt == dtype.BFloat16 {
		tol = 3e-2
	}
	compare(t, what, o, c, out, tol)
}

// The grouped experts against the CPU device: maps with experts elsewhere, the router
// weight on the input, both element types, an empty batch.
func TestExpertsMatchCPU(t *testing.T) {
	o := device(t)
	c := cpu.New()
	r := rand.New(rand.NewPCG(5, 6))
	cases := []expertCase{
		{33, 2, 4, 24, 40, nil, false, dtype.Float32},
		{17, 3, 2, 16, 32, []int32{-1, 0, -1, 1, -1}, false, dtype.Float32},
		{40, 2, 8, 64, 96, nil, false, dtype.BFloat16},
		{9, 4, 3, 32, 48, []int32{2, -1, 0, -1, 1, -1}, false, dtype.BFloat16},
		{12, 1, 4, 8, 16, nil, true, dtype.BFloat16},
		{5, 2, 2, 8, 16, []int32{-1, -1, 0, 1}, false, dtype.Float32}, // may route nothing here
		{300, 2, 3, 16, 32, nil, false, dtype.BFloat16},               // experts of several tiles
		{9, 2, 4, 12, 20, nil, false, dtype.BFloat16},                 // widths off 8: scalar element-wise kernels
		{70, 8, 16, 16, 32, []int32{0, -1, 1, 2, -1, 3, 4, 5, 6, 7, -1, 8, 9, 10, 11, 12, 13, -1, 14, 15}, false, dtype.BFloat16},
		// Decode sizes (tiles of 8 rows: the GEMV kernel), K from one lane's piece to many.
		{6, 8, 64, 32, 64, nil, false, dtype.BFloat16},
		{3, 4, 16, 24, 40, []int32{0, -1, 1, 2, -1, 3, 4, 5, 6, 7, -1, 8, 9, 10, 11, 12, 13, -1, 14, 15}, false, dtype.BFloat16},
		{2, 8, 32, 264, 520, nil, false, dtype.BFloat16},
	}
	for _, tc := range cases[len(cases)-3:] {
		if p := planTiles(tc.n, tc.k, tc.local); !useGEMV(p, tc.dt, 2*tc.inter, tc.h) {
			t.Fatalf("case %+v: plan %+v does not take the GEMV kernel", tc, p)
		}
	}
	defer func() { expertMode = 0 }()
	for m := range 3 * len(cases) {
		i, tc := m%len(cases), cases[m%len(cases)]
		expertMode = m / len(cases) // every case under each plan: by size, decode, exact
		checkExperts(t, o, c, r, tc, i == 5, fmt.Sprintf("experts case %d mode %d", i, expertMode))
	}
}

// Each expert GEMM kernel (and each variant of the tensor-core one) on shapes the
// tensor-core kernel takes, under both plans: few and many rows per expert, more rows than
// one pass (64), one K chunk, experts elsewhere and experts with no rows.
func TestExpertGEMMKernels(t *testing.T) {
	o := device(t)
	c := cpu.New()
	r := rand.New(rand.NewPCG(9, 10))
	cases := []expertCase{
		{6, 8, 64, 64, 128, nil, false, dtype.BFloat16},
		{40, 4, 4, 128, 256, nil, false, dtype.BFloat16},
		{150, 2, 2, 128, 128, nil, false, dtype.BFloat16},
		{3, 2, 8, 640, 384, nil, false, dtype.BFloat16},
		{20, 1, 3, 64, 64, nil, true, dtype.BFloat16},
		{70, 8, 16, 128, 256, []int32{0, -1, 1, 2, -1, 3, 4, 5, 6, 7, -1, 8, 9, 10, 11, 12, 13, -1, 14, 15}, false, dtype.BFloat16},
	}
	chosen := o.mma
	defer func() { expertMode, forceGEMM, o.mma = 0, "", chosen }()
	kinds := []string{"gemv", "cublas"}
	for v := range mmaKernels {
		kinds = append(kinds, "mma"+v)
	}
	for _, kind := range kinds {
		forceGEMM, o.mma = kind, chosen
		if v, ok := strings.CutPrefix(kind, "mma"); ok {
			forceGEMM, o.mma = "mma", mmaKernels[v]
		}
		for mode := 1; mode <= 2; mode++ {
			expertMode = mode
			for i, tc := range cases {
				shapes := [2][2]int{{2 * tc.inter, tc.h}, {tc.h, tc.inter}}
				if forceGEMM == "mma" {
					if tc.h%o.mma.kMultiple != 0 || tc.inter%o.mma.kMultiple != 0 {
						continue // not this variant's shapes
					}
					if got := o.chooseGEMM(planTiles(tc.n, tc.k, tc.local), tc.dt, shapes, 1<<20, tc.local, nil); got != gemmMMA {
						t.Fatalf("%s case %d: MOERUN_EXPERT_GEMM=mma chose %d", kind, i, got)
					}
				}
				checkExperts(t, o, c, r, tc, false, fmt.Sprintf("%s case %d mode %d", kind, i, mode))
			}
		}
	}
}

// The decode path replays from a CUDA graph: routing and experts captured once, then
// replayed on new tokens and logits that pick other experts, each replay matching the CPU.
// This holds only because nothing in the path reads counts back to the host.
func TestDecodeGraphReplay(t *testing.T) {
	o := device(t)
	if !o.dev.Driver().Graphs() {
		t.Skip("driver without CUDA graphs")
	}
	c := cpu.New()
	r := rand.New(rand.NewPCG(7, 8))
	rnd := func(n int, s float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * s)
		}
		return v
	}
	const n, experts, local, inter, h = 6, 64, 32, 128, 128 // the tensor-core kernel's shapes
	cfg := router.Config{NumExperts: experts, TopK: 8, Renormalize: true}
	emap := make([]int32, experts)
	for e := range emap {
		emap[e] = -1
		if e%2 == 1 {
			emap[e] = int32(e / 2)
		}
	}
	if p := planTiles(n, cfg.TopK, local); p.Exact || o.chooseGEMM(p, dtype.BFloat16, [2][2]int{{2 * inter, h}, {h, inter}}, n*cfg.TopK/experts+1, local, nil) != gemmMMA {
		t.Fatalf("plan %+v: the test wants the decode plan and the tensor-core kernel", p)
	}
	x := both(t, o, c, dtype.BFloat16, n, h, nil)
	logits := both(t, o, c, dtype.Float32, n, experts, nil)
	w := both(t, o, c, dtype.Float32, n, cfg.TopK, nil)
	ids := both(t, o, c, dtype.Int32, n, cfg.TopK, nil)
	w13 := both(t, o, c, dtype.BFloat16, local*2*inter, h, rnd(local*2*inter*h, 1/math.Sqrt(h)))
	w2 := both(t, o, c, dtype.BFloat16, local*h, inter, rnd(local*h*inter, 1/math.Sqrt(inter)))
	out := both(t, o, c, dtype.BFloat16, n, h, nil)
	ew := &moe.ExpertWeights{Local: local, I: inter, H: h, W13: w13.g, W2: w2.g}
	ec := *ew
	ec.W13, ec.W2 = w13.c, w2.c
	forward := func() error {
		if err := o.Route(cfg, logits.g, w.g, ids.g); err != nil {
			return err
		}
		return o.Experts(x.g, w.g, ids.g, ew, emap, moe.SiLU, false, out.g)
	}
	if err := forward(); err != nil { // sizes the scratch and uploads the constants
		t.Fatal(err)
	}
	g, err := o.stream.Capture(forward)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Destroy()
	for trial := range 3 {
		xv, lv := rnd(n*h, 1), rnd(n*experts, 3)
		for _, p := range []struct {
			t pair
			v []float32
		}{{x, xv}, {logits, lv}} {
			if err := o.Upload(p.t.g, p.v); err != nil {
				t.Fatal(err)
			}
			if err := c.Upload(p.t.c, p.v); err != nil {
				t.Fatal(err)
			}
		}
		if err := g.Launch(o.stream); err != nil {
			t.Fatal(err)
		}
		if err := c.Route(cfg, logits.c, w.c, ids.c); err != nil {
			t.Fatal(err)
		}
		if err := c.Experts(x.c, w.c, ids.c, &ec, emap, moe.SiLU, false, out.c); err != nil {
			t.Fatal(err)
		}
		compare(t, fmt.Sprintf("replay %d ids", trial), o, c, ids, 0)
		compare(t, fmt.Sprintf("replay %d output", trial), o, c, out, 3e-2)
	}
}

// Work queued beside the main stream starts after the main stream's earlier work and ends
// before the main stream's work after Await: a large fill on the main stream, copied
// beside it, scaled on the main stream after the await, equals the CPU's. The grouped
// experts run beside it match the CPU under every plan (cuBLAS follows the stream), and
// Beside does not nest.
func TestBeside(t *testing.T) {
	o := device(t)
	c := cpu.New()
	const rows, cols = 8192, 4096 // 32 M float32: the fill takes long enough to race
	src := both(t, o, c, dtype.Float32, rows, cols, nil)
	dst := both(t, o, c, dtype.Float32, rows, cols, nil)
	g := moe.XGen(3, 0, rows, rows)
	if err := o.Fill(src.g, g); err != nil {
		t.Fatal(err)
	}
	c.Fill(src.c, moe.XGen(3, 0, rows, rows))
	done, err := o.Beside(func() error { return o.Copy(dst.g, src.g) })
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Await(done); err != nil {
		t.Fatal(err)
	}
	if err := o.Axpby(2, dst.g, 0, src.g); err != nil {
		t.Fatal(err)
	}
	c.Copy(dst.c, src.c)
	c.Axpby(2, dst.c, 0, src.c)
	compare(t, "fill, copy beside, scale", o, c, dst, 0)

	r := rand.New(rand.NewPCG(7, 8))
	defer func() { expertMode = 0 }()
	for mode := range 3 {
		expertMode = mode
		tc := expertCase{300, 2, 3, 16, 32, nil, false, dtype.BFloat16}
		m, err := o.Beside(func() error {
			checkExperts(t, o, c, r, tc, false, fmt.Sprintf("experts beside, mode %d", mode))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Await(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.Beside(func() error {
		_, err := o.Beside(func() error { return nil })
		if err == nil {
			t.Error("Beside inside Beside was accepted")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := o.Await("not a mark"); err == nil {
		t.Error("Await of a non-mark was accepted")
	}
}
