package cpu

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/router"
)

const (
	f32t = dtype.Float32
	bf16 = dtype.BFloat16
	i32t = dtype.Int32
)

func tensor(t testing.TB, o *Ops, dt dtype.DType, rows, cols int, v []float32) moe.Tensor {
	t.Helper()
	x, err := o.Alloc(dt, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	if v != nil {
		if err := o.Upload(x, v); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

func values(t testing.TB, o *Ops, x moe.Tensor) []float32 {
	t.Helper()
	v := make([]float32, x.Rows*x.Cols)
	if err := o.Download(x, v); err != nil {
		t.Fatal(err)
	}
	return v
}

// rnd rounds v to what dt holds.
func rnd(dt dtype.DType, v float64) float64 {
	f := float32(v)
	if dt == bf16 {
		f = dtype.FromFloat32(f).Float32()
	}
	return float64(f)
}

// random returns n normal values of standard deviation scale, rounded to dt.
func random(r *rand.Rand, n int, scale float64, dt dtype.DType) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rnd(dt, r.NormFloat64()*scale))
	}
	return v
}

func wide(v []float32) []float64 {
	w := make([]float64, len(v))
	for i, x := range v {
		w[i] = float64(x)
	}
	return w
}

// matNT is the naive c [n, m] = a [n, k] · bᵀ (b [m, k]) in float64, and its envelope
// Σ|a||b| (what bounds a float32 accumulation error).
func matNT(a []float64, n, k int, b []float64, m int) (c, env []float64) {
	c, env = make([]float64, n*m), make([]float64, n*m)
	for i := range n {
		for j := range m {
			for q := range k {
				p := a[i*k+q] * b[j*k+q]
				c[i*m+j] += p
				env[i*m+j] += math.Abs(p)
			}
		}
	}
	return c, env
}

func naiveAct(u float64, act moe.Activation) float64 {
	if act == moe.GELU {
		return 0.5 * u * (1 + math.Erf(u/math.Sqrt2))
	}
	return u / (1 + math.Exp(-u))
}

// naiveMLP is the gated MLP on x [n, hd] in float64, rounded to dt where the kernel rounds
// (h, the gated activation, y); env is the envelope of the last GEMM.
func naiveMLP(x []float64, n, hd int, w13, w2 []float64, i int, act moe.Activation, dt dtype.DType) (y, env []float64) {
	h, _ := matNT(x, n, hd, w13, 2*i)
	for q := range h {
		h[q] = rnd(dt, h[q])
	}
	a := make([]float64, n*i)
	for t := range n {
		for j := range i {
			a[t*i+j] = rnd(dt, naiveAct(h[t*2*i+j], act)*h[t*2*i+i+j])
		}
	}
	y, env = matNT(a, n, i, w2, hd)
	for q := range y {
		y[q] = rnd(dt, y[q])
	}
	return y, env
}

// compare checks got against the naive want: within (k+1)·2⁻²⁴ of the envelope (a float32
// accumulation of k terms) plus, for a bf16 result, half an ulp of want.
func compare(t *testing.T, name string, got []float32, want, env []float64, k int, dt dtype.DType) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for q := range got {
		tol := float64(k+1) * 0x1p-24 * env[q]
		if dt == bf16 {
			tol = tol*(1+0x1p-8) + 0x1p-8*math.Abs(want[q])
		}
		if d := math.Abs(float64(got[q]) - want[q]); d > tol {
			t.Fatalf("%s: element %d = %v, want %v (diff %.3g > %.3g)", name, q, got[q], want[q], d, tol)
		}
	}
}

func TestAllocZeroCopy(t *testing.T) {
	o := New()
	for _, dt := range []dtype.DType{f32t, bf16, i32t} {
		for _, sh := range [][2]int{{0, 3}, {1, 1}, {3, 0}, {4, 5}} {
			x := tensor(t, o, dt, sh[0], sh[1], nil)
			if x.DType() != dt || x.Rows != sh[0] || x.Cols != sh[1] || x.Buf.OnDevice() {
				t.Fatalf("Alloc(%v, %d, %d) = %v", dt, sh[0], sh[1], x)
			}
			r := rand.New(rand.NewPCG(uint64(dt), uint64(sh[0])))
			v := random(r, sh[0]*sh[1], 10, bf16)
			for q := range v {
				v[q] = float32(math.Round(float64(v[q])))
			}
			if err := o.Upload(x, v); err != nil {
				t.Fatal(err)
			}
			y := tensor(t, o, dt, sh[0], sh[1], nil)
			if err := o.Copy(y, x); err != nil {
				t.Fatal(err)
			}
			if err := o.Zero(x); err != nil {
				t.Fatal(err)
			}
			for q, g := range values(t, o, y) {
				if g != v[q] {
					t.Fatalf("%v %v: copy element %d = %v, want %v", dt, sh, q, g, v[q])
				}
			}
			for q, g := range values(t, o, x) {
				if g != 0 {
					t.Fatalf("%v %v: zeroed element %d = %v", dt, sh, q, g)
				}
			}
			o.Free(x)
		}
	}
	if o.Name() != "cpu" || o.Sync() != nil {
		t.Errorf("Name() = %q, Sync() = %v", o.Name(), o.Sync())
	}
}

