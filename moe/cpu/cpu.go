// Package cpu is the CPU device of moe: moe.Ops on host memory, float32 GEMMs through
// gonum's blas32.
//
// It rounds where a GPU kernel would (for a bf16 layer: each GEMM output and the gated
// activation to bf16, the weighted sum over top-k accumulated in float32 and rounded once),
// so that it is a faithful small-scale stand-in for the GPU path, not a faster float32 one.
//
// It must not keep anything across calls but scratch memory (no weight caches: a weight may
// change between calls), start goroutines of its own (gonum's GEMM spreads large products
// over the cores by itself), or panic on bad arguments: every shape and dtype is checked and
// reported as an error that matches ErrMismatch.
package cpu

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/router"
)

// Errors returned by Ops match these with errors.Is.
var (
	// ErrMismatch: a tensor has the wrong shape or dtype for the call, or is not in host memory.
	ErrMismatch = errors.New("tensor shape or dtype mismatch")
	// ErrValue: a value cannot be used: an expert id outside its range, a non-integer or
	// out-of-range value for an int32 tensor, an unknown activation.
	ErrValue = errors.New("invalid value")
)

type opError struct {
	kind error
	op   string
	msg  string
}

func (e *opError) Error() string { return "cpu: " + e.op + ": " + e.msg }
func (e *opError) Unwrap() error { return e.kind }

func mismatch(op, format string, args ...any) error {
	return &opError{ErrMismatch, op, fmt.Sprintf(format, args...)}
}

func badValue(op, format string, args ...any) error {
	return &opError{ErrValue, op, fmt.Sprintf(format, args...)}
}

// Ops is the CPU device. It reuses scratch memory between calls, so one Ops must not be
// used by several goroutines at once; make one per goroutine instead.
type Ops struct {
	// Widened (float32) copies of bf16 operands, one per operand of a call.
	in [3][]float32
	// Expert and MLP intermediates: gathered inputs, GEMM1 output, gated activation, GEMM2
	// output, one row of the weighted sum.
	xg, h, a, y, acc []float32
	// Expert grouping: counts per local expert, gathered row of every slot (-1 when the
	// slot's expert is not local), slot of every gathered row.
	counts, pos, slot []int
}

var _ moe.Ops = (*Ops)(nil)

// New returns a CPU device.
func New() *Ops { return &Ops{} }

// grow returns s resized to n elements, reallocating only when its capacity is short.
// The contents are unspecified.
func grow[T any](s *[]T, n int) []T {
	if cap(*s) < n {
		*s = make([]T, n)
	}
	return (*s)[:n]
}

// Name is "cpu".
func (o *Ops) Name() string { return "cpu" }

// Alloc returns a zeroed rows×cols host tensor of float32, bf16 or int32.
func (o *Ops) Alloc(dt dtype.DType, rows, cols int) (moe.Tensor, error) {
	if !dt.Valid() || rows < 0 || cols < 0 {
		return moe.Tensor{}, mismatch("Alloc", "cannot allocate %d×%d %v", rows, cols, dt)
	}
	return moe.Tensor{Buf: comm.NewHost(dt, rows*cols), Rows: rows, Cols: cols}, nil
}

// Free does nothing: the garbage collector owns host memory.
func (o *Ops) Free(moe.Tensor) {}

// Sync returns nil: every call has finished when it returns.
func (o *Ops) Sync() error { return nil }

var (
	anyType = []dtype.DType{dtype.Float32, dtype.BFloat16, dtype.Int32}
	float   = []dtype.DType{dtype.Float32, dtype.BFloat16}
	f32     = []dtype.DType{dtype.Float32}
	i32     = []dtype.DType{dtype.Int32}
)

// check reports whether t is a well-formed host tensor of one of the given dtypes.
func check(op, name string, t moe.Tensor, types []dtype.DType) error {
	switch {
	case t.Buf.OnDevice():
		return mismatch(op, "%s %v is in device memory", name, t)
	case t.Rows < 0 || t.Cols < 0 || t.Buf.Len() != t.Rows*t.Cols:
		return mismatch(op, "%s %v holds %d elements", name, t, t.Buf.Len())
	case t.Buf.Len() > 0 && t.Buf.Host() == nil:
		return mismatch(op, "%s %v has no host memory", name, t)
	case !slices.Contains(types, t.DType()):
		return mismatch(op, "%s %v: want %s", name, t, typeNames(types))
	}
	return nil
}

