// Package gpu is the GPU device of moe: tensors in device memory, kernels compiled by NVRTC
// at first use (kernels.cu), GEMMs through cuBLAS, all work on one stream, shared with
// the NCCL communicators so that compute and collectives run in issue order.
package gpu

import (
	_ "embed"
	"fmt"
	"unsafe"

	"github.com/moerun/moerun/comm"
	"github.com/moerun/moerun/cuda"
	"github.com/moerun/moerun/dtype"
	"github.com/moerun/moerun/moe"
	"github.com/moerun/moerun/moe/router"
)

//go:embed kernels.cu
var kernelSource string

// Ops is one GPU with its stream, cuBLAS handle and kernels. Calls enqueue work and
// return; Sync waits. Use it from the goroutine that made the device current.
type Ops struct {
	dev    *cuda.Device
	stream *cuda.Stream
	blas   *cuda.Blas
	mod    *cuda.Module
	fn     map[string]*cuda.Function
	// scratch holds intermediate tensors by purpose, grown as needed and kept, so that a
	// forward pass allocates nothing once the sizes have been seen.
	scratch map[string]moe.Tensor
	consts  map[string]deviceConst
	// Libraries names NVRTC and cuBLAS as loaded, for the worker to print once.
	Libraries string
}

var kernels = []string{"moe_fill", "moe_axpby", "moe_copycols", "moe_gated", "moe_route",
	"moe_expert_count", "moe_expert_scatter", "moe_gather", "moe_combine"}

var _ moe.Ops = (*Ops)(nil)

// New compiles the kernels for dev's architecture (cached across runs) and binds cuBLAS to
// stream, which every operation uses.
func New(dev *cuda.Device, stream *cuda.Stream) (*Ops, error) {
	nv, err := cuda.LoadNVRTC()
	if err != nil {
		return nil, err
	}
	cc, err := dev.ComputeCapability()
	if err != nil {
		return nil, err
	}
	cubin, err := nv.Compile("moe_kernels.cu", kernelSource, cc)
	if err != nil {
		return nil, err
	}
	mod, err := dev.LoadModule(cubin)
	if err != nil {
		return nil, err
	}
	o := &Ops{dev: dev, stream: stream, mod: mod, fn: map[string]*cuda.Function{}, scratch: map[string]moe.Tensor{}, consts: map[string]deviceConst{}}
	for _, k := range kernels {
		if o.fn[k], err = mod.Function(k); err != nil {
			return nil, err
		}
	}
	if o.blas, err = cuda.NewBlas(stream); err != nil {
		return nil, err
	}
	o.Libraries = fmt.Sprintf("NVRTC %d.%d from %s, cuBLAS %d from %s, kernels for sm_%d", nv.Major, nv.Minor, nv.Path(), o.blas.Version, o.blas.Path, cc)
	return o, nil
}

// Name is "cuda:N".
func (o *Ops) Name() string { return fmt.Sprintf("cuda:%d", o.dev.Ordinal) }

// Sync waits for the stream.
func (o *Ops) Sync() error { return o.stream.Synchronize() }

// Alloc returns a zeroed rows×cols tensor in device memory.
func (o *Ops) Alloc(dt dtype.DType, rows, cols int) (moe.Tensor, error) {
	if !dt.Valid() || rows < 0 || cols < 0 {
		return moe.Tensor{}, fmt.Errorf("gpu: alloc %d×%d %v", rows, cols, dt)
	}
	n := rows * cols * dt.Size()
	p, err := o.dev.Alloc(n)
	if err != nil {
		return moe.Tensor{}, err
	}
	if err := o.stream.Memset(p, 0, n); err != nil {
		o.dev.Free(p)
		return moe.Tensor{}, err
	}
	return moe.Tensor{Buf: comm.DeviceBuffer(dt, p, rows*cols, o.dev.Ordinal), Rows: rows, Cols: cols}, nil
}

// Free releases a tensor's memory.
func (o *Ops) Free(t moe.Tensor) {
	if t.Buf.OnDevice() {
		o.dev.Free(t.Buf.Ptr())
	}
}

func kernelType(t dtype.DType) int {
	if t == dtype.BFloat16 {
		return 1
	}
	return 0
}