// Upload rounds to the dtype (bf16 to nearest even, int32 to the nearest integer, ties to
// even); Download widens exactly.
func TestUploadDownload(t *testing.T) {
	o := New()
	in := []float32{1, -2.5, 0.5, 1.5, 3.00390625, 1e30, -7.75, 0}
	for _, tc := range []struct {
		dt   dtype.DType
		want func(float32) float32
	}{
		{f32t, func(v float32) float32 { return v }},
		{bf16, func(v float32) float32 { return dtype.FromFloat32(v).Float32() }},
	} {
		x := tensor(t, o, tc.dt, 2, 4, in)
		for q, g := range values(t, o, x) {
			if w := tc.want(in[q]); g != w {
				t.Errorf("%v: element %d = %v, want %v", tc.dt, q, g, w)
			}
		}
	}
	ids := tensor(t, o, i32t, 1, 6, []float32{-2.5, -1.5, 0.5, 1.5, 2.4, 1 << 24})
	if got, want := fmt.Sprint(values(t, o, ids)), "[-2 -2 0 2 2 1.6777216e+07]"; got != want {
		t.Errorf("int32 upload = %s, want %s", got, want)
	}
}

// Fill reproduces moe.Value through every field of Gen: expert blocks, the A/B split,
// row and column offsets, and padding rows and columns.
func TestFill(t *testing.T) {
	o := New()
	const blk, split, validRows, validCols, rowOff, colOff, cols = 5, 2, 4, 6, 3, 7, 8
	experts := []int{5, 1, 3}
	g := &moe.Gen{Seed: 11, A: moe.TensorGate, B: moe.TensorUp, BlockRows: blk, SplitAt: split, Experts: experts,
		RowOffset: rowOff, ColOffset: colOff, ValidRows: validRows, ValidCols: validCols, Scale: 0.37}
	for _, dt := range []dtype.DType{f32t, bf16} {
		x := tensor(t, o, dt, blk*len(experts), cols, nil)
		if err := o.Fill(x, g); err != nil {
			t.Fatal(err)
		}
		v := values(t, o, x)
		for r := range x.Rows {
			for c := range cols {
				b, j := r/blk, r%blk
				want := float32(0)
				if j < validRows && c < validCols {
					id := moe.TensorGate
					if j >= split {
						id, j = moe.TensorUp, j-split
					}
					want = moe.Value(11, id, experts[b], j+rowOff, c+colOff, 0.37, dt)
				}
				if got := v[r*cols+c]; got != want {
					t.Fatalf("%v: (%d, %d) = %v, want %v", dt, r, c, got, want)
				}
			}
		}
	}
	// A plain Gen without blocks: element (r, c) of expert 0, rounded to an int32.
	plain := &moe.Gen{Seed: 2, A: moe.TensorX, Scale: 100}
	ids := tensor(t, o, i32t, 3, 4, nil)
	if err := o.Fill(ids, plain); err != nil {
		t.Fatal(err)
	}
	for q, got := range values(t, o, ids) {
		if want := math.RoundToEven(float64(moe.Uniform(2, moe.TensorX, 0, q/4, q%4) * 100)); float64(got) != want {
			t.Fatalf("int32 fill %d = %v, want %v", q, got, want)
		}
	}
}

func TestCopyCols(t *testing.T) {
	o := New()
	r := rand.New(rand.NewPCG(3, 3))
	for _, dt := range []dtype.DType{f32t, bf16, i32t} {
		for _, tc := range []struct{ rows, src, dst int }{{0, 3, 5}, {1, 4, 4}, {3, 6, 9}, {5, 7, 2}, {2, 3, 0}} {
			v := random(r, tc.rows*tc.src, 4, bf16)
			for q := range v {
				v[q] = float32(math.Round(float64(v[q])))
			}
			src := tensor(t, o, dt, tc.rows, tc.src, v)
			dst := tensor(t, o, dt, tc.rows, tc.dst, random(r, tc.rows*tc.dst, 1, bf16)) // stale values
			if err := o.CopyCols(dst, src); err != nil {
				t.Fatal(err)
			}
			got := values(t, o, dst)
			for a := range tc.rows {
				for c := range tc.dst {
					want := float32(0)
					if c < tc.src {
						want = v[a*tc.src+c]
					}
					if got[a*tc.dst+c] != want {
						t.Fatalf("%v %+v: (%d, %d) = %v, want %v", dt, tc, a, c, got[a*tc.dst+c], want)
					}
				}
			}
		}
	}
}

