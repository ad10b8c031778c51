// Package cpu is the CPU device of moe: Ops on host memory, with float32 GEMMs through
// gonum's blas32. It rounds where a GPU kernel would (the GEMM outputs and the gated
// activation to the layer's dtype, the weighted sum over top-k once), so that it is a
// faithful small-scale stand-in for the GPU path, not a faster float32 one.
package cpu

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/router"
)

// Ops is the CPU device. It is not safe for concurrent use (it reuses scratch buffers).
type Ops struct {
	scratch [6][]float32
}

var _ moe.Ops = (*Ops)(nil)

// New returns the CPU device.
func New() *Ops { return &Ops{} }

func (o *Ops) Name() string { return "cpu" }

func (o *Ops) Alloc(dt dtype.DType, rows, cols int) (moe.Tensor, error) {
	if !dt.Valid() || rows < 0 || cols < 0 {
		return moe.Tensor{}, fmt.Errorf("cpu: alloc %d×%d %v", rows, cols, dt)
	}
	return moe.Tensor{Buf: comm.NewHost(dt, rows*cols), Rows: rows, Cols: cols}, nil
}

func (o *Ops) Free(moe.Tensor) {}

func (o *Ops) Sync() error { return nil }

// buf returns scratch slot i with at least n elements.
func (o *Ops) buf(i, n int) []float32 {
	if cap(o.scratch[i]) < n {
		o.scratch[i] = make([]float32, n)
	}
	return o.scratch[i][:n]
}

func check(op string, t moe.Tensor) error {
	if t.Buf.OnDevice() || t.Buf.Len() != t.Rows*t.Cols {
		return fmt.Errorf("cpu: %s: tensor %v is not a host tensor of its shape", op, t)
	}
	return nil
}

func sameShape(op string, a, b moe.Tensor) error {
	if a.Rows != b.Rows || a.Cols != b.Cols {
		return fmt.Errorf("cpu: %s: shapes %d×%d and %d×%d differ", op, a.Rows, a.Cols, b.Rows, b.Cols)
	}
	return nil
}

// load returns t's values as float32: a view for float32 tensors, else a conversion into
// scratch slot i.
func (o *Ops) load(t moe.Tensor, i int) []float32 {
	switch t.DType() {
	case dtype.Float32:
		return t.Buf.Float32s()
	case dtype.BFloat16:
		src := t.Buf.BF16s()
		dst := o.buf(i, len(src))
		for k, v := range src {
			dst[k] = v.Float32()
		}
		return dst
	}
	return nil
}

// store writes float32 values into t, rounding to its dtype.
func store(t moe.Tensor, v []float32) {
	switch t.DType() {
	case dtype.Float32:
		copy(t.Buf.Float32s(), v)
	case dtype.BFloat16:
		d := t.Buf.BF16s()
		for k := range d {
			d[k] = dtype.FromFloat32(v[k])
		}
	case dtype.Int32:
		d := t.Buf.Int32s()
		for k := range d {
			d[k] = int32(v[k])
		}
	}
}

// roundTo rounds v in place to what dt can hold.
func roundTo(dt dtype.DType, v []float32) {
	if dt != dtype.BFloat16 {
		return
	}
	for k, x := range v {
		v[k] = dtype.FromFloat32(x).Float32()
	}
}

func (o *Ops) Fill(t moe.Tensor, g *moe.Gen) error {
	if err := check("fill", t); err != nil {
		return err
	}
	v := o.buf(0, t.Rows*t.Cols)
	for r := 0; r < t.Rows; r++ {
		for c := 0; c < t.Cols; c++ {
			v[r*t.Cols+c] = g.At(r, c)
		}
	}
	store(t, v)
	return nil
}

func (o *Ops) Upload(t moe.Tensor, host []float32) error {
	if err := check("upload", t); err != nil {
		return err
	}
	if len(host) != t.Rows*t.Cols {
		return fmt.Errorf("cpu: upload of %d values into %v", len(host), t)
	}
	store(t, host)
	return nil
}

func (o *Ops) Download(t moe.Tensor, host []float32) error {
	if err := check("download", t); err != nil {
		return err
	}
	if len(host) != t.Rows*t.Cols {
		return fmt.Errorf("cpu: download of %v into %d values", t, len(host))
	}
	if t.DType() == dtype.Int32 {
		for k, v := range t.Buf.Int32s() {
			host[k] = float32(v)
		}
		return nil
	}
	copy(host, o.load(t, 0))
	return nil
}