func typeNames(types []dtype.DType) string {
	switch len(types) {
	case 1:
		return types[0].String()
	case 2:
		return types[0].String() + " or " + types[1].String()
	}
	return "float32, bf16 or int32"
}

// floats returns the elements of a float tensor as float32: a view of a float32 tensor,
// or a bf16 tensor widened into *buf.
func floats(t moe.Tensor, buf *[]float32) []float32 {
	if t.DType() == dtype.Float32 {
		return t.Buf.Float32s()
	}
	src := t.Buf.BF16s()
	dst := grow(buf, len(src))
	for i, v := range src {
		dst[i] = v.Float32()
	}
	return dst
}

// store writes v into the elements of t starting at element off, rounding to t's dtype.
func store(op string, t moe.Tensor, off int, v []float32) error {
	switch t.DType() {
	case dtype.Float32:
		copy(t.Buf.Float32s()[off:], v)
	case dtype.BFloat16:
		d := t.Buf.BF16s()[off : off+len(v)]
		for i, x := range v {
			d[i] = dtype.FromFloat32(x)
		}
	case dtype.Int32:
		d := t.Buf.Int32s()[off : off+len(v)]
		for i, x := range v {
			r := math.RoundToEven(float64(x))
			if !(r >= math.MinInt32 && r <= math.MaxInt32) {
				return badValue(op, "element %d of %v: %v is not an int32", off+i, t, x)
			}
			d[i] = int32(r)
		}
	}
	return nil
}

// round rounds v in place to the values dt holds (a no-op for float32).
func round(dt dtype.DType, v []float32) {
	if dt != dtype.BFloat16 {
		return
	}
	for i, x := range v {
		v[i] = dtype.FromFloat32(x).Float32()
	}
}

// Fill sets every element of t to g.At(r, c) rounded to t's dtype.
func (o *Ops) Fill(t moe.Tensor, g *moe.Gen) error {
	if err := check("Fill", "t", t, anyType); err != nil {
		return err
	}
	if g == nil {
		return badValue("Fill", "nil generator for %v", t)
	}
	row := grow(&o.acc, t.Cols)
	for r := 0; r < t.Rows; r++ {
		for c := range row {
			row[c] = g.At(r, c)
		}
		if err := store("Fill", t, r*t.Cols, row); err != nil {
			return err
		}
	}
	return nil
}

// Upload copies host into t, rounding to its dtype (to the nearest integer, ties to even,
// for int32).
func (o *Ops) Upload(t moe.Tensor, host []float32) error {
	if err := check("Upload", "t", t, anyType); err != nil {
		return err
	}
	if len(host) != t.Buf.Len() {
		return mismatch("Upload", "%d values into %v", len(host), t)
	}
	return store("Upload", t, 0, host)
}

// Download copies t into host, widening bf16 and converting int32 to float32.
func (o *Ops) Download(t moe.Tensor, host []float32) error {
	if err := check("Download", "t", t, anyType); err != nil {
		return err
	}
	if len(host) != t.Buf.Len() {
		return mismatch("Download", "%v into %d values", t, len(host))
	}
	switch t.DType() {
	case dtype.Float32:
		copy(host, t.Buf.Float32s())
	case dtype.BFloat16:
		for i, v := range t.Buf.BF16s() {
			host[i] = v.Float32()
		}
	case dtype.Int32:
		for i, v := range t.Buf.Int32s() {
			host[i] = float32(v)
		}
	}
	return nil
}

// Copy copies src into dst (same shape and dtype; overlapping views are fine).
func (o *Ops) Copy(dst, src moe.Tensor) error {
	if err := check("Copy", "dst", dst, anyType); err != nil {
		return err
	}
	if err := check("Copy", "src", src, anyType); err != nil {
		return err
	}
	if dst.Rows != src.Rows || dst.Cols != src.Cols || dst.DType() != src.DType() {
		return mismatch("Copy", "src %v into dst %v", src, dst)
	}
	copy(dst.Buf.Host(), src.Buf.Host())
	return nil
}

// Zero sets every element of t to 0.
func (o *Ops) Zero(t moe.Tensor) error {
	if err := check("Zero", "t", t, anyType); err != nil {
		return err
	}
	clear(t.Buf.Host())
	return nil
}