// Linear and Logits against a float64 triple loop: float32 accumulation, one rounding to
// out's dtype.
func TestLinearLogits(t *testing.T) {
	o := New()
	r := rand.New(rand.NewPCG(5, 5))
	shapes := [][3]int{{0, 3, 4}, {1, 1, 1}, {1, 7, 5}, {5, 6, 3}, {33, 65, 17}, {4, 0, 3}, {130, 257, 67}}
	for _, sh := range shapes {
		n, k, m := sh[0], sh[1], sh[2]
		for _, dts := range [][3]dtype.DType{{f32t, f32t, f32t}, {bf16, bf16, bf16}, {bf16, f32t, f32t}, {f32t, bf16, bf16}} {
			xv, wv := random(r, n*k, 1, dts[0]), random(r, m*k, 1, dts[1])
			x, w := tensor(t, o, dts[0], n, k, xv), tensor(t, o, dts[1], m, k, wv)
			want, env := matNT(wide(xv), n, k, wide(wv), m)
			name := fmt.Sprintf("%d×%d·(%d×%d)ᵀ %v", n, k, m, k, dts)

			out := tensor(t, o, dts[2], n, m, random(r, n*m, 1, dts[2])) // stale values
			if err := o.Linear(x, w, out); err != nil {
				t.Fatal(err)
			}
			compare(t, "Linear "+name, values(t, o, out), want, env, k, dts[2])

			logits := tensor(t, o, f32t, n, m, nil)
			if err := o.Logits(x, w, logits); err != nil {
				t.Fatal(err)
			}
			compare(t, "Logits "+name, values(t, o, logits), want, env, k, f32t)
		}
	}
}

// Route is router.Route[float32], bit for bit, and passes its config errors on.
func TestRoute(t *testing.T) {
	o := New()
	r := rand.New(rand.NewPCG(9, 9))
	bias := random(r, 8, 0.5, f32t)
	cfgs := []router.Config{
		{NumExperts: 8, TopK: 2, Renormalize: true},
		{NumExperts: 8, TopK: 1},
		{NumExperts: 8, TopK: 3, Scoring: router.Sigmoid, Bias: bias, RoutedScalingFactor: 2.5},
		{NumExperts: 8, TopK: 3, Scoring: router.Sigmoid, Renormalize: true, UseGroupedTopK: true, NumExpertGroup: 4, TopKGroup: 2, Bias: bias, RoutedScalingFactor: 1.5},
		{NumExperts: 8, TopK: 4, Scoring: router.SqrtSoftplus, Renormalize: true, Bias: bias},
	}
	for ci, cfg := range cfgs {
		for _, n := range []int{0, 1, 7, 64} {
			lv := random(r, n*8, 2, f32t)
			logits := tensor(t, o, f32t, n, 8, lv)
			w, ids := tensor(t, o, f32t, n, cfg.TopK, nil), tensor(t, o, i32t, n, cfg.TopK, nil)
			if err := o.Route(cfg, logits, w, ids); err != nil {
				t.Fatal(err)
			}
			ww, wi := make([]float32, n*cfg.TopK), make([]int32, n*cfg.TopK)
			if err := router.Route(cfg, lv, ww, wi); err != nil {
				t.Fatal(err)
			}
			gw, gi := w.Buf.Float32s(), ids.Buf.Int32s()
			for q := range ww {
				if math.Float32bits(gw[q]) != math.Float32bits(ww[q]) || gi[q] != wi[q] {
					t.Fatalf("config %d, %d rows: slot %d = (%v, %d), router.Route (%v, %d)", ci, n, q, gw[q], gi[q], ww[q], wi[q])
				}
			}
		}
	}
	bad := router.Config{NumExperts: 8, TopK: 9}
	err := o.Route(bad, tensor(t, o, f32t, 1, 8, nil), tensor(t, o, f32t, 1, 9, nil), tensor(t, o, i32t, 1, 9, nil))
	if !errors.Is(err, router.ErrConfig) {
		t.Errorf("Route with top-k 9 of 8: %v, want router.ErrConfig", err)
	}
}

// Axpby computes in float32 and rounds once to dst's dtype, also in place (dst == src).
func TestAxpby(t *testing.T) {
	o := New()
	r := rand.New(rand.NewPCG(6, 6))
	for _, tc := range []struct {
		n, m    int
		dst     dtype.DType
		src     dtype.DType
		a, b    float32
		aliased bool
	}{
		{0, 4, f32t, f32t, 2, 1, false},
		{1, 1, bf16, bf16, 1, 1, false},
		{5, 7, bf16, f32t, 0.3, -1.7, false},
		{6, 3, f32t, bf16, -1, 0.5, false},
		{4, 9, bf16, bf16, 1.25, 0, true},
		{3, 5, f32t, f32t, 0.1, 0.7, true},
	} {
		dv, sv := random(r, tc.n*tc.m, 1, tc.dst), random(r, tc.n*tc.m, 1, tc.src)
		dst := tensor(t, o, tc.dst, tc.n, tc.m, dv)
		src := tensor(t, o, tc.src, tc.n, tc.m, sv)
		if tc.aliased {
			src, sv = dst, dv
		}
		if err := o.Axpby(tc.a, dst, tc.b, src); err != nil {
			t.Fatal(err)
		}
		for q, got := range values(t, o, dst) {
			want := float32(rnd(tc.dst, float64(float32(tc.a*dv[q])+float32(tc.b*sv[q]))))
			if got != want {
				t.Fatalf("%+v: element %d = %v, want %v", tc, q, got, want)
			}
		}
	}
}