func (o *Ops) Copy(dst, src moe.Tensor) error {
	if err := sameShape("copy", dst, src); err != nil {
		return err
	}
	if dst.DType() != src.DType() {
		return fmt.Errorf("cpu: copy of %v into %v", src, dst)
	}
	copy(dst.Buf.Host(), src.Buf.Host())
	return nil
}

func (o *Ops) Zero(t moe.Tensor) error {
	clear(t.Buf.Host())
	return nil
}

func (o *Ops) CopyCols(dst, src moe.Tensor) error {
	if dst.Rows != src.Rows || dst.DType() != src.DType() {
		return fmt.Errorf("cpu: copy columns of %v into %v", src, dst)
	}
	sz := dst.DType().Size()
	w := min(dst.Cols, src.Cols) * sz
	d, s := dst.Buf.Host(), src.Buf.Host()
	for r := 0; r < dst.Rows; r++ {
		row := d[r*dst.Cols*sz : (r+1)*dst.Cols*sz]
		copy(row, s[r*src.Cols*sz:r*src.Cols*sz+w])
		clear(row[w:])
	}
	return nil
}

// gemmNT sets c [n, m] = a [n, k] · bᵀ (b [m, k]) in float32.
func gemmNT(a []float32, n, k int, b []float32, m int, c []float32) {
	if n == 0 || m == 0 {
		return
	}
	if k == 0 {
		clear(c[:n*m])
		return
	}
	blas32.Gemm(blas.NoTrans, blas.Trans, 1,
		blas32.General{Rows: n, Cols: k, Stride: k, Data: a},
		blas32.General{Rows: m, Cols: k, Stride: k, Data: b},
		0, blas32.General{Rows: n, Cols: m, Stride: m, Data: c})
}

func (o *Ops) Linear(x, w, out moe.Tensor) error {
	if x.Cols != w.Cols || out.Rows != x.Rows || out.Cols != w.Rows {
		return fmt.Errorf("cpu: linear %v · (%v)ᵀ into %v", x, w, out)
	}
	c := o.buf(2, out.Rows*out.Cols)
	gemmNT(o.load(x, 0), x.Rows, x.Cols, o.load(w, 1), w.Rows, c)
	store(out, c)
	return nil
}

func (o *Ops) Logits(x, w, out moe.Tensor) error {
	if out.DType() != dtype.Float32 {
		return fmt.Errorf("cpu: logits into %v: want float32", out)
	}
	return o.Linear(x, w, out)
}

func (o *Ops) Route(cfg router.Config, logits, weights, ids moe.Tensor) error {
	if logits.DType() != dtype.Float32 || weights.DType() != dtype.Float32 || ids.DType() != dtype.Int32 ||
		weights.Rows != logits.Rows || ids.Rows != logits.Rows || weights.Cols != cfg.TopK || ids.Cols != cfg.TopK {
		return fmt.Errorf("cpu: route %v into weights %v and ids %v (top-k %d)", logits, weights, ids, cfg.TopK)
	}
	if logits.Rows == 0 {
		return nil
	}
	return router.Route(cfg, logits.Buf.Float32s(), weights.Buf.Float32s(), ids.Buf.Int32s())
}

func activate(u float32, act moe.Activation) float32 {
	if act == moe.GELU {
		return float32(0.5 * float64(u) * (1 + math.Erf(float64(u)/math.Sqrt2)))
	}
	return u / (1 + float32(math.Exp(float64(-u))))
}

// gated computes a [n, i] = act(h[:, :i]) ⊙ h[:, i:] from h [n, 2i], rounded to dt.
func gated(h []float32, n, i int, act moe.Activation, dt dtype.DType, a []float32) {
	for t := 0; t < n; t++ {
		row := h[t*2*i : (t+1)*2*i]
		for j := 0; j < i; j++ {
			a[t*i+j] = activate(row[j], act) * row[i+j]
		}
	}
	roundTo(dt, a[:n*i])
}

// mlp runs the gated MLP on n rows of x [n, hd] with w13 [2i, hd] and w2 [hd, i] (float32),
// rounding each stage to dt; y [n, hd].
func (o *Ops) mlp(x []float32, n, hd int, w13, w2 []float32, i int, act moe.Activation, dt dtype.DType, y []float32) {
	h := o.buf(3, n*2*i)
	gemmNT(x, n, hd, w13, 2*i, h)
	roundTo(dt, h)
	a := o.buf(4, n*i)
	gated(h, n, i, act, dt, a)
	gemmNT(a, n, i, w2, hd, y)
	roundTo(dt, y[:n*hd])
}