// threadsPerBlock is the block size of the element-wise kernels.
const threadsPerBlock = 256

// grid1D is the grid of a kernel with one thread per element (the kernels check i < n).
func grid1D(n int) (blocks [3]uint32, threads [3]uint32, err error) {
	b := (n + threadsPerBlock - 1) / threadsPerBlock
	if b > 1<<31-1 {
		return blocks, threads, fmt.Errorf("gpu: %d elements need %d blocks, more than a grid holds", n, b)
	}
	return [3]uint32{uint32(b), 1, 1}, [3]uint32{threadsPerBlock, 1, 1}, nil
}

// launch1D runs a kernel with one thread per element.
func (o *Ops) launch1D(name string, n int, args ...any) error {
	if n == 0 {
		return nil
	}
	blocks, threads, err := grid1D(n)
	if err != nil {
		return err
	}
	return o.fn[name].Launch(o.stream, blocks, threads, 0, args...)
}

// Fill sets every element from g (moe.Gen.At) on the device, rounded to t's dtype.
func (o *Ops) Fill(t moe.Tensor, g *moe.Gen) error {
	if t.DType() == dtype.Int32 {
		return fmt.Errorf("gpu: fill of an int32 tensor")
	}
	var experts uintptr
	if g.Experts != nil {
		ids := make([]int32, len(g.Experts))
		for i, e := range g.Experts {
			ids[i] = int32(e)
		}
		p, err := o.dev.Alloc(4 * len(ids))
		if err != nil {
			return err
		}
		defer o.dev.Free(p) // cuMemFree waits for the kernel that reads it
		if err := o.stream.CopyHtoD(p, unsafe.Slice((*byte)(unsafe.Pointer(&ids[0])), 4*len(ids))); err != nil {
			return err
		}
		experts = p
	}
	return o.launch1D("moe_fill", t.Rows*t.Cols, t.Buf.Ptr(), kernelType(t.DType()), t.Rows, t.Cols, g.Seed,
		uint32(g.A), uint32(g.B), g.BlockRows, g.SplitAt, experts, g.RowOffset, g.ColOffset, g.ValidRows, g.ValidCols, g.Scale)
}

// Upload copies host values into t, rounding to its dtype on the host.
func (o *Ops) Upload(t moe.Tensor, host []float32) error {
	if len(host) != t.Rows*t.Cols {
		return fmt.Errorf("gpu: upload of %d values into %v", len(host), t)
	}
	h := comm.NewHost(t.DType(), len(host))
	switch t.DType() {
	case dtype.Float32:
		copy(h.Float32s(), host)
	case dtype.BFloat16:
		for i, v := range host {
			h.BF16s()[i] = dtype.FromFloat32(v)
		}
	case dtype.Int32:
		for i, v := range host {
			h.Int32s()[i] = int32(v)
		}
	}
	if err := o.stream.CopyHtoD(t.Buf.Ptr(), h.Host()); err != nil {
		return err
	}
	return o.stream.Synchronize() // h is pageable Go memory: keep it alive until copied
}

// Download copies t into host values (waiting for the stream).
func (o *Ops) Download(t moe.Tensor, host []float32) error {
	if len(host) != t.Rows*t.Cols {
		return fmt.Errorf("gpu: download of %v into %d values", t, len(host))
	}
	h := comm.NewHost(t.DType(), len(host))
	if err := o.stream.CopyDtoH(h.Host(), t.Buf.Ptr()); err != nil {
		return err
	}
	if err := o.stream.Synchronize(); err != nil {
		return err
	}
	switch t.DType() {
	case dtype.Float32:
		copy(host, h.Float32s())
	case dtype.BFloat16:
		for i, v := range h.BF16s() {
			host[i] = v.Float32()
		}
	case dtype.Int32:
		for i, v := range h.Int32s() {
			host[i] = float32(v)
		}
	}
	return nil
}

// Copy copies src into dst (same shape and dtype).
func (o *Ops) Copy(dst, src moe.Tensor) error {
	if dst.Rows != src.Rows || dst.Cols != src.Cols || dst.DType() != src.DType() {
		return fmt.Errorf("gpu: copy of %v into %v", src, dst)
	}
	return o.stream.CopyDtoD(dst.Buf.Ptr(), src.Buf.Ptr(), dst.Buf.Bytes())
}