func TestMLP(t *testing.T) {
	o := New()
	r := rand.New(rand.NewPCG(7, 7))
	for _, tc := range []struct {
		n, i, h int
		dt      dtype.DType
		act     moe.Activation
	}{
		{0, 4, 8, f32t, moe.SiLU},
		{1, 1, 1, f32t, moe.GELU},
		{1, 5, 7, bf16, moe.SiLU},
		{13, 24, 40, f32t, moe.SiLU},
		{29, 33, 17, bf16, moe.GELU},
		{64, 96, 128, bf16, moe.SiLU},
	} {
		xv := random(r, tc.n*tc.h, 1, tc.dt)
		w13v := random(r, 2*tc.i*tc.h, 1/math.Sqrt(float64(tc.h)), tc.dt)
		w2v := random(r, tc.h*tc.i, 1/math.Sqrt(float64(tc.i)), tc.dt)
		w := &moe.MLPWeights{I: tc.i, H: tc.h, W13: tensor(t, o, tc.dt, 2*tc.i, tc.h, w13v), W2: tensor(t, o, tc.dt, tc.h, tc.i, w2v)}
		out := tensor(t, o, tc.dt, tc.n, tc.h, random(r, tc.n*tc.h, 1, tc.dt))
		if err := o.MLP(tensor(t, o, tc.dt, tc.n, tc.h, xv), w, tc.act, out); err != nil {
			t.Fatal(err)
		}
		want, env := naiveMLP(wide(xv), tc.n, tc.h, wide(w13v), wide(w2v), tc.i, tc.act, tc.dt)
		checkMirror(t, fmt.Sprintf("MLP %+v", tc), values(t, o, out), want, env, tc.dt)
	}
}

// checkMirror compares a gated-MLP result with the naive one that rounds at the same
// points. In float32 the only difference is the accumulation order. In bf16 a float32
// accumulation can land an intermediate on the other side of a bf16 rounding boundary,
// which moves the result by up to a few bf16 ulps of the envelope, but rarely: most
// elements must be identical (a missed or extra rounding step makes most of them differ).
func checkMirror(t *testing.T, name string, got []float32, want, env []float64, dt dtype.DType) {
	t.Helper()
	same := 0
	for q := range got {
		tol := 1e-5 * env[q]
		if dt == bf16 {
			tol = 0x1p-6 * env[q]
		}
		if d := math.Abs(float64(got[q]) - want[q]); d > tol {
			t.Fatalf("%s: element %d = %v, want %v (diff %.3g > %.3g)", name, q, got[q], want[q], d, tol)
		}
		if float64(got[q]) == want[q] {
			same++
		}
	}
	if dt == bf16 && same < len(got)*95/100 {
		t.Errorf("%s: only %d of %d elements equal the bf16 mirror", name, same, len(got))
	}
}

type expertCase struct {
	n, k, local, i, h int
	dt                dtype.DType
	act               moe.Activation
	emap              []int32
	onInput           bool
}

// expertData is one random Experts problem: inputs, routing, and the local weights.
type expertData struct {
	x, wt, ids, w13, w2 []float32
}

func (c expertCase) global() int {
	if c.emap != nil {
		return len(c.emap)
	}
	return c.local
}

func newExpertData(r *rand.Rand, c expertCase) expertData {
	d := expertData{
		x:   random(r, c.n*c.h, 1, c.dt),
		w13: random(r, c.local*2*c.i*c.h, 1/math.Sqrt(float64(c.h)), c.dt),
		w2:  random(r, c.local*c.h*c.i, 1/math.Sqrt(float64(c.i)), c.dt),
		wt:  make([]float32, c.n*c.k),
		ids: make([]float32, c.n*c.k),
	}
	for tk := range c.n {
		perm := r.Perm(c.global())
		for j := range c.k {
			d.wt[tk*c.k+j] = float32(0.1 + r.Float64())
			d.ids[tk*c.k+j] = float32(perm[j])
		}
	}
	return d
}

func runExperts(t testing.TB, o *Ops, c expertCase, d expertData) []float32 {
	t.Helper()
	x := tensor(t, o, c.dt, c.n, c.h, d.x)
	w := tensor(t, o, f32t, c.n, c.k, d.wt)
	ids := tensor(t, o, i32t, c.n, c.k, d.ids)
	ew := &moe.ExpertWeights{Local: c.local, I: c.i, H: c.h,
		W13: tensor(t, o, c.dt, c.local*2*c.i, c.h, d.w13), W2: tensor(t, o, c.dt, c.local*c.h, c.i, d.w2)}
	out := tensor(t, o, c.dt, c.n, c.h, random(rand.New(rand.NewPCG(0, 0)), c.n*c.h, 1, c.dt)) // stale values
	if err := o.Experts(x, w, ids, ew, c.emap, c.act, c.onInput, out); err != nil {
		t.Fatal(err)
	}
	return values(t, o, out)
}

// naiveExperts is §3.2 token by token in float64, rounding where the kernel rounds.
func naiveExperts(c expertCase, d expertData) (want, env []float64) {
	want, env = make([]float64, c.n*c.h), make([]float64, c.n*c.h)
	for tk := range c.n {
		for j := range c.k {
			e := int(d.ids[tk*c.k+j])
			l := e
			if c.emap != nil {
				l = int(c.emap[e])
			}
			if l < 0 {
				continue
			}
			xin := wide(d.x[tk*c.h : (tk+1)*c.h])
			wt := float64(d.wt[tk*c.k+j])
			if c.onInput {
				for q := range xin {
					xin[q] = rnd(c.dt, xin[q]*wt)
				}
				wt = 1
			}
			y, ye := naiveMLP(xin, 1, c.h, wide(d.w13[l*2*c.i*c.h:(l+1)*2*c.i*c.h]), wide(d.w2[l*c.h*c.i:(l+1)*c.h*c.i]), c.i, c.act, c.dt)
			for q := range y {
				want[tk*c.h+q] += wt * y[q]
				env[tk*c.h+q] += wt * ye[q]
			}
		}
	}
	for q := range want {
		want[q] = rnd(c.dt, want[q])
	}
	return want, env
}