// CopyCols copies the leading min(dst.Cols, src.Cols) columns of every row of src into dst
// and zeroes dst's other columns.
func (o *Ops) CopyCols(dst, src moe.Tensor) error {
	if err := check("CopyCols", "dst", dst, anyType); err != nil {
		return err
	}
	if err := check("CopyCols", "src", src, anyType); err != nil {
		return err
	}
	if dst.Rows != src.Rows || dst.DType() != src.DType() {
		return mismatch("CopyCols", "src %v into dst %v: want the same rows and dtype", src, dst)
	}
	sz := dst.DType().Size()
	dw, sw := dst.Cols*sz, src.Cols*sz
	w := min(dw, sw)
	d, s := dst.Buf.Host(), src.Buf.Host()
	for r := 0; r < dst.Rows; r++ {
		row := d[r*dw : (r+1)*dw]
		copy(row, s[r*sw:r*sw+w])
		clear(row[w:])
	}
	return nil
}

// gemmNT sets c [n, m] = a [n, k] · bᵀ (b [m, k]), accumulating in float32.
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

// matmulNT checks and runs out = x · wᵀ for Linear and Logits.
func (o *Ops) matmulNT(op string, x, w, out moe.Tensor, outTypes []dtype.DType) error {
	if err := check(op, "x", x, float); err != nil {
		return err
	}
	if err := check(op, "w", w, float); err != nil {
		return err
	}
	if err := check(op, "out", out, outTypes); err != nil {
		return err
	}
	if x.Cols != w.Cols || out.Rows != x.Rows || out.Cols != w.Rows {
		return mismatch(op, "x %v · wᵀ with w %v into out %v: want x [n, k], w [m, k], out [n, m]", x, w, out)
	}
	c := grow(&o.y, out.Rows*out.Cols)
	gemmNT(floats(x, &o.in[0]), x.Rows, x.Cols, floats(w, &o.in[1]), w.Rows, c)
	return store(op, out, 0, c)
}

// Linear sets out = x · wᵀ, accumulated in float32 and rounded to out's dtype.
func (o *Ops) Linear(x, w, out moe.Tensor) error {
	return o.matmulNT("Linear", x, w, out, float)
}

// Logits sets the float32 out = x · wᵀ, accumulated in float32.
func (o *Ops) Logits(x, w, out moe.Tensor) error {
	return o.matmulNT("Logits", x, w, out, f32)
}

// Route runs router.Route in float32 on every row of logits.
func (o *Ops) Route(cfg router.Config, logits, weights, ids moe.Tensor) error {
	const op = "Route"
	if err := check(op, "logits", logits, f32); err != nil {
		return err
	}
	if err := check(op, "weights", weights, f32); err != nil {
		return err
	}
	if err := check(op, "ids", ids, i32); err != nil {
		return err
	}
	n, e, k := logits.Rows, cfg.NumExperts, cfg.TopK
	if logits.Cols != e || weights.Rows != n || weights.Cols != k || ids.Rows != n || ids.Cols != k {
		return mismatch(op, "logits %v into weights %v and ids %v: want [n, %d] into [n, %d] twice (E=%d, K=%d)",
			logits, weights, ids, e, k, e, k)
	}
	if err := router.Route[float32](cfg, logits.Buf.Float32s(), weights.Buf.Float32s(), ids.Buf.Int32s()); err != nil {
		return fmt.Errorf("cpu: %s: %w", op, err)
	}
	return nil
}

// Axpby sets dst = a·dst + b·src in float32, rounded to dst's dtype. dst and src may be
// the same tensor.
func (o *Ops) Axpby(a float32, dst moe.Tensor, b float32, src moe.Tensor) error {
	if err := check("Axpby", "dst", dst, float); err != nil {
		return err
	}
	if err := check("Axpby", "src", src, float); err != nil {
		return err
	}
	if dst.Rows != src.Rows || dst.Cols != src.Cols {
		return mismatch("Axpby", "src %v into dst %v", src, dst)
	}
	d, s := floats(dst, &o.in[0]), floats(src, &o.in[1])
	v := grow(&o.y, len(d))
	for i := range v {
		// The conversions keep the compiler from fusing into an FMA on some platforms.
		v[i] = float32(a*d[i]) + float32(b*s[i])
	}
	return store("Axpby", dst, 0, v)
}