// Zero clears t.
func (o *Ops) Zero(t moe.Tensor) error { return o.stream.Memset(t.Buf.Ptr(), 0, t.Buf.Bytes()) }

// CopyCols copies the leading columns (§1.6 padding and truncation).
func (o *Ops) CopyCols(dst, src moe.Tensor) error {
	if dst.Rows != src.Rows || dst.DType() != src.DType() {
		return fmt.Errorf("gpu: copy columns of %v into %v", src, dst)
	}
	esz := dst.DType().Size()
	return o.launch1D("moe_copycols", dst.Rows*dst.Cols*esz, dst.Buf.Ptr(), src.Buf.Ptr(), dst.Rows, dst.Cols, src.Cols, esz)
}

// Linear sets out = x · wᵀ with float32 accumulation (cuBLAS).
func (o *Ops) Linear(x, w, out moe.Tensor) error {
	if x.Cols != w.Cols || out.Rows != x.Rows || out.Cols != w.Rows {
		return fmt.Errorf("gpu: linear %v · (%v)ᵀ into %v", x, w, out)
	}
	return o.blas.MatmulNT(x.Rows, w.Rows, x.Cols, 1, x.Buf.Ptr(), x.DType(), w.Buf.Ptr(), w.DType(), 0, out.Buf.Ptr(), out.DType())
}

// Logits is Linear into a float32 output.
func (o *Ops) Logits(x, w, out moe.Tensor) error {
	if out.DType() != dtype.Float32 {
		return fmt.Errorf("gpu: logits into %v: want float32", out)
	}
	return o.Linear(x, w, out)
}

// Axpby sets dst = a·dst + b·src.
func (o *Ops) Axpby(a float32, dst moe.Tensor, b float32, src moe.Tensor) error {
	if dst.Rows != src.Rows || dst.Cols != src.Cols || dst.DType() != src.DType() {
		return fmt.Errorf("gpu: axpby of %v into %v", src, dst)
	}
	n := dst.Rows * dst.Cols
	return o.launch1D("moe_axpby", n, dst.Buf.Ptr(), src.Buf.Ptr(), kernelType(dst.DType()), int64(n), a, b)
}

// MLP is the dense gated MLP: one GEMM into h [n, 2I], the gated activation, one GEMM
// out; h and the activation are in the layer's dtype, as on the CPU.
func (o *Ops) MLP(x moe.Tensor, w *moe.MLPWeights, act moe.Activation, out moe.Tensor) error {
	if x.Cols != w.H || out.Rows != x.Rows || out.Cols != w.H || w.W13.Rows != 2*w.I || w.W2.Rows != w.H || w.W2.Cols != w.I {
		return fmt.Errorf("gpu: mlp of %v with W13 %v and W2 %v into %v", x, w.W13, w.W2, out)
	}
	n := x.Rows
	if n == 0 {
		return nil
	}
	h, err := o.buffer("mlp.h", x.DType(), n, 2*w.I)
	if err != nil {
		return err
	}
	a, err := o.buffer("mlp.a", x.DType(), n, w.I)
	if err != nil {
		return err
	}
	if err := o.Linear(x, w.W13, h); err != nil {
		return err
	}
	if err := o.launch1D("moe_gated", n*w.I, h.Buf.Ptr(), a.Buf.Ptr(), kernelType(x.DType()), n, w.I, int(act)); err != nil {
		return err
	}
	return o.Linear(a, w.W2, out)
}

// Limits of the routing kernel (one thread per token, arrays in registers and local
// memory): DeepSeek-V3's 256 experts, top-8 and 8 groups fit with room to spare.
const (
	maxExperts = 512
	maxTopK    = 32
)