// §3.2 and §9 oracle 5: the experts against a token-by-token float64 loop. Zero and one
// row, odd sizes, both activations and dtypes, expert maps with -1 slots, the weight on
// the input. One Ops runs every case, so stale scratch would show.
func TestExperts_Section3_2(t *testing.T) {
	o := New()
	cases := []expertCase{
		{n: 0, k: 2, local: 4, i: 8, h: 16, dt: f32t},
		{n: 0, k: 1, local: 2, i: 3, h: 5, dt: bf16, onInput: true},
		{n: 1, k: 1, local: 3, i: 5, h: 7, dt: f32t},
		{n: 1, k: 2, local: 2, i: 1, h: 1, dt: bf16, act: moe.GELU},
		{n: 33, k: 2, local: 4, i: 24, h: 40, dt: f32t, act: moe.GELU},
		{n: 17, k: 3, local: 2, i: 16, h: 32, dt: f32t, emap: []int32{-1, 0, -1, 1, -1}},
		{n: 40, k: 2, local: 8, i: 64, h: 96, dt: bf16},
		{n: 9, k: 4, local: 3, i: 32, h: 48, dt: bf16, emap: []int32{2, -1, 0, -1, 1, -1}, act: moe.GELU},
		{n: 21, k: 1, local: 5, i: 19, h: 23, dt: f32t, onInput: true},
		{n: 31, k: 1, local: 4, i: 40, h: 56, dt: bf16, onInput: true, emap: []int32{3, -1, 1, 0, -1, 2}},
		{n: 70, k: 6, local: 16, i: 48, h: 64, dt: bf16, act: moe.SiLU},
		{n: 5, k: 2, local: 0, i: 4, h: 8, dt: f32t, emap: []int32{-1, -1, -1}},
	}
	for ci, c := range cases {
		d := newExpertData(rand.New(rand.NewPCG(uint64(ci), 1)), c)
		got := runExperts(t, o, c, d)
		want, env := naiveExperts(c, d)
		checkMirror(t, fmt.Sprintf("case %d %+v", ci, c), got, want, env, c.dt)
	}
}

// §9 oracle 8: with an expert map, -1 slots add nothing, so the result equals running
// every expert locally with the weights of the other slots set to 0, bit for bit.
func TestExpertMap_Section9_8(t *testing.T) {
	o := New()
	const global = 7
	emap := []int32{-1, 2, -1, 0, -1, -1, 1} // local 0, 1, 2 = global 3, 6, 1
	owned := []int{3, 6, 1}
	for _, dt := range []dtype.DType{f32t, bf16} {
		for _, onInput := range []bool{false, true} {
			k := 3
			if onInput {
				k = 1
			}
			all := expertCase{n: 37, k: k, local: global, i: 20, h: 24, dt: dt, onInput: onInput}
			r := rand.New(rand.NewPCG(8, uint64(dt)))
			d := newExpertData(r, all)
			part := all
			part.local, part.emap = len(owned), emap
			pd := d
			pd.w13, pd.w2 = nil, nil
			for _, g := range owned {
				pd.w13 = append(pd.w13, d.w13[g*2*all.i*all.h:(g+1)*2*all.i*all.h]...)
				pd.w2 = append(pd.w2, d.w2[g*all.h*all.i:(g+1)*all.h*all.i]...)
			}
			masked := d
			masked.wt = append([]float32(nil), d.wt...)
			for s, id := range d.ids {
				if emap[int(id)] < 0 {
					masked.wt[s] = 0
				}
			}
			got := runExperts(t, o, part, pd)
			want := runExperts(t, o, all, masked)
			if onInput { // a zero weight on the input still runs the expert: mask the output instead
				for tk := range all.n {
					if emap[int(d.ids[tk])] < 0 {
						clear(want[tk*all.h : (tk+1)*all.h])
					}
				}
			}
			for q := range got {
				if math.Float32bits(got[q]) != math.Float32bits(want[q]) {
					t.Fatalf("%v onInput=%v: element %d = %v, only local experts give %v", dt, onInput, q, got[q], want[q])
				}
			}
		}
	}
}