// activate sets a [n, i] = act(h[:, :i]) ⊙ h[:, i:] for h [n, 2i], in float32.
func activate(h []float32, n, i int, act moe.Activation, a []float32) {
	for t := range n {
		gate, up := h[t*2*i:t*2*i+i], h[t*2*i+i:(t+1)*2*i]
		dst := a[t*i : (t+1)*i]
		for j, u := range gate {
			var g float32
			if act == moe.GELU {
				g = float32(0.5 * float64(u) * (1 + math.Erf(float64(u)/math.Sqrt2)))
			} else {
				g = float32(float64(u) / (1 + math.Exp(-float64(u))))
			}
			dst[j] = g * up[j]
		}
	}
}

// gatedMLP runs rows of the gated MLP: y [n, hd] = (act(x·gateᵀ) ⊙ (x·upᵀ))·downᵀ for x
// [n, hd], w13 [2i, hd] (gate rows, then up rows) and w2 [hd, i], rounding h, the gated
// activation and y to dt.
func (o *Ops) gatedMLP(x []float32, n, hd int, w13, w2 []float32, i int, act moe.Activation, dt dtype.DType, y []float32) {
	h := grow(&o.h, n*2*i)
	gemmNT(x, n, hd, w13, 2*i, h)
	round(dt, h)
	a := grow(&o.a, n*i)
	activate(h, n, i, act, a)
	round(dt, a)
	gemmNT(a, n, i, w2, hd, y[:n*hd])
	round(dt, y[:n*hd])
}

func checkAct(op string, act moe.Activation) error {
	if act != moe.SiLU && act != moe.GELU {
		return badValue(op, "unknown activation %d", int(act))
	}
	return nil
}

// MLP sets out = (act(x·gateᵀ) ⊙ (x·upᵀ))·downᵀ with the expert precision: for a bf16
// layer h, the gated activation and out are rounded to bf16.
func (o *Ops) MLP(x moe.Tensor, w *moe.MLPWeights, act moe.Activation, out moe.Tensor) error {
	const op = "MLP"
	if w == nil {
		return mismatch(op, "nil weights")
	}
	for _, c := range []struct {
		name string
		t    moe.Tensor
	}{{"x", x}, {"W13", w.W13}, {"W2", w.W2}, {"out", out}} {
		if err := check(op, c.name, c.t, float); err != nil {
			return err
		}
	}
	if err := checkAct(op, act); err != nil {
		return err
	}
	i, hd := w.I, w.H
	switch {
	case i < 0 || hd < 0 || w.W13.Rows != 2*i || w.W13.Cols != hd || w.W2.Rows != hd || w.W2.Cols != i:
		return mismatch(op, "W13 %v and W2 %v: want [2·%d, %d] and [%d, %d]", w.W13, w.W2, i, hd, hd, i)
	case x.Cols != hd || out.Rows != x.Rows || out.Cols != hd || out.DType() != x.DType():
		return mismatch(op, "x %v into out %v: want both [n, %d] of one dtype", x, out, hd)
	}
	n := x.Rows
	y := grow(&o.y, n*hd)
	o.gatedMLP(floats(x, &o.in[0]), n, hd, floats(w.W13, &o.in[1]), floats(w.W2, &o.in[2]), i, act, x.DType(), y)
	return store(op, out, 0, y)
}