// Route runs moe/router's routing on the device: the same kind (FusedTopK, FusedTopKBias,
// GroupedTopK, with vLLM's fallbacks), scoring and tie rules, so the GPU picks the experts
// the CPU picks.
func (o *Ops) Route(cfg router.Config, logits, weights, ids moe.Tensor) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	k := cfg.TopK
	switch {
	case logits.DType() != dtype.Float32 || weights.DType() != dtype.Float32 || ids.DType() != dtype.Int32 ||
		logits.Cols != cfg.NumExperts || weights.Rows != logits.Rows || ids.Rows != logits.Rows || weights.Cols != k || ids.Cols != k:
		return fmt.Errorf("gpu: route %v into weights %v and ids %v (top-k %d)", logits, weights, ids, k)
	case cfg.NumExperts > maxExperts || k > maxTopK || cfg.NumExpertGroup > maxTopK:
		return fmt.Errorf("gpu: routing supports up to %d experts, top-k %d and %d groups, not %d, %d, %d",
			maxExperts, maxTopK, maxTopK, cfg.NumExperts, k, cfg.NumExpertGroup)
	}
	var bias uintptr
	if cfg.Bias != nil {
		b, err := o.constant("route.bias", dtype.Float32, cfg.Bias)
		if err != nil {
			return err
		}
		bias = b
	}
	grouped := 0
	if cfg.Kind() == router.GroupedTopK {
		grouped = 1
	}
	renorm := 0
	if cfg.Renormalize {
		renorm = 1
	}
	scale := float32(cfg.RoutedScalingFactor)
	if scale == 0 || !cfg.AppliesRoutedScale() {
		scale = 1
	}
	return o.launch1D("moe_route", logits.Rows, logits.Buf.Ptr(), weights.Buf.Ptr(), ids.Buf.Ptr(), logits.Rows, cfg.NumExperts, k,
		int(cfg.EffectiveScoring()), renorm, scale, bias, grouped, cfg.NumExpertGroup, cfg.TopKGroup)
}

// perExpert runs one GEMM per local expert that has rows: rows [offsets[l], +counts[l]) of
// in times the weight block l (blockRows rows of weights) into the same rows of out.
func (o *Ops) perExpert(counts, offsets []float32, in, weights moe.Tensor, blockRows int, out moe.Tensor) error {
	for l, c := range counts {
		rows, off := int(c), int(offsets[l])
		if rows == 0 {
			continue
		}
		if err := o.Linear(in.RowSlice(off, rows), weights.RowSlice(l*blockRows, blockRows), out.RowSlice(off, rows)); err != nil {
			return err
		}
	}
	return nil
}

// constant keeps a small array of type dt on the device under name (values given as exact
// float32s), uploading it again only when its values change: the router's bias and the
// expert map are the same on every call.
func (o *Ops) constant(name string, dt dtype.DType, v []float32) (uintptr, error) {
	if c, ok := o.consts[name]; ok && slicesEqual(c.host, v) {
		return c.dev.Buf.Ptr(), nil
	}
	t, err := o.buffer(name, dt, 1, len(v))
	if err != nil {
		return 0, err
	}
	if err := o.Upload(t, v); err != nil {
		return 0, err
	}
	o.consts[name] = deviceConst{host: append([]float32(nil), v...), dev: t}
	return t.Buf.Ptr(), nil
}