// §9 oracle 6: the activation applies to the first half of W13 (gate), so swapping the
// halves changes the output, in Experts and in MLP.
func TestGateUpOrder_Section9_6(t *testing.T) {
	o := New()
	c := expertCase{n: 16, k: 2, local: 3, i: 8, h: 16, dt: bf16}
	d := newExpertData(rand.New(rand.NewPCG(1, 2)), c)
	swapped := d
	swapped.w13 = nil
	for l := range c.local {
		blk := d.w13[l*2*c.i*c.h : (l+1)*2*c.i*c.h]
		swapped.w13 = append(append(swapped.w13, blk[c.i*c.h:]...), blk[:c.i*c.h]...)
	}
	differ := func(name string, a, b []float32) {
		n := 0
		for q := range a {
			if math.Abs(float64(a[q]-b[q])) > 1e-2 {
				n++
			}
		}
		if n < len(a)/2 {
			t.Errorf("%s: swapping gate and up changed only %d of %d outputs", name, n, len(a))
		}
	}
	differ("Experts", runExperts(t, o, c, d), runExperts(t, o, c, swapped))

	mlp := func(w13 []float32) []float32 {
		out := tensor(t, o, c.dt, c.n, c.h, nil)
		w := &moe.MLPWeights{I: c.i, H: c.h, W13: tensor(t, o, c.dt, 2*c.i, c.h, w13[:2*c.i*c.h]), W2: tensor(t, o, c.dt, c.h, c.i, d.w2[:c.h*c.i])}
		if err := o.MLP(tensor(t, o, c.dt, c.n, c.h, d.x), w, moe.SiLU, out); err != nil {
			t.Fatal(err)
		}
		return values(t, o, out)
	}
	differ("MLP", mlp(d.w13), mlp(swapped.w13))
}

// §9 oracle 7: with the router weight on the input (top-k 1), x is scaled before GEMM1 and
// the output is not weighted. A gated expert is not linear, so that differs from weighting
// the output unless every weight is 1; top-k 2 is refused.
func TestWeightOnInput_Section9_7(t *testing.T) {
	o := New()
	for _, dt := range []dtype.DType{f32t, bf16} {
		c := expertCase{n: 24, k: 1, local: 4, i: 12, h: 20, dt: dt, onInput: true}
		d := newExpertData(rand.New(rand.NewPCG(3, uint64(dt))), c)
		for q := range d.wt {
			d.wt[q] = 0.25 + 0.25*float32(q%2) // powers of 2: scaling the input rounds nothing
		}
		onIn := runExperts(t, o, c, d)
		want, env := naiveExperts(c, d)
		checkMirror(t, fmt.Sprintf("%v on input", dt), onIn, want, env, dt)

		c.onInput = false
		onOut := runExperts(t, o, c, d)
		n := 0
		for q := range onIn {
			if math.Abs(float64(onIn[q]-onOut[q])) > 1e-2*env[q]+1e-6 {
				n++
			}
		}
		if n < len(onIn)/2 {
			t.Errorf("%v: the weight on the input equals the weight on the output for %d of %d elements", dt, len(onIn)-n, len(onIn))
		}
		for q := range d.wt {
			d.wt[q] = 1
		}
		c.onInput = true
		a := runExperts(t, o, c, d)
		c.onInput = false
		b := runExperts(t, o, c, d)
		for q := range a {
			if a[q] != b[q] {
				t.Fatalf("%v, weights 1: on input %v, on output %v", dt, a[q], b[q])
			}
		}
	}
	x := tensor(t, o, f32t, 1, 4, nil)
	w := tensor(t, o, f32t, 1, 2, nil)
	ids := tensor(t, o, i32t, 1, 2, nil)
	ew := &moe.ExpertWeights{Local: 2, I: 2, H: 4, W13: tensor(t, o, f32t, 8, 4, nil), W2: tensor(t, o, f32t, 8, 2, nil)}
	err := o.Experts(x, w, ids, ew, nil, moe.SiLU, true, tensor(t, o, f32t, 1, 4, nil))
	if !errors.Is(err, ErrMismatch) {
		t.Errorf("router weight on the input with top-k 2: %v, want ErrMismatch", err)
	}
}

// §9 oracles 9 and 10: experts split over EP ranks (maps with -1 elsewhere) or their
// intermediate dimension split over TP ranks (gate and up sliced separately) add up to
// the unsharded result.
func TestShardInvariance_Section9_9_10(t *testing.T) {
	o := New()
	const e = 8
	c := expertCase{n: 20, k: 2, local: e, i: 12, h: 16, dt: f32t}
	d := newExpertData(rand.New(rand.NewPCG(4, 5)), c)
	full := runExperts(t, o, c, d)
	check := func(name string, sum []float32) {
		for q := range full {
			if math.Abs(float64(sum[q]-full[q])) > 1e-5 {
				t.Fatalf("%s: element %d: %v, unsharded %v", name, q, sum[q], full[q])
			}
		}
	}
	blk13, blk2 := 2*c.i*c.h, c.h*c.i
	for _, ep := range []int{1, 2, 4} {
		sum := make([]float32, c.n*c.h)
		per := e / ep
		for rank := range ep {
			pc := c
			pc.local, pc.emap = per, make([]int32, e)
			for g := range pc.emap {
				pc.emap[g] = -1
				if g/per == rank {
					pc.emap[g] = int32(g - rank*per)
				}
			}
			pd := d
			pd.w13, pd.w2 = d.w13[rank*per*blk13:(rank+1)*per*blk13], d.w2[rank*per*blk2:(rank+1)*per*blk2]
			for q, v := range runExperts(t, o, pc, pd) {
				sum[q] += v
			}
		}
		check(fmt.Sprintf("ep %d", ep), sum)
	}
	for _, tp := range []int{2, 3, 4} {
		ip := c.i / tp
		sum := make([]float32, c.n*c.h)
		for rank := range tp {
			pc, pd := c, d
			pc.i = ip
			pd.w13, pd.w2 = nil, nil
			for ex := range e {
				blk := d.w13[ex*blk13 : (ex+1)*blk13]
				pd.w13 = append(pd.w13, blk[rank*ip*c.h:(rank+1)*ip*c.h]...)             // gate rows of the slice
				pd.w13 = append(pd.w13, blk[(c.i+rank*ip)*c.h:(c.i+(rank+1)*ip)*c.h]...) // up rows of the slice
				for col := range c.h {
					row := d.w2[(ex*c.h+col)*c.i : (ex*c.h+col+1)*c.i]
					pd.w2 = append(pd.w2, row[rank*ip:(rank+1)*ip]...)
				}
			}
			for q, v := range runExperts(t, o, pc, pd) {
				sum[q] += v
			}
		}
		check(fmt.Sprintf("tp %d", tp), sum)
	}
}