func (o *Ops) MLP(x moe.Tensor, w *moe.MLPWeights, act moe.Activation, out moe.Tensor) error {
	if x.Cols != w.H || out.Rows != x.Rows || out.Cols != w.H || w.W13.Rows != 2*w.I || w.W2.Rows != w.H || w.W2.Cols != w.I {
		return fmt.Errorf("cpu: mlp of %v with W13 %v and W2 %v into %v", x, w.W13, w.W2, out)
	}
	y := o.buf(5, out.Rows*out.Cols)
	o.mlp(o.load(x, 0), x.Rows, w.H, o.load(w.W13, 1), o.load(w.W2, 2), w.I, act, out.DType(), y)
	store(out, y)
	return nil
}

func (o *Ops) Axpby(a float32, dst moe.Tensor, b float32, src moe.Tensor) error {
	if err := sameShape("axpby", dst, src); err != nil {
		return err
	}
	s := append([]float32(nil), o.load(src, 1)...)
	d := o.load(dst, 0)
	out := o.buf(2, len(d))
	for k := range d {
		out[k] = a*d[k] + b*s[k]
	}
	store(dst, out)
	return nil
}

// Experts groups the slots by local expert (a permutation with counts and offsets), then
// runs two GEMMs per expert over its gathered rows and adds the weighted outputs back into
// a float32 accumulator, rounded once into out.
func (o *Ops) Experts(x, weights, ids moe.Tensor, w *moe.ExpertWeights, expertMap []int32, act moe.Activation, onInput bool, out moe.Tensor) error {
	n, k, hd, i := x.Rows, weights.Cols, w.H, w.I
	switch {
	case x.Cols != hd || out.Rows != n || out.Cols != hd:
		return fmt.Errorf("cpu: experts on %v into %v with hidden %d", x, out, hd)
	case weights.Rows != n || ids.Rows != n || ids.Cols != k || weights.DType() != dtype.Float32 || ids.DType() != dtype.Int32:
		return fmt.Errorf("cpu: experts with weights %v and ids %v for %d rows", weights, ids, n)
	case w.W13.Rows != w.Local*2*i || w.W13.Cols != hd || w.W2.Rows != w.Local*hd || w.W2.Cols != i:
		return fmt.Errorf("cpu: expert weights W13 %v, W2 %v for %d experts of %d×%d", w.W13, w.W2, w.Local, i, hd)
	case onInput && k != 1:
		return fmt.Errorf("cpu: router weight on the input needs top-k 1, not %d", k)
	}
	wt, id := weights.Buf.Float32s(), ids.Buf.Int32s()
	type slot struct{ t, j int }
	counts := make([]int, w.Local+1)
	local := make([]int, n*k)
	for s, e := range id {
		l := int(e)
		if expertMap != nil {
			if e < 0 || int(e) >= len(expertMap) {
				return fmt.Errorf("cpu: expert id %d outside the map of %d experts", e, len(expertMap))
			}
			l = int(expertMap[e])
		} else if l < 0 || l >= w.Local {
			return fmt.Errorf("cpu: expert id %d with %d local experts and no map", e, w.Local)
		}
		local[s] = l
		if l >= 0 {
			counts[l+1]++
		}
	}
	for l := 1; l <= w.Local; l++ {
		counts[l] += counts[l-1] // offsets
	}
	order := make([]slot, counts[w.Local])
	next := append([]int(nil), counts[:w.Local]...)
	for s, l := range local {
		if l >= 0 {
			order[next[l]] = slot{s / k, s % k}
			next[l]++
		}
	}
	xs := o.load(x, 0)
	dt := x.DType()
	acc := make([]float32, n*hd)
	for l := 0; l < w.Local; l++ {
		slots := order[counts[l]:counts[l+1]]
		if len(slots) == 0 {
			continue
		}
		rows := len(slots)
		xg := make([]float32, rows*hd)
		for r, s := range slots {
			src := xs[s.t*hd : (s.t+1)*hd]
			if onInput {
				scale := wt[s.t*k+s.j]
				for c, v := range src {
					xg[r*hd+c] = v * scale
				}
			} else {
				copy(xg[r*hd:], src)
			}
		}
		if onInput {
			roundTo(dt, xg)
		}
		w13 := o.load(w.W13.RowSlice(l*2*i, 2*i), 1)
		w2 := o.load(w.W2.RowSlice(l*hd, hd), 2)
		y := make([]float32, rows*hd)
		o.mlp(xg, rows, hd, w13, w2, i, act, out.DType(), y)
		for r, s := range slots {
			scale := wt[s.t*k+s.j]
			if onInput {
				scale = 1
			}
			dst := acc[s.t*hd : (s.t+1)*hd]
			for c, v := range y[r*hd : (r+1)*hd] {
				dst[c] += scale * v
			}
		}
	}
	store(out, acc)
	return nil
}