type deviceConst struct {
	host []float32
	dev  moe.Tensor
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// buffer is a scratch tensor of at least rows×cols elements, reused across calls.
func (o *Ops) buffer(name string, dt dtype.DType, rows, cols int) (moe.Tensor, error) {
	t, ok := o.scratch[name]
	if !ok || t.DType() != dt || t.Buf.Len() < rows*cols {
		if ok {
			o.Free(t)
		}
		var err error
		if t, err = o.Alloc(dt, rows, cols); err != nil {
			return moe.Tensor{}, err
		}
		o.scratch[name] = t
	}
	return moe.Tensor{Buf: t.Buf.Slice(0, rows*cols), Rows: rows, Cols: cols}, nil
}

// Close frees the scratch tensors, the cuBLAS handle and the kernels.
func (o *Ops) Close() error {
	for _, t := range o.scratch {
		o.Free(t)
	}
	o.scratch = map[string]moe.Tensor{}
	err := o.blas.Destroy()
	if uerr := o.mod.Unload(); err == nil {
		err = uerr
	}
	return err
}

// Experts runs the local experts over the routed rows: bucket the slots by local expert on
// the device, read the per-expert counts back (the one host synchronisation of a forward
// pass: cuBLAS takes each GEMM's row count from the host; the decode path's batched GEMM of
// the performance work removes it), gather the rows, two GEMMs per expert that has rows,
// the gated activation, and the weighted sum over top-k in float32.
func (o *Ops) Experts(x, weights, ids moe.Tensor, w *moe.ExpertWeights, expertMap []int32, act moe.Activation, onInput bool, out moe.Tensor) error {
	n, k, hd, inter := x.Rows, weights.Cols, w.H, w.I
	switch {
	case x.Cols != hd || out.Rows != n || out.Cols != hd || x.DType() != out.DType():
		return fmt.Errorf("gpu: experts on %v into %v with hidden %d", x, out, hd)
	case weights.Rows != n || ids.Rows != n || ids.Cols != k || weights.DType() != dtype.Float32 || ids.DType() != dtype.Int32:
		return fmt.Errorf("gpu: experts with weights %v and ids %v for %d rows", weights, ids, n)
	case w.W13.Rows != w.Local*2*inter || w.W13.Cols != hd || w.W2.Rows != w.Local*hd || w.W2.Cols != inter:
		return fmt.Errorf("gpu: expert weights W13 %v, W2 %v for %d experts of %d×%d", w.W13, w.W2, w.Local, inter, hd)
	case onInput && k != 1:
		return fmt.Errorf("gpu: router weight on the input needs top-k 1, not %d", k)
	}
	if n == 0 {
		return nil
	}
	slots := n * k
	dt := x.DType()
	var emap uintptr
	if expertMap != nil {
		m := make([]float32, len(expertMap))
		for i, v := range expertMap {
			m[i] = float32(v)
		}
		p, err := o.constant("experts.map", dtype.Int32, m)
		if err != nil {
			return err
		}
		emap = p
	}
	counts, err := o.buffer("experts.counts", dtype.Int32, 1, w.Local)
	if err != nil {
		return err
	}
	perm, err := o.buffer("experts.perm", dtype.Int32, 1, slots)
	if err != nil {
		return err
	}
	pos, err := o.buffer("experts.pos", dtype.Int32, 1, slots)
	if err != nil {
		return err
	}
	if err := o.Zero(counts); err != nil {
		return err
	}
	if err := o.launch1D("moe_expert_count", slots, ids.Buf.Ptr(), emap, slots, counts.Buf.Ptr()); err != nil {
		return err
	}
	hc := make([]float32, w.Local)
	if err := o.Download(counts, hc); err != nil {
		return err
	}
	offsets := make([]float32, w.Local)
	total := 0
	for l, c := range hc {
		offsets[l] = float32(total)
		total += int(c)
	}
	if err := o.Upload(counts, offsets); err != nil { // counts becomes the cursor
		return err
	}
	if err := o.launch1D("moe_expert_scatter", slots, ids.Buf.Ptr(), emap, slots, counts.Buf.Ptr(), perm.Buf.Ptr(), pos.Buf.Ptr()); err != nil {
		return err
	}
	if total == 0 {
		return o.Zero(out)
	}
	xg, err := o.buffer("experts.x", dt, total, hd)
	if err != nil {
		return err
	}
	h, err := o.buffer("experts.h", dt, total, 2*inter)
	if err != nil {
		return err
	}
	a, err := o.buffer("experts.a", dt, total, inter)
	if err != nil {
		return err
	}
	y, err := o.buffer("experts.y", dt, total, hd)
	if err != nil {
		return err
	}
	on := 0
	if onInput {
		on = 1
	}
	if err := o.launch1D("moe_gather", total*hd, x.Buf.Ptr(), perm.Buf.Ptr(), weights.Buf.Ptr(), on, k, hd, total, kernelType(dt), xg.Buf.Ptr()); err != nil {
		return err
	}
	if err := o.perExpert(hc, offsets, xg, w.W13, 2*inter, h); err != nil {
		return err
	}
	if err := o.launch1D("moe_gated", total*inter, h.Buf.Ptr(), a.Buf.Ptr(), kernelType(dt), total, inter, int(act)); err != nil {
		return err
	}
	if err := o.perExpert(hc, offsets, a, w.W2, hd, y); err != nil {
		return err
	}
	return o.launch1D("moe_combine", n*hd, y.Buf.Ptr(), pos.Buf.Ptr(), weights.Buf.Ptr(), on, n, k, hd, kernelType(dt), out.Buf.Ptr())
}