// Bad arguments are errors that name the method, never panics.
func TestErrors(t *testing.T) {
	o := New()
	f := func(r, c int) moe.Tensor { return tensor(t, o, f32t, r, c, nil) }
	b := func(r, c int) moe.Tensor { return tensor(t, o, bf16, r, c, nil) }
	i := func(r, c int) moe.Tensor { return tensor(t, o, i32t, r, c, nil) }
	dev := moe.Tensor{Buf: comm.DeviceBuffer(f32t, 0x1000, 6, 0), Rows: 2, Cols: 3}
	short := moe.Tensor{Buf: comm.NewHost(f32t, 5), Rows: 2, Cols: 3}
	ew := func(local, in, h int) *moe.ExpertWeights {
		return &moe.ExpertWeights{Local: local, I: in, H: h, W13: f(local*2*in, h), W2: f(local*h, in)}
	}
	mlpW := &moe.MLPWeights{I: 2, H: 3, W13: f(4, 3), W2: f(3, 2)}
	ids := i(2, 2)
	if err := o.Upload(ids, []float32{0, 1, 5, 2}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		op   string
		kind error
		call func() error
	}{
		{"Alloc", ErrMismatch, func() error { _, err := o.Alloc(dtype.Invalid, 1, 1); return err }},
		{"Alloc", ErrMismatch, func() error { _, err := o.Alloc(f32t, -1, 1); return err }},
		{"Upload", ErrMismatch, func() error { return o.Upload(f(2, 3), make([]float32, 5)) }},
		{"Upload", ErrValue, func() error { return o.Upload(i(1, 2), []float32{1, float32(math.NaN())}) }},
		{"Upload", ErrValue, func() error { return o.Upload(i(1, 1), []float32{3e9}) }},
		{"Download", ErrMismatch, func() error { return o.Download(b(2, 3), make([]float32, 7)) }},
		{"Download", ErrMismatch, func() error { return o.Download(dev, make([]float32, 6)) }},
		{"Fill", ErrMismatch, func() error { return o.Fill(short, &moe.Gen{}) }},
		{"Fill", ErrValue, func() error { return o.Fill(f(1, 1), nil) }},
		{"Copy", ErrMismatch, func() error { return o.Copy(f(2, 3), f(3, 2)) }},
		{"Copy", ErrMismatch, func() error { return o.Copy(f(2, 3), b(2, 3)) }},
		{"Zero", ErrMismatch, func() error { return o.Zero(dev) }},
		{"CopyCols", ErrMismatch, func() error { return o.CopyCols(f(2, 3), f(3, 3)) }},
		{"CopyCols", ErrMismatch, func() error { return o.CopyCols(f(2, 3), b(2, 3)) }},
		{"Linear", ErrMismatch, func() error { return o.Linear(f(5, 6), f(3, 5), f(5, 3)) }},
		{"Linear", ErrMismatch, func() error { return o.Linear(f(5, 6), f(3, 6), f(5, 4)) }},
		{"Linear", ErrMismatch, func() error { return o.Linear(i(5, 6), f(3, 6), f(5, 3)) }},
		{"Linear", ErrMismatch, func() error { return o.Linear(dev, f(3, 3), f(2, 3)) }},
		{"Linear", ErrMismatch, func() error { return o.Linear(short, f(3, 3), f(2, 3)) }},
		{"Logits", ErrMismatch, func() error { return o.Logits(f(5, 6), f(3, 6), b(5, 3)) }},
		{"Route", ErrMismatch, func() error {
			return o.Route(router.Config{NumExperts: 4, TopK: 2}, f(3, 4), f(3, 1), i(3, 2))
		}},
		{"Route", ErrMismatch, func() error {
			return o.Route(router.Config{NumExperts: 4, TopK: 2}, f(3, 5), f(3, 2), i(3, 2))
		}},
		{"Route", ErrMismatch, func() error {
			return o.Route(router.Config{NumExperts: 4, TopK: 2}, f(3, 4), f(3, 2), f(3, 2))
		}},
		{"Axpby", ErrMismatch, func() error { return o.Axpby(1, f(2, 3), 1, f(3, 2)) }},
		{"Axpby", ErrMismatch, func() error { return o.Axpby(1, i(2, 3), 1, f(2, 3)) }},
		{"MLP", ErrMismatch, func() error { return o.MLP(f(4, 3), nil, moe.SiLU, f(4, 3)) }},
		{"MLP", ErrMismatch, func() error {
			return o.MLP(f(4, 3), &moe.MLPWeights{I: 2, H: 3, W13: f(3, 3), W2: f(3, 2)}, moe.SiLU, f(4, 3))
		}},
		{"MLP", ErrMismatch, func() error { return o.MLP(f(4, 3), mlpW, moe.SiLU, b(4, 3)) }},
		{"MLP", ErrMismatch, func() error { return o.MLP(f(4, 2), mlpW, moe.SiLU, f(4, 2)) }},
		{"MLP", ErrValue, func() error { return o.MLP(f(4, 3), mlpW, moe.Activation(7), f(4, 3)) }},
		{"Experts", ErrMismatch, func() error { return o.Experts(f(2, 4), f(2, 2), i(2, 2), nil, nil, moe.SiLU, false, f(2, 4)) }},
		{"Experts", ErrMismatch, func() error { return o.Experts(f(2, 4), f(2, 2), i(2, 2), ew(2, 3, 4), nil, moe.SiLU, true, f(2, 4)) }},
		{"Experts", ErrMismatch, func() error { return o.Experts(f(2, 4), f(2, 2), i(2, 2), ew(2, 3, 4), nil, moe.SiLU, false, b(2, 4)) }},
		{"Experts", ErrMismatch, func() error { return o.Experts(f(2, 4), f(2, 2), i(2, 2), ew(2, 3, 5), nil, moe.SiLU, false, f(2, 4)) }},
		{"Experts", ErrMismatch, func() error { return o.Experts(f(2, 4), f(2, 3), i(2, 2), ew(2, 3, 4), nil, moe.SiLU, false, f(2, 4)) }},
		{"Experts", ErrMismatch, func() error { return o.Experts(f(2, 4), f(3, 2), i(3, 2), ew(2, 3, 4), nil, moe.SiLU, false, f(2, 4)) }},
		{"Experts", ErrMismatch, func() error { return o.Experts(f(2, 4), f(2, 2), f(2, 2), ew(2, 3, 4), nil, moe.SiLU, false, f(2, 4)) }},
		{"Experts", ErrMismatch, func() error {
			w := ew(2, 3, 4)
			w.W2 = f(8, 4)
			return o.Experts(f(2, 4), f(2, 2), i(2, 2), w, nil, moe.SiLU, false, f(2, 4))
		}},
		{"Experts", ErrValue, func() error { return o.Experts(f(2, 4), f(2, 2), ids, ew(3, 3, 4), nil, moe.SiLU, false, f(2, 4)) }},
		{"Experts", ErrValue, func() error {
			return o.Experts(f(2, 4), f(2, 2), ids, ew(2, 3, 4), []int32{0, 1, -1, 1, -1}, moe.SiLU, false, f(2, 4))
		}},
		{"Experts", ErrValue, func() error {
			return o.Experts(f(2, 4), f(2, 2), ids, ew(2, 3, 4), []int32{0, 1, 2, 1, -1, -1}, moe.SiLU, false, f(2, 4))
		}},
		{"Experts", ErrValue, func() error {
			return o.Experts(f(2, 4), f(2, 2), ids, ew(2, 3, 4), []int32{0, 1, -2, 1, -1, -1}, moe.SiLU, false, f(2, 4))
		}},
		{"Experts", ErrValue, func() error {
			return o.Experts(f(2, 4), f(2, 2), i(2, 2), ew(2, 3, 4), nil, moe.Activation(-1), false, f(2, 4))
		}},
	} {
		err := tc.call()
		if !errors.Is(err, tc.kind) || !strings.HasPrefix(fmt.Sprint(err), "cpu: "+tc.op+": ") {
			t.Errorf("%s: error %v, want a %q error matching %v", tc.op, err, "cpu: "+tc.op+": …", tc.kind)
		}
	}
}

// BenchmarkExperts runs a moderate bf16 layer: 256 tokens, top-2 of 8 local experts,
// H=512, I=1024 (6·256·2·512·1024 flops per call).
func BenchmarkExperts(b *testing.B) {
	o := New()
	const n, k, e, i, h = 256, 2, 8, 1024, 512
	c := expertCase{n: n, k: k, local: e, i: i, h: h, dt: bf16}
	d := newExpertData(rand.New(rand.NewPCG(1, 1)), c)
	x := tensor(b, o, c.dt, n, h, d.x)
	w := tensor(b, o, f32t, n, k, d.wt)
	ids := tensor(b, o, i32t, n, k, d.ids)
	ew := &moe.ExpertWeights{Local: e, I: i, H: h,
		W13: tensor(b, o, c.dt, e*2*i, h, d.w13), W2: tensor(b, o, c.dt, e*h, i, d.w2)}
	out := tensor(b, o, c.dt, n, h, nil)
	for b.Loop() {
		if err := o.Experts(x, w, ids, ew, nil, moe.SiLU, false, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(6*float64(n*k*i*h)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