// Experts runs the local experts of every (token, slot) pair. The slots are grouped by
// local expert first (counts, offsets, and the rows gathered into contiguous float32
// scratch), then each expert runs two GEMMs over its rows, [rows_e, H]·[H, 2I] and
// [rows_e, I]·[I, H]. Last, every token adds its slots' outputs in slot order in float32,
// weighted unless onInput, and the sum is rounded once into out.
func (o *Ops) Experts(x, weights, ids moe.Tensor, w *moe.ExpertWeights, expertMap []int32, act moe.Activation, onInput bool, out moe.Tensor) error {
	const op = "Experts"
	if w == nil {
		return mismatch(op, "nil weights")
	}
	for _, c := range []struct {
		name  string
		t     moe.Tensor
		types []dtype.DType
	}{{"x", x, float}, {"weights", weights, f32}, {"ids", ids, i32}, {"W13", w.W13, float}, {"W2", w.W2, float}, {"out", out, float}} {
		if err := check(op, c.name, c.t, c.types); err != nil {
			return err
		}
	}
	if err := checkAct(op, act); err != nil {
		return err
	}
	n, k, nl, i, hd := x.Rows, ids.Cols, w.Local, w.I, w.H
	switch {
	case nl < 0 || i < 0 || hd < 0 || w.W13.Rows != nl*2*i || w.W13.Cols != hd || w.W2.Rows != nl*hd || w.W2.Cols != i:
		return mismatch(op, "W13 %v and W2 %v: want [%d·2·%d, %d] and [%d·%d, %d] (Local=%d, I=%d, H=%d)",
			w.W13, w.W2, nl, i, hd, nl, hd, i, nl, i, hd)
	case x.Cols != hd || out.Rows != n || out.Cols != hd || out.DType() != x.DType():
		return mismatch(op, "x %v into out %v: want both [n, %d] of one dtype", x, out, hd)
	case weights.Rows != n || ids.Rows != n || weights.Cols != k:
		return mismatch(op, "weights %v and ids %v for x %v: want both [%d, K]", weights, ids, x, n)
	case onInput && k != 1:
		return mismatch(op, "the router weight on the input needs top-k 1, not %d (ids %v)", k, ids)
	}
	wt := weights.Buf.Float32s()
	dt := x.DType()

	// Group the slots by local expert: counts[l+1] rows for expert l, turned into offsets.
	counts := grow(&o.counts, nl+1)
	clear(counts)
	pos := grow(&o.pos, n*k) // local expert of each slot for now, -1 if not local
	for s, e := range ids.Buf.Int32s() {
		l := int(e)
		if expertMap != nil {
			if e < 0 || int(e) >= len(expertMap) {
				return badValue(op, "ids[%d, %d] = %d is outside the expert map of %d experts", s/k, s%k, e, len(expertMap))
			}
			l = int(expertMap[e])
			if l < -1 || l >= nl {
				return badValue(op, "expertMap[%d] = %d with %d local experts", e, l, nl)
			}
		} else if l < 0 || l >= nl {
			return badValue(op, "ids[%d, %d] = %d with %d local experts and no expert map", s/k, s%k, e, nl)
		}
		pos[s] = l
		if l >= 0 {
			counts[l+1]++
		}
	}
	for l := 1; l <= nl; l++ {
		counts[l] += counts[l-1]
	}
	rows := counts[nl]
	slot := grow(&o.slot, rows)
	for s, l := range pos {
		if l < 0 {
			continue
		}
		r := counts[l] // the next free row of expert l; counts[l] ends as the offset of l+1
		counts[l]++
		slot[r] = s
		pos[s] = r // from here on: the slot's gathered row
	}
	// counts[l] is now the end of expert l's rows, and so the start of l+1's.

	// Gather the rows, scaled by the router weight (and rounded) when it is on the input.
	xs := floats(x, &o.in[0])
	xg := grow(&o.xg, rows*hd)
	for r, s := range slot {
		src, dst := xs[s/k*hd:(s/k+1)*hd], xg[r*hd:(r+1)*hd]
		if !onInput {
			copy(dst, src)
			continue
		}
		for c, v := range src {
			dst[c] = v * wt[s]
		}
		round(dt, dst)
	}

	// Two GEMMs per expert over its contiguous rows.
	y := grow(&o.y, rows*hd)
	start := 0
	for l := 0; l < nl; l++ {
		end := counts[l]
		if end == start {
			continue
		}
		w13 := floats(w.W13.RowSlice(l*2*i, 2*i), &o.in[1])
		w2 := floats(w.W2.RowSlice(l*hd, hd), &o.in[2])
		o.gatedMLP(xg[start*hd:end*hd], end-start, hd, w13, w2, i, act, dt, y[start*hd:end*hd])
		start = end
	}

	// Weighted sum over the slots of each token, in slot order, rounded once.
	acc := grow(&o.acc, hd)
	for t := range n {
		clear(acc)
		for j := range k {
			s := t*k + j
			r := pos[s]
			if r < 0 {
				continue // not a local expert
			}
			scale := wt[s]
			if onInput {
				scale = 1
			}
			for c, v := range y[r*hd : (r+1)*hd] {
				acc[c] += float32(scale * v)
			}
		}
		if err := store(op, out, t*hd, acc); err != nil {
			return err
		}
	}
	return nil
}
